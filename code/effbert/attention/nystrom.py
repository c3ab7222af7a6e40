"""Nystrom attention (Xiong et al., "Nystromformer", AAAI 2021).

softmax(Q K^T / sqrt(d)) V  ~=  F A^+ B V   with landmarks Q~, K~ (segment means of Q and K):
    F = softmax(Q K~^T / sqrt(d))    (n x m)     eq. (14) of the paper
    A = softmax(Q~ K~^T / sqrt(d))   (m x m), A^+ by the iterative Moore-Penrose inverse, eq. (16)
    B = softmax(Q~ K^T / sqrt(d))    (m x n)

Padding: landmarks average real tokens only, padded keys get no weight, and a sequence shorter than m
leaves some landmarks empty. Empty landmarks are masked out of F and given identity rows in A, so A stays
block-diagonal [[A_real, 0], [0, I]] through every pseudoinverse iteration and they contribute nothing.

Computed as two fused attentions, never an n x m matrix: B V = SDPA(Q~, K, V) and F W = SDPA(Q, K~, W)
with W = A^+ (B V), so memory is O(n (m + d)) and a GPU runs both as FlashAttention-style kernels in the
autocast dtype. A and its pseudoinverse (m x m) are float32: the iteration is unstable in half precision.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.conv_skip import ConvSkip
from effbert.attention.masks import full_mask
from effbert.config import ModelConfig


def segment_means_weights(mask: torch.Tensor, num_landmarks: int,
                          dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaging weights (B, m, N) in `dtype` that turn real tokens into m segment-means landmarks, and which are
    non-empty.

    For n real tokens, the first m - (n mod m) segments hold floor(n/m) tokens and the rest one more (the
    authors' extension to lengths not divisible by m). With n < m the last n segments hold one token each.
    """
    m = num_landmarks
    n = mask.sum(-1, keepdim=True)  # (B, 1)
    size, longer = n // m, n % m
    boundary = (m - longer) * size  # tokens in the shorter segments
    rank = mask.long().cumsum(-1) - 1  # position among the real tokens
    segment = torch.where(
        rank < boundary,
        rank // size.clamp(min=1),
        (m - longer) + (rank - boundary) // (size + 1),
    )
    segment = segment.clamp(0, m - 1)
    onehot = F.one_hot(segment, m).to(dtype) * mask[..., None]  # (B, N, m)
    counts = onehot.sum(1)  # (B, m)
    weights = (onehot / counts.clamp(min=1)[:, None, :]).transpose(1, 2)  # (B, m, N)
    return weights, counts > 0


def iterative_pinv(a: torch.Tensor, iterations: int, per_head_init: bool) -> torch.Tensor:
    """Moore-Penrose inverse of a batch of m x m matrices by the paper's third-order iteration (eq. 16).

    Z0 = A^T / (||A||_1 ||A||_inf). The paper's code takes both norms over the whole batch ("original");
    the authors later recommended the per-(batch, head) norms, which start closer and converge faster.
    """
    col = a.abs().sum(-2).amax(-1)  # ||A||_1 per matrix
    row = a.abs().sum(-1).amax(-1)  # ||A||_inf per matrix
    scale = col * row if per_head_init else col.amax() * row.amax()
    z = a.transpose(-1, -2) / scale[..., None, None] if per_head_init else a.transpose(-1, -2) / scale
    shape, m = a.shape, a.shape[-1]
    a, z = a.reshape(-1, m, m), z.reshape(-1, m, m)  # one batch of matrices for bmm
    if a.is_cuda and a.dtype == torch.float32:  # one fused launch each way instead of ~130 small ones
        from effbert.attention import nystrom_pinv_triton as fused  # lazily: CPU installs may lack Triton

        if fused.available(a.device) and fused.supported(m):
            return fused.FusedPinv.apply(a, z, iterations).view(shape)
    eyes = torch.eye(m, device=a.device, dtype=a.dtype) * torch.tensor([7, 15, 13], device=a.device,
                                                                       dtype=a.dtype)[:, None, None]
    for _ in range(iterations):
        z = PinvStep.apply(a, z, eyes)
    return z.view(shape)


