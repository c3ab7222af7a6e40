"""Nystrom attention (Xiong et al., "Nystromformer", AAAI 2021).

softmax(Q K^T / sqrt(d)) V  ~=  F A^+ B V   with landmarks Q~, K~ (segment means of Q and K):
    F = softmax(Q K~^T / sqrt(d))    (n x m)     eq. (14) of the paper
    A = softmax(Q~ K~^T / sqrt(d))   (m x m), A^+ by the iterative Moore-Penrose inverse, eq. (16)
    B = softmax(Q~ K^T / sqrt(d))    (m x n)

Padding is handled where the seeds did not: landmarks average real tokens only, padded keys get no
weight, and a sequence shorter than m leaves some landmarks empty. Empty landmarks are masked out of F
and replaced by identity rows in A, so A stays block-diagonal [[A_real, 0], [0, I]] through every
pseudoinverse iteration and the empty landmarks contribute exactly nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.conv_skip import ConvSkip
from effbert.config import ModelConfig


def segment_means_weights(mask: torch.Tensor, num_landmarks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaging weights (B, m, N) that turn real tokens into m segment-means landmarks, and which are non-empty.

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
    onehot = F.one_hot(segment, m).to(torch.float32) * mask[..., None]  # (B, N, m)
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
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.num_landmarks = opts.num_landmarks
        self.iterations = opts.pinv_iterations
        self.per_head_init = opts.pinv_init == "per_head"
        self.conv = ConvSkip(cfg.num_heads, opts.conv_kernel) if opts.conv_kernel else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = q.shape[-2]
        if n <= self.num_landmarks:
            # every token is its own landmark: the approximation is exact softmax, so compute that directly
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        else:
            # the pseudoinverse iteration is unstable in half precision: compute in at least float32
            wide = torch.promote_types(q.dtype, torch.float32)
            out = self._nystrom(q.to(wide), k.to(wide), v.to(wide), mask).to(v.dtype)
        if self.conv is not None:
            out = out + self.conv(v, mask)
        return out

    def _nystrom(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / math.sqrt(math.sqrt(q.shape[-1]))
        q, k = q * scale, k * scale  # so that q @ k^T carries 1/sqrt(d)
        weights, real = segment_means_weights(mask, self.num_landmarks)  # (B, m, N), (B, m)
        weights = weights[:, None].to(q.dtype)  # (B, 1, m, N): shared by the heads
        q_land, k_land = weights @ q, weights @ k  # (B, H, m, d)

        neg = torch.finfo(q.dtype).min
        key_ok, land_ok = mask[:, None, None, :], real[:, None, None, :]
        kernel_f = torch.softmax((q @ k_land.transpose(-1, -2)).masked_fill(~land_ok, neg), -1)  # (B, H, N, m)
        kernel_a = torch.softmax((q_land @ k_land.transpose(-1, -2)).masked_fill(~land_ok, neg), -1)  # (B, H, m, m)
        eye = torch.eye(self.num_landmarks, device=q.device, dtype=q.dtype)
        kernel_a = torch.where(real[:, None, :, None], kernel_a, eye)  # empty landmarks -> identity rows
        kernel_b = torch.softmax((q_land @ k.transpose(-1, -2)).masked_fill(~key_ok, neg), -1)  # (B, H, m, N)

        a_pinv = iterative_pinv(kernel_a, self.iterations, self.per_head_init)
        return (kernel_f @ a_pinv) @ (kernel_b @ v)  # (B, H, N, d)
