"""Linear attention (Katharopoulos et al., "Transformers are RNNs", ICML 2020).

softmax's similarity exp(q.k) is replaced by a kernel phi(q).phi(k) with a positive feature map, and
associativity turns O(n^2) into O(n):
    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))      eq. (6) of the paper
    phi(x) = elu(x) + 1                                                             eq. (7)
There is no 1/sqrt(d) scaling (the paper and its fast-transformers code apply none). Padded keys get zero
features, so they enter neither the numerator nor the normaliser (fast-transformers masks the key
features the same way). Note: the Nystromformer seeds' LRA "linear" baseline drops the normaliser
altogether; this is the paper's normalised form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig


def kernel_attention(q_features: torch.Tensor, k_features: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) row-normalised by phi(Q) (phi(K)^T 1): eq. (6), also the Performer's D^-1 A V.

    q_features (B, H, N, M), k_features (B, H, N, M) non-negative with padded keys already zero, v (B, H, N, D).
    """
    context = k_features.transpose(-1, -2) @ v  # (B, H, M, D): sum_j phi(k_j) v_j^T
    normaliser = k_features.sum(-2).unsqueeze(-1)  # (B, H, M, 1): sum_j phi(k_j)
    numerator = q_features @ context  # (B, H, N, D)
    denominator = q_features @ normaliser  # (B, H, N, 1)
    # a row with no real key at all (an all-padding sequence) gets 0 rather than 0/0
    return numerator / denominator.clamp(min=torch.finfo(denominator.dtype).tiny)


class LinearAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the sums over the sequence lose too much in bfloat16: compute in at least float32
        wide = torch.promote_types(q.dtype, torch.float32)
        q_features = F.elu(q.to(wide)) + 1  # eq. (7)
        k_features = (F.elu(k.to(wide)) + 1).masked_fill(~mask[:, None, :, None], 0.0)
        return kernel_attention(q_features, k_features, v.to(wide)).to(v.dtype)
