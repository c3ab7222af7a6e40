"""The padding mask a mechanism gets: a (B, N) bool tensor, True = real token, or None for no padding."""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The mask a mechanism gets: (B, N) bool, or None when no token is padding.

    Deciding needs the mask's values, one device sync per forward on a GPU (microseconds); under
    torch.compile the mask is kept, so that the graph does not break on a data-dependent branch.
    """
    mask = attention_mask.bool()
    if torch.compiler.is_compiling() or not bool(mask.all()):
        return mask
    return None


def full_mask(q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """An explicit (B, N) mask for a mechanism that indexes with it: all True when mask is None."""
    if mask is not None:
        return mask
    return torch.ones(q.shape[0], q.shape[-2], dtype=torch.bool, device=q.device)