@torch.no_grad()
def pinv_residual(a: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far the iteration's Z is from inverting A: R = I - A Z for each m x m matrix of (..., m, m).

    "spectral" is ||R||_2 (the largest singular value): eq. (16) converges from Z when it is below 1, and it
    is 1 at best for a singular A. "rms" is ||R||_F / sqrt(m), the root mean square of R's singular values.
    A matrix with a non-finite entry gets NaN for both (the SVD would fail on it).
    """
    eye = torch.eye(a.shape[-1], device=a.device, dtype=torch.float32)
    r = eye - a.float() @ z.float()
    finite = r.isfinite().all(-1).all(-1)
    r = torch.where(finite[..., None, None], r, 0.0)
    nan = torch.tensor(float("nan"), device=r.device)
    return {"spectral": torch.where(finite, torch.linalg.matrix_norm(r, ord=2), nan),
            "rms": torch.where(finite, torch.linalg.matrix_norm(r) / math.sqrt(a.shape[-1]), nan)}


class PinvStep(torch.autograd.Function):
    """One step of eq. (16) on (batch, m, m) matrices, Z' = Z T3 / 4 with P = A Z, T1 = 7I - P,
    T2 = 15I - P T1, T3 = 13I - P T2, keeping only A and Z for the backward: the products are recomputed
    there, which spares 4 * iterations (B, H, m, m) tensors of activation memory per layer (about 2 GB in
    BERT-base at batch 32, m = 64). With G = dL/dZ', by the chain rule through each product
    (dT3 = Z^T G / 4, dT2 = -P^T dT3, dT1 = -P^T dT2), and U = P^T dT3, W = P^T U:

        dP = -dT3 T2^T + U T1^T - W,     dA = dP Z^T,     dZ = G T3^T / 4 + A^T dP
    """

    @staticmethod
    def _products(a: torch.Tensor, z: torch.Tensor, eyes: torch.Tensor):
        """P, T1, T2, T3; eyes = (7I, 15I, 13I), made once for all the steps."""
        p = torch.bmm(a, z)
        t1 = eyes[0] - p
        t2 = torch.baddbmm(eyes[1], p, t1, alpha=-1)
        return p, t1, t2, torch.baddbmm(eyes[2], p, t2, alpha=-1)

    @staticmethod
    def forward(ctx, a: torch.Tensor, z: torch.Tensor, eyes: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, z, eyes)
        return torch.bmm(z, PinvStep._products(a, z, eyes)[3]).mul_(0.25)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, z, eyes = ctx.saved_tensors
        p, t1, t2, t3 = PinvStep._products(a, z, eyes)
        d_t3 = torch.bmm(z.mT, grad).mul_(0.25)
        u = torch.bmm(p.mT, d_t3)
        d_p = torch.baddbmm(torch.bmm(p.mT, u).neg_(), u, t1.mT)
        d_p = torch.baddbmm(d_p, d_t3, t2.mT, alpha=-1)
        grad_a = torch.bmm(d_p, z.mT) if ctx.needs_input_grad[0] else None
        grad_z = torch.baddbmm(torch.bmm(a.mT, d_p), grad, t3.mT, alpha=0.25)
        return grad_a, grad_z, None


class WithSegmentMeans(torch.autograd.Function):
    """x -> (x, means of m equal segments of x along the sequence), for a sequence of n = m * size tokens.

    The point is memory: autograd would hand x two gradients, the attention's and the means' (an n x d
    tensor that repeats each landmark's gradient size times), and add them out of place, two n x d
    temporaries at the peak of the backward. Here the landmarks' share is added into the attention's
    gradient in place. That gradient comes only from the one SDPA call that uses the returned x, a fresh
    tensor that nothing else holds.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: int):
        ctx.m, ctx.n = m, x.shape[-2]
        return x.view_as(x), x.unflatten(-2, (m, x.shape[-2] // m)).mean(-2)

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor | None, grad_means: torch.Tensor | None):
        if grad_x is None:
            grad_x = grad_means.new_zeros(*grad_means.shape[:-2], ctx.n, grad_means.shape[-1])
        if grad_means is not None:
            size = grad_x.shape[-2] // ctx.m
            grad_x.unflatten(-2, (ctx.m, size)).add_(grad_means.unsqueeze(-2) / size)
        return grad_x, None


class NystromAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.num_landmarks = opts.num_landmarks
        self.iterations = opts.pinv_iterations
        self.per_head_init = opts.pinv_init == "per_head"
        self.conv = ConvSkip(cfg.num_heads, opts.conv_kernel) if opts.conv_kernel else None
        # set by the training loop's probe (effbert.train.lra.PinvResiduals) at logging steps only: the next
        # forward then keeps pinv_residual (B, H) of its A and Z, computed without gradients
        self.record_residual = False
        self.last_residual: dict[str, torch.Tensor] | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if q.shape[-2] <= self.num_landmarks:
            # every token is its own landmark: the approximation is exact softmax, so compute that directly
            keep = None if mask is None else mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:
            out = self._nystrom(q, k, v, mask)
        if self.conv is not None:
            out = out + self.conv(v, mask)
        return out

    def _nystrom(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """F A^+ (B V) as two fused attentions around an m x m float32 core: never an n x m matrix.

        B V = SDPA(Q~, K, V) and F W = SDPA(Q, K~, W) with W = A^+ (B V): both are softmax attentions
        (B over the keys, F over the landmarks), so on a GPU they run as FlashAttention-style kernels in the
        input dtype, and memory is O(n (m + d)). Only A and its pseudoinverse, m x m, are float32: the
        iteration is unstable in half precision.
        """
        q, k, q_land, k_land, real = self._landmarks(q, k, mask)  # landmarks (B, H, m, d); real (B, m) or None
        key_ok = None if mask is None else mask[:, None, None, :]
        land_ok = None if real is None else real[:, None, None, :]
        b_v = F.scaled_dot_product_attention(q_land, k, v, attn_mask=key_ok)  # (B, H, m, d)
        wide = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            a_pinv = self._core_pinv(q_land.to(wide), k_land.to(wide), real)  # (B, H, m, m)
            w = (a_pinv @ b_v.to(wide)).to(v.dtype)
        return F.scaled_dot_product_attention(q, k_land, w, attn_mask=land_ok)  # (B, H, N, d)

    def _landmarks(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None):
        """q and k to use from here on, their segment means, and which landmarks hold a real token (None: all)."""
        n, m = q.shape[-2], self.num_landmarks
        if mask is None and n % m == 0:  # equal segments: a reshape, no averaging matrix
            q, q_land = WithSegmentMeans.apply(q, m)
            k, k_land = WithSegmentMeans.apply(k, m)
            return q, k, q_land, k_land, None
        # 1/size in float64 for a float64 run (float32's 1/5 is 0.2000000030), float32 at least
        weights, real = segment_means_weights(full_mask(q, mask), m, torch.promote_types(q.dtype, torch.float32))
        weights = weights[:, None].to(q.dtype)  # (B, 1, m, N): shared by the heads
        return q, k, weights @ q, weights @ k, real

    def _core_pinv(self, q_land: torch.Tensor, k_land: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """A^+ for A = softmax(Q~ K~^T / sqrt(d)), with empty landmarks as masked columns and identity rows."""
        scores = (q_land @ k_land.transpose(-1, -2)) / math.sqrt(q_land.shape[-1])  # (B, H, m, m)
        if real is None:
            return self._pinv(torch.softmax(scores, -1))
        kernel_a = torch.softmax(scores.masked_fill(~real[:, None, None, :], torch.finfo(scores.dtype).min), -1)
        eye = torch.eye(self.num_landmarks, device=scores.device, dtype=scores.dtype)
        kernel_a = torch.where(real[:, None, :, None], kernel_a, eye)  # empty landmarks -> identity rows
        return self._pinv(kernel_a)

    def _pinv(self, kernel_a: torch.Tensor) -> torch.Tensor:
        """iterative_pinv with this layer's settings, keeping its residual when asked (record_residual)."""
        z = iterative_pinv(kernel_a, self.iterations, self.per_head_init)
        if self.record_residual:
            self.last_residual = pinv_residual(kernel_a.detach(), z.detach())
        return z
