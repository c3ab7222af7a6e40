"""Sliding-window (local) attention: token i attends to the keys j with |i - j| <= window.

    out_i = sum_{|i-j| <= w, j real} softmax_j(q_i . k_j / sqrt(d)) v_j

Computed in blocks so that memory is O(n * w), never an n x n mask: the sequence is cut into chunks of
c = min(w, n) tokens and each chunk of queries scores only its own chunk and the two beside it, which
hold every key within w positions (a query at p in chunk i needs keys in [p - w, p + w], inside chunks
i - 1 .. i + 1 when c = w; with c = n there is one chunk). The band and the padding are then masked
inside those 3c keys. Padded keys get no weight, so appending padding never changes the outputs at real
tokens. This is the symmetric sliding window the config describes, not fixed non-overlapping blocks.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.masks import full_mask
from effbert.config import ModelConfig


def with_neighbours(x: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
    """(..., C, c, *) -> (..., C, 3c, *): chunk i - 1, chunk i, chunk i + 1 (`fill` beyond the ends)."""
    edge = torch.full_like(x[..., :1, :, :], fill)
    prev = torch.cat([edge, x[..., :-1, :, :]], dim=-3)
    nxt = torch.cat([x[..., 1:, :, :], edge], dim=-3)
    return torch.cat([prev, x, nxt], dim=-2)


def _fold(x: torch.Tensor) -> torch.Tensor:
    """(B, H, C, ...) -> (B * C, H, ...): the chunks as batch rows, for one 4-d SDPA call."""
    return x.transpose(1, 2).flatten(0, 1)


class LocalAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.window = cfg.attention.window
        self.dropout = cfg.attention_dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask = full_mask(q, mask)  # indexed below, so made explicit
        b, h, n, d = q.shape
        c = min(self.window, n)
        pad = -n % c  # whole chunks; the padded tokens are masked keys and cropped queries
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            mask = F.pad(mask, (0, pad), value=False)
        chunks = (n + pad) // c

        qc = q.view(b, h, chunks, c, d)
        kc = with_neighbours(k.view(b, h, chunks, c, d), 0.0)  # (B, H, C, 3c, d)
        vc = with_neighbours(v.view(b, h, chunks, c, d), 0.0)
        pos = torch.arange(n + pad, device=q.device).view(chunks, c)
        k_pos = with_neighbours(pos[..., None], -1)[..., 0]  # (C, 3c); -1 marks keys beyond the ends
        k_real = with_neighbours(mask.view(b, 1, chunks, c, 1), False)[..., 0]  # (B, 1, C, 3c)

        offset = pos[:, :, None] - k_pos[:, None, :]  # (C, c, 3c)
        keep = (offset.abs() <= self.window) & (k_pos >= 0)[:, None, :] & k_real[..., None, :]  # (B, 1, C, c, 3c)
        # a padded query may have no real key within the window: let it see itself, so that its (ignored)
        # output stays finite; a real query already sees itself
        keep = keep | (offset == 0)
        # one fused softmax attention per chunk, in the input dtype: chunks go to the batch dimension
        out = F.scaled_dot_product_attention(_fold(qc), _fold(kc), _fold(vc), attn_mask=_fold(keep),
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.unflatten(0, (b, chunks)).transpose(1, 2).reshape(b, h, n + pad, d)
        return out[:, :, :n]
