"""Linformer attention (Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020).

Keys and values are projected along the sequence to k rows by learned E, F (k x n):
    head = softmax(Q (E K)^T / sqrt(d)) (F V)          eq. (7) of the paper
E, F have cfg.max_seq_len columns; a batch of length n < max_seq_len uses the first n (longer: an error).
They start as N(0, 1/k), the random projection of the proof of Theorem 2 (E = delta R, R_ij ~ N(0, 1/k)).

Sharing (Sec. 4, "Additional efficiency techniques"):
    'none'   one (E, F) pair per head
    'heads'  one (E, F) pair per layer, shared by its heads (headwise sharing)
    'kv'     one matrix per layer, E = F, shared by its heads (key-value sharing)
    'layers' one matrix for the whole model (layerwise sharing), in the model's `shared` dict: every layer
             registers the same nn.Parameter (parameters() and the optimizer see it once; the state dict
             lists it under every layer, and loading restores the one tensor)

Padding: padded keys and values are zeroed before the projection, so appending padding leaves outputs at
real tokens unchanged. The k projected rows are never masked (a row no real token reaches is a zero key
with a zero value), so with padding this is not masked softmax even for E = F = identity; without padding
and k = n it is. k > n is allowed: E K has k rows (rank at most n), as the formula gives.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig

SHARED_KEY = "linformer_projection"


def _projection(*shape: int) -> nn.Parameter:
    k = shape[-2]
    return nn.Parameter(torch.randn(*shape) / math.sqrt(k))  # N(0, 1/k), as in the proof of Theorem 2


class LinformerAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.k, self.share, self.max_seq_len = opts.k, opts.share, cfg.max_seq_len
        self.dropout = cfg.attention_dropout
        shape = (cfg.num_heads, self.k, self.max_seq_len) if self.share == "none" else (self.k, self.max_seq_len)
        self.proj_v: nn.Parameter | None = None
        if self.share == "layers":
            store = shared if shared is not None else {}
            if SHARED_KEY not in store:
                store[SHARED_KEY] = _projection(*shape)
            if store[SHARED_KEY].shape != shape:
                raise ValueError(f"shared {SHARED_KEY} has shape {tuple(store[SHARED_KEY].shape)}, expected {shape}")
            self.proj_k = store[SHARED_KEY]  # (k, L): E = F for every layer
        else:
            self.proj_k = _projection(*shape)  # E: (H, k, L) or (k, L)
            if self.share != "kv":
                self.proj_v = _projection(*shape)  # F

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n = k.shape[-2]
        if n > self.max_seq_len:
            raise ValueError(f"Linformer projections have {self.max_seq_len} columns (max_seq_len); got {n} tokens")
        if mask is not None:
            padded = ~mask[:, None, :, None]  # (B, 1, N, 1)
            k, v = k.masked_fill(padded, 0.0), v.masked_fill(padded, 0.0)
        # the projections are matmuls (float32 accumulation in any dtype), so they run in the input dtype,
        # and eq. (7) is softmax attention over k projected keys: one fused SDPA call
        e = self.proj_k[..., :n].to(q.dtype)  # (H, k, n) or (k, n): the first n columns
        f = e if self.proj_v is None else self.proj_v[..., :n].to(q.dtype)
        k_proj, v_proj = e @ k, f @ v  # (B, H, k, D)
        return F.scaled_dot_product_attention(q, k_proj, v_proj, dropout_p=self.dropout if self.training else 0.0)
