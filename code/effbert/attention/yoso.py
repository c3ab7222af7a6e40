"""YOSO attention (Zeng et al., "You Only Sample (Almost) Once", ICML 2021): Bernoulli sampling by LSH.

With q, k L2-normalised, a hash h built from tau random hyperplanes makes the collision indicator
B_ij = 1[h(q_i) = h(k_j)] a Bernoulli variable of mean

    E[B_ij] = (1 - arccos(q_i . k_j) / pi) ** tau                     (the YOSO kernel)

so E[B] V is estimated by averaging m hashes: (1/m) sum_f B_f V. Each sample costs O(n): the values
of the keys are summed into a table of 2^tau buckets and every query reads its own bucket. The output
is L2-normalised per head (the authors' code and HuggingFace's port both do this; it stands in for the
softmax row normaliser). Variants:
    YOSO-E  the expectation E[B] V computed exactly, O(n^2), differentiated by autograd;
    YOSO-C  plus a depthwise convolution over the sequence on V (as Nystromformer), added after the norm.

Hashing, as in the authors' code (yoso_v1): "gaussian" bit t of hash f is sign(x . r_{f,t}) with r ~ N(0, I);
"fast" replaces the Gaussian matrix by H D3 H D2 H D1 (H a Hadamard matrix, D random +-1 diagonals), whose
size-d output gives d // tau hash codes per draw ("part"). Code = sum_t bit_t * 2^t.

The sampled forward has zero gradient w.r.t. q and k almost everywhere, so YOSO defines its own backward
(see LshCumulation). Padded keys add nothing to any bucket and get no gradient; padded queries output zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.conv_skip import ConvSkip
from effbert.config import ModelConfig

# the largest intermediate (elements) a bucket table step may build; hashes and weight columns are
# processed in chunks below it, so memory stays O(n) in the sequence length at any batch size
_CHUNK_ELEMENTS = 1 << 26


# ---- hashing: integer codes in [0, 2^tau) for queries and keys, from one shared draw ----

def _to_codes(positive: torch.Tensor) -> torch.Tensor:
    """(..., m, tau) bools -> (..., m) int64 codes, bit t worth 2^t."""
    weights = 1 << torch.arange(positive.shape[-1], device=positive.device)
    return (positive.long() * weights).sum(-1)


def gaussian_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-hyperplane codes (BH, N, m) for q and k (BH, N, D): one N(0, I) matrix per batch-head row."""
    bh, _, d = q.shape
    planes = torch.randn(bh, d, num_hashes * bits, device=q.device, dtype=q.dtype)
    return tuple(_to_codes((x @ planes).unflatten(-1, (num_hashes, bits)) > 0) for x in (q, k))


def hadamard(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sylvester's unnormalised +-1 Hadamard matrix; size a power of two."""
    h = torch.ones(1, 1, device=device, dtype=dtype)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def fast_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (BH, N, m) from sign(H D3 H D2 H D1 x), x zero-padded to a power of two >= max(D, tau).

    The authors' kernel needs D to be a power of two; zero-padding keeps every angle, so any D works here.
    Scaling by H is irrelevant to the signs, so H is left unnormalised.
    """
    bh, _, d = q.shape
    size = 1 << (max(d, bits) - 1).bit_length()
    per_part = size // bits
    parts = -(-num_hashes // per_part)
    signs = torch.randint(0, 2, (bh, 3, parts, 1, size), device=q.device).to(q.dtype) * 2 - 1
    h = hadamard(size, q.device, q.dtype)
    codes = []
    for x in (q, k):
        y = F.pad(x, (0, size - d))[:, None]  # (BH, 1, N, size)
        for r in range(3):
            y = (y * signs[:, r]) @ h  # (BH, parts, N, size)
        y = y[..., : per_part * bits].unflatten(-1, (per_part, bits))  # (BH, parts, N, per_part, tau)
        y = y.transpose(1, 2).flatten(2, 3)[:, :, :num_hashes]  # (BH, N, m, tau)
        codes.append(_to_codes(y > 0))
    return codes[0], codes[1]


# ---- bucket sums: the O(n) cumulation that every pass is made of ----

def cumulate(src_codes: torch.Tensor, dst_codes: torch.Tensor, values: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """out_i = (1/m) sum_f sum_{j: src_codes[j, f] = dst_codes[i, f]} values_j, i.e. (1/m) sum_f B_f values.

    src_codes (BH, Ns, m), dst_codes (BH, Nd, m), values (BH, Ns, C) -> (BH, Nd, C). Each hash gets its own
    table of num_buckets rows: values are index_add-ed at their code and read back at the destination's code.
    """
    return _bucket_sums(src_codes, dst_codes, values, num_buckets) / src_codes.shape[-1]


def _bucket_sums(src_codes: torch.Tensor, dst_codes: torch.Tensor, values: torch.Tensor, num_buckets: int):
    bh, n_src, m = src_codes.shape
    n_dst, c = dst_codes.shape[1], values.shape[-1]
    step = max(1, min(m, _CHUNK_ELEMENTS // max(1, bh * (num_buckets + n_src + n_dst) * c)))
    row = torch.arange(bh, device=values.device)[:, None, None]
    out = values.new_zeros(bh, n_dst, c)
    for start in range(0, m, step):
        h = min(step, m - start)
        # table row of (batch-head b, hash f, bucket c): (b * h + f) * num_buckets + c
        base = (row * h + torch.arange(h, device=values.device)) * num_buckets  # (BH, 1, h)
        src = (src_codes[:, :, start:start + h] + base).flatten()  # ordered (b, j, f)
        dst = (dst_codes[:, :, start:start + h] + base).flatten()
        table = values.new_zeros(bh * h * num_buckets, c)
        table.index_add_(0, src, (values.repeat_interleave(h, 1) if h > 1 else values).flatten(0, 1))
        got = table[dst].view(bh, n_dst, h, c)
        out += got.sum(2) if h > 1 else got[:, :, 0]
    return out


def weighted_cumulate(src_codes: torch.Tensor, dst_codes: torch.Tensor, src_weight: torch.Tensor,
                      src_values: torch.Tensor, dst_weight: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """out_i = (1/m) sum_f sum_{j colliding} (dst_weight_i . src_weight_j) src_values_j, i.e. ((W_d W_s^T) * B) X_s.

    The dot product is split over its A columns: column a sums src_weight_j[a] * src_values_j into the tables
    and scales what a destination reads by dst_weight_i[a] (the authors' lsh_weighted_cumulation does the same).
    This costs O(m n A D) per batch-head row against the forward's O(m n D), as in the authors' kernel.
    """
    bh, n_src, a_dim = src_weight.shape
    n_dst, d = dst_codes.shape[1], src_values.shape[-1]
    step = max(1, min(a_dim, _CHUNK_ELEMENTS // max(1, bh * (num_buckets + n_src + n_dst) * d)))
    out = src_values.new_zeros(bh, n_dst, 1, d)
    for a in range(0, a_dim, step):
        cols = slice(a, a + step)
        products = (src_weight[..., cols, None] * src_values[..., None, :]).flatten(2)  # (BH, Ns, step * D)
        got = _bucket_sums(src_codes, dst_codes, products, num_buckets).unflatten(-1, (-1, d))  # (BH, Nd, step, D)
        out += dst_weight[..., None, cols] @ got
    return out[:, :, 0] / src_codes.shape[-1]


class LshCumulation(torch.autograd.Function):
    """Y = B V with B = (1/m) sum_f B_f, the sampled collision matrix (masked), and the paper's backward.

    Backward: the paper's backward pass (Zeng et al. 2021, derived in Sec. 3; its equation number was not
    checked against the PDF), as the authors' yoso_v1 LSHCumulation.backward (n2_backward=False) and
    HuggingFace's YosoLSHCumulation (lsh_backward=True) compute it. With G = dL/dY:

        dL/dV = B^T G
        dL/dQ = ((G V^T) * (tau/2) B) K
        dL/dK = ((G V^T) * (tau/2) B)^T Q

    The exact gradient of the expectation, d/dx (1 - arccos(x)/pi)^tau = tau (1 - arccos(x)/pi)^(tau-1) /
    (pi sqrt(1 - x^2)), is unbounded as x -> +-1 and is no collision probability; it is replaced by the lower
    bound (tau/2)(1 - arccos(x)/pi)^tau = (tau/2) E[B], which the same hash draws estimate by B. So dL/dQ and
    dL/dK are O(n) LSH estimates of ((G V^T) * (tau/2) E[B]) K, not the autograd gradient of YOSO-E.
    Q, K here are the L2-normalised inputs; autograd carries the gradient through the normalisation.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_codes: torch.Tensor,
                k_codes: torch.Tensor, q_mask: torch.Tensor, k_mask: torch.Tensor, bits: int) -> torch.Tensor:
        ctx.save_for_backward(q, k, v, q_codes, k_codes, q_mask, k_mask)
        ctx.bits = bits
        return cumulate(k_codes, q_codes, v * k_mask, 1 << bits) * q_mask  # (BH, Nq, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, q_codes, k_codes, q_mask, k_mask = ctx.saved_tensors
        buckets, half_tau = 1 << ctx.bits, ctx.bits / 2
        grad = grad * q_mask
        v_real = v * k_mask
        grad_q = grad_k = grad_v = None
        if ctx.needs_input_grad[2]:
            grad_v = cumulate(q_codes, k_codes, grad, buckets) * k_mask  # B^T G
        if ctx.needs_input_grad[0]:
            grad_q = half_tau * weighted_cumulate(k_codes, q_codes, v_real, k, grad, buckets) * q_mask
        if ctx.needs_input_grad[1]:
            grad_k = half_tau * weighted_cumulate(q_codes, k_codes, grad, q, v_real, buckets) * k_mask
        return grad_q, grad_k, grad_v, None, None, None, None, None


