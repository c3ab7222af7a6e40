"""SLAB's simplified linear attention (Guo et al., "SLAB: Efficient Transformers with Simplified Linear
Attention and Progressive Re-parameterized Batch Normalization", ICML 2024).

Linear attention with the ReLU kernel, and a depthwise convolution on V added to the output:

    out_i = relu(q_i)^T (sum_j relu(k_j) v_j^T) / (relu(q_i)^T sum_j relu(k_j) + 1e-6)  +  DWC(V)_i

as the authors' code computes it (xinghaochen/SLAB, classification/models/slab_swin.py's
SimplifiedLinearAttention, the same in slab_deit.py's Attention): no 1/sqrt(d) scaling; 1e-6 added to the
normaliser, so a query whose features meet no key's (relu(q_i) . relu(k_j) = 0 for every j) gets 0 from
the attention term; the sums in float32 with autocast off. DWC is one filter per head-dim channel, shared
by the heads, with a bias, of `conv_kernel` taps (their 5) and zero padding at the ends. Their images are
a 2-D grid of patches and the convolution 5 x 5 over it; a text is a 1-D sequence, so here it runs over 5
neighbouring tokens. Their learned positional term added to the keys (one per patch of a window) is left
out: our encoder adds position embeddings at its input.

Padding: padded keys get zero features, so they enter neither sum, and padded values are zeroed before the
convolution, so appending padding never changes the outputs at real tokens. Memory is O(N d) forward and
backward (relu(Q), relu(K), the d x d context): no N x N matrix.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig

EPS = 1e-6  # added to the normaliser, as the authors' code


class SlabLinearAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        kernel, d = cfg.attention.conv_kernel, cfg.head_dim
        self.conv = None if kernel is None else nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        dtype, wide = v.dtype, torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):  # the sums in float32, as the authors'
            q, k, v = (t.to(wide) for t in (q, k, v))
            features_k = F.relu(k)
            if mask is not None:
                real = mask[:, None, :, None].to(wide)  # (B, 1, N, 1)
                features_k, v = features_k * real, v * real  # padded keys and values count for nothing
            features_q = F.relu(q)
            context = features_k.transpose(-1, -2) @ v  # (B, H, d, D): sum_j relu(k_j) v_j^T
            norm = features_q @ features_k.sum(-2, keepdim=True).transpose(-1, -2)  # (B, H, N, 1)
            out = features_q @ context / (norm + EPS)
            if self.conv is not None:
                out = out + self._depthwise(v)
        return out.to(dtype)

    def _depthwise(self, v: torch.Tensor) -> torch.Tensor:
        """DWC(V): (B, H, N, D) -> the same, each channel convolved along N; v arrives with padding zeroed."""
        b, h, n, d = v.shape
        rows = v.flatten(0, 1).transpose(1, 2)  # (B H, D, N): channels are the head dimension
        out = F.conv1d(rows, self.conv.weight.to(v.dtype), self.conv.bias.to(v.dtype), padding=self.conv.padding,
                       groups=d)
        return out.transpose(1, 2).unflatten(0, (b, h))
