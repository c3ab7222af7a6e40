"""Performer FAVOR+ attention (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

softmax attention D^-1 A V with A_ij = exp(q_i.k_j / sqrt(d)) is estimated through random features:
    A ~= phi(Q') phi(K')^T,  Q' = Q d^-1/4, K' = K d^-1/4   (so that q'.k' = q.k / sqrt(d))
    phi(x) = exp(W x - |x|^2 / 2) / sqrt(M)                 positive random features (Lemma 1):
                                                            E_w[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x.y)
    out = D^-1 (phi(Q') (phi(K')^T V)),  D = diag(phi(Q') (phi(K')^T 1))
W (M x d) holds orthogonal random features (Sec. 2.4): blocks of d orthonormal rows from the QR of a
Gaussian matrix, each row rescaled by the norm of an independent Gaussian vector (chi_d), so each row is
marginally N(0, I_d) and the estimator stays unbiased; the rows of a block are exactly orthogonal. One W
per layer, shared by the heads (as the paper's code does).

Numerical stabiliser (the paper's code subtracts a max before exp): a query's features are divided by
their own max, the keys' by one max over the sequence's real keys and all features. Both constants
cancel between numerator and normaliser, so they are exact (and detached). Unlike the paper's code we
take the max of the whole exponent (w.x - |x|^2/2), so the largest exponent is exactly 0, and we add no
epsilon to the softmax features (it would bias the estimate).

Padding: padded keys get zero features, so they enter neither the numerator nor the normaliser; the keys'
max is over real keys only. (performer-pytorch zeroes the padded keys' inputs, but a zero key still has
positive features, so padding enters both sums; the paper's JAX code ignores the padding mask.)

kernel='relu': generalized attention, phi(x) = relu(W x) + 1e-3 (the paper code's kernel_epsilon), with the
same orthogonal random W (that code's 'ortho' feature type; its default is W = I) and, as that code's
default, no input scaling.

Redrawing: in training mode the features are redrawn from torch's global RNG every `redraw_interval`
forward calls (as the paper's experiments redraw periodically); in eval mode never. W is a buffer,
saved in checkpoints; the call count is not, so a resumed run restarts its redraw schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from effbert.attention.linear import kernel_attention
from effbert.config import ModelConfig

RELU_EPSILON = 1e-3


def orthogonal_gaussian(num_rows: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(num_rows, dim): stacked blocks of orthonormal rows, each row rescaled to a chi_dim-distributed norm."""
    blocks = []
    for start in range(0, num_rows, dim):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # fixing the signs by diag(R) makes Q Haar-distributed (LAPACK's raw Q is not uniform)
        q = q * torch.sign(torch.diagonal(r))
        blocks.append(q.T[: num_rows - start])  # rows of Q^T are orthonormal
    norms = torch.randn(num_rows, dim, generator=generator, dtype=torch.float64).norm(dim=1)  # chi_dim
    return (torch.cat(blocks) * norms[:, None]).float()


def softmax_kernel_exponent(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log(sqrt(M) phi(x)) = W x - |x|^2 / 2 for x (..., N, d), w (M, d): the positive features of Lemma 1."""
    return x @ w.T - x.square().sum(-1, keepdim=True) / 2


class PerformerAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.num_features = opts.num_features
        self.kernel = opts.kernel
        self.redraw_interval = opts.redraw_interval
        self.head_dim = cfg.head_dim
        self.calls = 0  # training forward calls since construction
        self.register_buffer("features", orthogonal_gaussian(self.num_features, self.head_dim))  # W: (M, d)

    @torch.no_grad()
    def redraw(self) -> None:
        fresh = orthogonal_gaussian(self.num_features, self.head_dim)
        self.features.copy_(fresh.to(self.features))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.redraw_interval is not None:
            if self.calls > 0 and self.calls % self.redraw_interval == 0:
                self.redraw()
            self.calls += 1
        # exp and the sums over the sequence need float32 at least; bfloat16 is cast back at the end
        wide = torch.promote_types(q.dtype, torch.float32)
        q, k, w = q.to(wide), k.to(wide), self.features.to(wide)
        key_ok = mask[:, None, :, None]  # (B, 1, N, 1)
        if self.kernel == "relu":
            q_features = torch.relu(q @ w.T) + RELU_EPSILON
            k_features = (torch.relu(k @ w.T) + RELU_EPSILON).masked_fill(~key_ok, 0.0)
        else:
            scale = self.head_dim ** -0.25
            q_exp = softmax_kernel_exponent(q * scale, w)  # (B, H, N, M)
            k_exp = softmax_kernel_exponent(k * scale, w).masked_fill(~key_ok, -math.inf)
            q_shift = q_exp.amax(-1, keepdim=True).detach()  # per query: cancels in D^-1
            k_shift = k_exp.amax((-2, -1), keepdim=True).detach()  # per (batch, head): cancels in D^-1
            k_shift = k_shift.masked_fill(k_shift == -math.inf, 0.0)  # a sequence of padding only
            q_features = torch.exp(q_exp - q_shift) / math.sqrt(self.num_features)
            k_features = torch.exp(k_exp - k_shift) / math.sqrt(self.num_features)  # padded keys: exp(-inf) = 0
        return kernel_attention(q_features, k_features, v.to(wide)).to(v.dtype)
