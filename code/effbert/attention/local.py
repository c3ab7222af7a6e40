"""Sliding-window (local) attention: token i attends to the keys j with |i - j| <= window.

    out_i = sum_{|i-j| <= w, j real} softmax_j(q_i . k_j / sqrt(d)) v_j

Computed in blocks so that memory is O(n * w), never an n x n mask: the sequence is cut into chunks of
c = min(w, n) tokens and each chunk of queries scores only its own chunk and the two beside it, which
hold every key within w positions (a query at p in chunk i needs keys in [p - w, p + w], inside chunks
i - 1 .. i + 1 when c = w; with c = n there is one chunk and every key is within w). The band and the
padding are then masked inside those 3c keys.

Not the Long Range Arena's "local" baseline, which splits the sequence into fixed blocks attending only
within themselves; this is the symmetric sliding window the config describes. Padded keys get no weight,
so appending padding never changes the outputs at real tokens.
"""

from __future__ import annotations

import math

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


class LocalAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.window = cfg.attention.window
        self.dropout = cfg.attention_dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        dtype, mask = v.dtype, full_mask(q, mask)  # indexed below, so made explicit
        work = torch.float64 if dtype == torch.float64 else torch.float32  # bf16 in, float32 inside
        q, k, v = q.to(work), k.to(work), v.to(work)
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

        band = (pos[:, :, None] - k_pos[:, None, :]).abs() <= self.window  # (C, c, 3c)
        keep = band & (k_pos >= 0)[:, None, :] & k_real[..., None, :]  # (B, 1, C, c, 3c)
        scores = qc @ kc.transpose(-1, -2) / math.sqrt(d)  # (B, H, C, c, 3c)
        # finite fill: a padded query may have no key at all; its (cropped-away) row stays finite
        scores = scores.masked_fill(~keep, torch.finfo(work).min)
        probs = F.dropout(torch.softmax(scores, -1), self.dropout, self.training)
        out = (probs @ vc).view(b, h, n + pad, d)
        return out[:, :, :n].to(dtype)