def expected_cumulation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: torch.Tensor,
                        k_mask: torch.Tensor, bits: int) -> torch.Tensor:
    """YOSO-E: E[B] V with E[B]_ij = (1 - arccos(q_i . k_j)/pi)^tau, exactly, O(n^2); autograd differentiates it.

    The cosine is clamped a hair inside [-1, 1]: rounding can push unit vectors' dot past 1 (arccos = NaN),
    and arccos' derivative is infinite at +-1.
    """
    eps = 8 * torch.finfo(q.dtype).eps
    cos = (q @ k.transpose(-1, -2)).clamp(-1 + eps, 1 - eps)
    weights = (1 - torch.arccos(cos) / math.pi) ** bits * k_mask.transpose(-1, -2)  # (BH, Nq, Nk)
    return (weights @ v) * q_mask


class YosoAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.bits = opts.hash_bits
        self.num_hashes = opts.num_hashes
        self.expectation = opts.expectation
        self.hash = fast_hash if opts.fast_hash else gaussian_hash
        self.conv = ConvSkip(cfg.num_heads, opts.conv_kernel) if opts.conv_kernel else None  # YOSO-C

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(v.dtype, torch.float32)  # bf16 in, float32 math (float64 stays float64)
        with torch.autocast(q.device.type, enabled=False):
            out = self._yoso(q.to(dtype), k.to(dtype), v.to(dtype), mask).to(v.dtype)
        if self.conv is not None:
            out = out + self.conv(v, mask)
        return out

    def _yoso(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        # the collision probability is a function of the angle: hash and weigh unit vectors
        q = F.normalize(q, dim=-1).reshape(b * h, n, d)
        k = F.normalize(k, dim=-1).reshape(b * h, n, d)
        v = v.reshape(b * h, n, d)
        real = mask[:, None, :, None].expand(b, h, n, 1).reshape(b * h, n, 1).to(q.dtype)
        if self.expectation:
            out = expected_cumulation(q, k, v, real, real, self.bits)
        else:
            with torch.no_grad():
                q_codes, k_codes = self.hash(q, k, self.num_hashes, self.bits)
            out = LshCumulation.apply(q, k, v, q_codes, k_codes, real, real, self.bits)
        out = F.normalize(out, dim=-1)  # the output normalisation of the authors' code
        return out.view(b, h, n, d)

    def extra_repr(self) -> str:
        kind = "expectation" if self.expectation else f"num_hashes={self.num_hashes}, hash={self.hash.__name__}"
        return f"hash_bits={self.bits}, {kind}, conv={self.conv is not None}"
