"""Exact scaled dot-product attention (Vaswani et al., 2017) through torch's fused kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig


class SoftmaxAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.dropout = cfg.attention_dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # padded keys get no weight; padded queries still attend to the real keys (their output is ignored).
        # No mask at all when nothing is padded: only then is the FlashAttention kernel eligible.
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )
