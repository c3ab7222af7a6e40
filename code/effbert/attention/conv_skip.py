"""The depthwise convolution skip on V that Nystromformer and YOSO-C add to their output."""

from __future__ import annotations

import torch
from torch import nn


class ConvSkip(nn.Conv2d):
    """One filter per head over the sequence, applied to V with padded tokens zeroed (so they add nothing).

    A subclass of Conv2d rather than a wrapper, so its weight is `conv.weight` in the state dict.
    """

    def __init__(self, num_heads: int, kernel: int):
        super().__init__(num_heads, num_heads, (kernel, 1), padding=(kernel // 2, 0), groups=num_heads, bias=False)

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # v: (B, H, N, D), mask: (B, N)
        if mask is not None:
            v = v * mask[:, None, :, None].to(v.dtype)
        if v.device.type == "cpu":
            # oneDNN's depthwise convolution runs about twice as fast on channels-last input (heads innermost),
            # forward and backward, conversion included (docs/benchmarks.md); a GPU keeps the given layout
            v = v.contiguous(memory_format=torch.channels_last)
        return super().forward(v)
