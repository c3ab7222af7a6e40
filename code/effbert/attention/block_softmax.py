"""Block-diagonal softmax attention: TransNormer's DiagAttention (Qin et al., "The Devil in Linear
Transformer", EMNLP 2022), which the paper puts in the early layers to keep attention local.

The sequence is cut into non-overlapping blocks of c = `block_size` tokens (the authors' chunk size, 64);
each token attends, by softmax(q k^T / sqrt(d)), only to the real keys of its own block:

    out_i = sum_{j in block(i), j real} softmax_j(q_i . k_j / sqrt(d)) v_j

The authors' code (OpenNLPLab/fairseq-evo, fairseq/modules/norm_local_attention.py, `forward_chunk`) pads
the sequence to whole blocks with zeros and, without a key mask, lets those zeros take softmax weight; here
padded keys get none. Their module then applies a norm over the concatenated heads (an RMSNorm variant in
their final settings); `norm` does the same ('srmsnorm' or 'layernorm', effbert.attention.norm_linear's
HeadsNorm), and 'none' (the default) leaves plain block softmax, which with block_size >= n is softmax.

Padding: blocks are counted from the first token, so appending padding never moves a real token to another
block, and padded keys get no weight: the outputs at real tokens never change. A padded query in a block
with no real key would have nothing to attend to; it sees itself, so that its (ignored) output stays
finite. Memory is O(n c) per head, never n x n: one fused SDPA call with the blocks in the batch dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.norm_linear import HeadsNorm
from effbert.config import ModelConfig


def _blocks(x: torch.Tensor, c: int) -> torch.Tensor:
    """(B, H, C c, d) -> (B C, H, c, d): each block a batch row."""
    b, h, n, d = x.shape
    return x.view(b, h, n // c, c, d).transpose(1, 2).flatten(0, 1)


class BlockSoftmaxAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.block_size = cfg.attention.block_size
        self.dropout = cfg.attention_dropout
        self.norm = None if cfg.attention.norm == "none" else HeadsNorm(cfg.attention.norm, cfg.hidden_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, n, d = q.shape
        c = min(self.block_size, n)  # one block when it covers the sequence: plain softmax
        pad = -n % c
        if pad:  # whole blocks; the added tokens are masked keys and cropped queries
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            if mask is None:
                mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
            mask = F.pad(mask, (0, pad), value=False)
        keep = None
        if mask is not None:  # (B C, 1, c, c): real keys of the block, and each query itself
            keep = mask.view(-1, 1, 1, c) | torch.eye(c, dtype=torch.bool, device=q.device)
        out = F.scaled_dot_product_attention(_blocks(q, c), _blocks(k, c), _blocks(v, c), attn_mask=keep,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.unflatten(0, (b, -1)).transpose(1, 2).reshape(b, h, n + pad, -1)[:, :, :n]
        if self.norm is None:
            return out
        return self.norm(out.to(torch.promote_types(out.dtype, torch.float32))).to(out.dtype)
