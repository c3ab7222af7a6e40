"""Performer FAVOR+ attention (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

softmax attention D^-1 A V with A_ij = exp(q_i.k_j / sqrt(d)) is estimated through random features:
    A ~= phi(Q') phi(K')^T,  Q' = Q d^-1/4, K' = K d^-1/4   (so that q'.k' = q.k / sqrt(d))
    phi(x) = exp(W x - |x|^2 / 2) / sqrt(M)                 positive random features (Lemma 1):
                                                            E_w[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x.y)
    out = D^-1 (phi(Q') (phi(K')^T V)),  D = diag(phi(Q') (phi(K')^T 1))
W (M x d) holds orthogonal random features (Sec. 2.4): blocks of d orthonormal rows (QR of a Gaussian
matrix), each row rescaled by an independent chi_d norm, so rows are marginally N(0, I_d), the estimate
stays unbiased and the rows of a block are exactly orthogonal. One W per layer, shared by the heads.
kernel='relu' (generalized attention): phi(x) = relu(W x) + 1e-3, same orthogonal W, no input scaling.

Computed by linear.kernel_attention: chunked, features recomputed in the backward, float32 sums. The
exponents are stabilised per feature by its max over the real keys (moved onto the queries' side) and by a
query's own max; both cancel between numerator and normaliser (exact, detached), as do a query's -|q'|^2/2
and the 1/sqrt(M), which are left out. So every query with a real key has a normaliser of at least 1, at any
size of the logits. No epsilon is added to the softmax features (it would bias the estimate). Padded
keys get zero features: they enter neither sum, nor the keys' max. Training mode redraws W from torch's
global RNG every `redraw_interval` forward calls, eval mode never; W is a buffer saved in checkpoints, the
call count is not, so a resumed run restarts its redraw schedule.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import torch
from torch import nn

from effbert.attention.linear import CHUNK, FeatureMap, kernel_attention
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


class SoftmaxFeatures(FeatureMap):
    """Exponents of the positive features for Q' = s Q, K' = s K (s = d^-1/4), in the log domain.

    Keys: e = s k W^T - s^2 |k|^2 / 2 (Lemma 1), de/dk = s W - s^2 k. Queries: the per-query terms
    -|q'|^2/2 and 1/sqrt(M) multiply phi(q_i) by a constant that cancels in D^-1 (as the query's max does),
    so the query exponent is just s q W^T.
    """

    log_domain = True

    def __init__(self, w: torch.Tensor, scale: float):
        self.w, self.scale = w, scale

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale) @ self.w.T

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return softmax_kernel_exponent(x * self.scale, self.w)

    def query_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (grad @ self.w).mul_(self.scale)

    def key_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (grad @ self.w).mul_(self.scale).sub_(x * (self.scale ** 2 * grad.sum(-1, keepdim=True)))


class ReluFeatures(FeatureMap):
    """Generalized attention: phi(x) = relu(W x) + eps, so dphi/dx = W where W x > 0 (there phi > eps)."""

    def __init__(self, w: torch.Tensor):
        self.w = w

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w.T).relu_().add_(RELU_EPSILON)

    def query_vjp(self, x: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill_(phi <= RELU_EPSILON, 0.0) @ self.w


class PerformerAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.num_features = opts.num_features
        self.kernel = opts.kernel
        self.redraw_interval = opts.redraw_interval
        self.head_dim = cfg.head_dim
        self.chunk = CHUNK
        self.calls = 0  # training forward calls since construction
        self.register_buffer("features", orthogonal_gaussian(self.num_features, self.head_dim))  # W: (M, d)

    @torch.no_grad()
    def redraw(self) -> None:
        fresh = orthogonal_gaussian(self.num_features, self.head_dim)
        self.features.copy_(fresh.to(self.features))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.training and self.redraw_interval is not None:
            if self.calls > 0 and self.calls % self.redraw_interval == 0:
                self.redraw()
            self.calls += 1
        # the exponents, the sums over the sequence and exp need float32 at least (kernel_attention upcasts
        # each chunk); W is a fixed buffer, so it gets no gradient
        w = self.features.detach().to(torch.promote_types(q.dtype, torch.float32))
        if self.kernel == "relu":
            fmap = ReluFeatures(w)
        else:
            fmap = SoftmaxFeatures(w, self.head_dim ** -0.25)
        return kernel_attention(q, k, v, mask, fmap, self.chunk)
