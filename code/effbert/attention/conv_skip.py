"""The depthwise convolution skip on V that Nystromformer and YOSO-C add to their output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvSkip(nn.Conv2d):
    """One filter per head over the sequence, applied to V with padded tokens zeroed (so they add nothing).

    A subclass of Conv2d rather than a wrapper, so its weight is `conv.weight` in the state dict: (H, 1, k, 1),
    a (k x 1) filter per head over V seen as an image of N x D per head.
    """

    def __init__(self, num_heads: int, kernel: int):
        super().__init__(num_heads, num_heads, (kernel, 1), padding=(kernel // 2, 0), groups=num_heads, bias=False)

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # v: (B, H, N, D), mask: (B, N)
        if mask is not None:
            v = v * mask[:, None, :, None].to(v.dtype)
        if v.device.type == "cpu":
            return self._per_channel(v)
        return super().forward(v)

    def _per_channel(self, v: torch.Tensor) -> torch.Tensor:
        """The same convolution with each of the H * D channels of the token-major layout as its own group.

        The encoder's V is (B, N, H, D) in memory, which as a (B, H * D, N, 1) image is channels-last already,
        the layout in which oneDNN's depthwise convolution is fast. Each head's filter is repeated for its D
        channels (their gradients sum back into it), and the output comes back in the same token-major layout,
        so neither V, the output nor their gradients are transposed in memory: 2-2.8x the speed of the
        head-as-channel form with its layout conversions, forward and backward (docs/benchmarks.md).
        """
        b, h, n, d = v.shape
        image = v.transpose(1, 2).reshape(b, n, 1, h * d).permute(0, 3, 1, 2)  # (B, H*D, N, 1), a view as given
        weight = self.weight.repeat_interleave(d, dim=0)  # (H*D, 1, k, 1)
        out = F.conv2d(image, weight, padding=self.padding, groups=h * d)
        return out.permute(0, 2, 3, 1).reshape(b, n, h, d).transpose(1, 2)
