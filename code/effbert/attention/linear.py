"""Linear attention (Katharopoulos et al., "Transformers are RNNs", ICML 2020), and the chunked kernel
attention it shares with the Performer.

softmax's similarity exp(q.k) becomes a kernel phi(q).phi(k) with positive features, and associativity
turns O(n^2) into O(n):
    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))      eq. (6) of the paper
    phi(x) = elu(x) + 1                                                             eq. (7)
No 1/sqrt(d) scaling, as in the paper. Padded keys get zero features, so they enter neither the numerator
nor the normaliser; a mask of None skips every masking step and equals an all-True mask.

`kernel_attention` sums C = phi(K)^T V and z = phi(K)^T 1 over key chunks, then forms phi(Q) C / phi(Q) z
over query chunks, so only chunk x M features exist at a time; its backward recomputes them rather than
storing them, so memory is O(N D + M D), not O(N M) (equations at _KernelAttention). Precision: each chunk
is upcast to float32 (float64 stays) with autocast off inside; output and gradients return in the inputs'
dtypes.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from effbert.config import ModelConfig

CHUNK = 1024  # tokens per chunk: chunk x M features at a time instead of N x M


class FeatureMap:
    """Maps (chunks of) queries and keys (B, H, c, d) to features (B, H, c, M), and back-propagates.

    `log_domain`: queries()/keys() return exponents, which kernel_attention stabilises and exponentiates.
    The vjps get the chunk x, its features phi (after that exponentiation) and dL/d(map output); they
    return dL/dx. queries()/keys() return a new tensor each call, and the vjps may overwrite `grad`: both
    are kernel_attention's own temporaries, reused in place to spare chunk x M allocations.
    """

    log_domain = False

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self.queries(x)

    def query_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def key_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return self.query_vjp(x, phi, grad)


class EluFeatures(FeatureMap):
    """phi(x) = elu(x) + 1, eq. (7): x + 1 above zero, exp(x) below, so phi'(x) = 1 or phi(x)."""

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x).add_(1)

    def query_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.mul_(phi.clamp(max=1))  # phi > 1 exactly where x > 0


