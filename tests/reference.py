"""Plain reference computations the attention tests compare against, written once."""

from __future__ import annotations

import math

import torch


def lengths_mask(lengths: list[int], n: int) -> torch.Tensor:
    """(B, n) bool padding mask, True for the first lengths[b] tokens of row b."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def naive_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with the n x n matrix materialised; padded keys (mask False) get no weight."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
    return torch.softmax(scores, -1) @ v