def _query_features(fmap: FeatureMap, q: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    f = fmap.queries(q)
    if fmap.log_domain:  # the keys' per-feature constant moves here; then a per-query one, which cancels in num / den
        f = f.add_(shift)
        f = f.sub_(f.amax(-1, keepdim=True)).exp_()
    return f


def _key_exponents(fmap: FeatureMap, k: torch.Tensor, key_ok: torch.Tensor | None) -> torch.Tensor:
    """The map's output for one key chunk, padded keys set to exp's -inf or to the features' 0."""
    f = fmap.keys(k)
    if key_ok is None:
        return f
    return f.masked_fill_(~key_ok, -torch.inf if fmap.log_domain else 0.0)


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """[x, 1]: one matmul with phi then gives the numerator and the normaliser together."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)


class _KernelAttention(torch.autograd.Function):
    """The chunked forward and the recomputing backward of kernel_attention.

    With F = phi(Q), P = phi(K) (N x M, padded rows of P zero):
        C = P^T V (M x D),  z = P^T 1 (M),  num = F C,  den = F z,  out = num / den.
    The forward walks the keys in chunks to accumulate C and z, then the queries in chunks to produce out.
    Autograd would keep F and P (O(N M) each); the backward recomputes them chunk by chunk from q and k and
    keeps only q, k, v, out, den, C, z (O(N D + M D)). Given G = dL/dout, with g_i = G_i . out_i:
        dF_i = (G_i C^T - g_i z^T) / den_i            (through num and through den)
        dC   = sum_i F_i^T G_i / den_i,   dz = -sum_i F_i g_i / den_i         (a pass over query chunks)
        dP_j = dC v_j + dz,   dV_j = dC^T P_j  (P_j = 0 for padded keys)        (a pass over key chunks)
    and dq, dk follow through the feature map (`FeatureMap.query_vjp` / `key_vjp`).

    A log-domain feature map returns exponents e instead of features, stabilised by detached constants that
    cancel exactly, so they carry no gradient (dE = dP * P). Keys: per feature m, c_m = the max of e_jm over
    the real keys (kept online: a key chunk that raises it rescales row m of [C, z] by exp(c_old - c_new)), so
    P_jm = exp(e_jm - c_m) <= 1 with a 1 in every column. Queries: exp(e_im + c_m - r_i), where r_i is the max
    over m of e_im + c_m: exp(e_im) exp(e_jm) = exp(e_im + c_m) exp(e_jm - c_m), and r_i cancels in num / den.
    Then den_i >= 1 for every query with a real key (its top feature m has exp(0) times z_m >= 1): one shared
    constant over all features could leave a query whose features only far-below-the-max keys share with a
    denominator that underflows to 0 (its output lost, its gradient 1/0) at large logits in float32.

    Precision: features, exponents and their max, C, z, the matmuls forming them and the division run in
    float32 at least, autocast off so that it cannot downcast them again; the upcast copies are
    chunk-sized, so this costs memory per chunk, not per sequence. The context is kept as [C, z]
    (M x (D + 1)), so that phi [C, z] = [num, den] and dF = [dnum, dden] [C, z]^T are one matmul each.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, fmap, chunk):
        wide = torch.promote_types(q.dtype, torch.float32)
        b, h, n, d_v = v.shape
        with torch.autocast(q.device.type, enabled=False):  # our dtypes are chosen; autocast would undo them
            context = shift = None
            for start in range(0, n, chunk):  # keys: accumulate [C, z]
                part = slice(start, start + chunk)
                key_ok = None if mask is None else mask[:, None, part, None]
                p = _key_exponents(fmap, k[:, :, part].to(wide), key_ok)
                if fmap.log_domain:  # online max per feature: a chunk that raises it rescales what was summed
                    if shift is None:  # a finite start: exp(start - c) is 0, or 1 while no key was real (C = 0)
                        shift = torch.full((b, h, 1, p.shape[-1]), torch.finfo(wide).min, dtype=wide, device=q.device)
                    new_shift = torch.maximum(shift, p.amax(-2, keepdim=True))  # (B, H, 1, M)
                    if context is not None:
                        context.mul_(torch.exp(shift - new_shift).transpose(-1, -2))  # row m by its own factor
                    shift = new_shift
                    p = p.sub_(shift).exp_()  # padded keys: exp(-inf) = 0
                chunk_context = p.transpose(-1, -2) @ _with_ones(v[:, :, part].to(wide))  # (B, H, M, D + 1)
                context = chunk_context if context is None else context.add_(chunk_context)
            out = torch.empty(b, h, n, d_v, dtype=wide, device=q.device)
            den = torch.empty(b, h, n, 1, dtype=wide, device=q.device)
            for start in range(0, n, chunk):  # queries: [num, den] = phi [C, z]
                part = slice(start, start + chunk)
                num_den = _query_features(fmap, q[:, :, part].to(wide), shift) @ context
                den[:, :, part] = num_den[..., -1:]
                # a row with no real key at all (an all-padding sequence) gets 0 rather than 0/0
                torch.div(num_den[..., :-1], num_den[..., -1:].clamp(min=torch.finfo(wide).tiny), out=out[:, :, part])
        ctx.save_for_backward(q, k, v, mask, out, den, context, shift)
        ctx.fmap, ctx.chunk = fmap, chunk
        return out.to(v.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, mask, out, den, context, shift = ctx.saved_tensors
        fmap, chunk, wide, n = ctx.fmap, ctx.chunk, out.dtype, q.shape[2]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        with torch.autocast(q.device.type, enabled=False):
            grad_context = torch.zeros_like(context)  # [dC, dz]
            for start in range(0, n, chunk):  # queries: dF = [dnum, dden] [C, z]^T, and the sums [dC, dz]
                part = slice(start, start + chunk)
                q_c = q[:, :, part].to(wide)
                phi = _query_features(fmap, q_c, shift)
                den_c = den[:, :, part]
                # where den = 0 (no real key) out was clamped to 0: no gradient flows
                inv_den = torch.where(den_c > 0, 1 / den_c, torch.zeros_like(den_c))
                grad_num = grad_out[:, :, part].to(wide) * inv_den  # (B, H, c, D)
                grad_den = -(grad_num * out[:, :, part]).sum(-1, keepdim=True)  # (B, H, c, 1)
                grad_num_den = torch.cat([grad_num, grad_den], -1)
                grad_context += phi.transpose(-1, -2) @ grad_num_den
                grad_f = grad_num_den @ context.transpose(-1, -2)
                if fmap.log_domain:  # through exp; the stabiliser is a detached constant
                    grad_f.mul_(phi)
                grad_q[:, :, part] = fmap.query_vjp(q_c, phi, grad_f)
            for start in range(0, n, chunk):  # keys: dP = [v, 1] [dC, dz]^T, dV = P dC
                part = slice(start, start + chunk)
                key_ok = None if mask is None else mask[:, None, part, None]
                k_c = k[:, :, part].to(wide)
                phi = _key_exponents(fmap, k_c, key_ok)
                if fmap.log_domain:
                    phi = phi.sub_(shift).exp_()
                grad_v[:, :, part] = phi @ grad_context[..., :-1]
                grad_f = _with_ones(v[:, :, part].to(wide)) @ grad_context.transpose(-1, -2)
                if fmap.log_domain:
                    grad_f.mul_(phi)  # padded keys: phi = 0
                elif key_ok is not None:
                    grad_f.masked_fill_(~key_ok, 0.0)
                grad_k[:, :, part] = fmap.key_vjp(k_c, phi, grad_f)
        return grad_q, grad_k, grad_v, None, None, None


def kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     fmap: FeatureMap, chunk: int = CHUNK) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) row-normalised by phi(Q) (phi(K)^T 1): eq. (6), also the Performer's D^-1 A V.

    q, k (B, H, N, d), v (B, H, N, D), mask (B, N) bool (True = real key) or None; returns (B, H, N, D) in
    v's dtype. Features are computed `chunk` tokens at a time and recomputed in the backward.
    """
    return _KernelAttention.apply(q, k, v, mask, fmap, chunk)


class LinearAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.chunk = CHUNK

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return kernel_attention(q, k, v, mask, EluFeatures(), self.chunk)
