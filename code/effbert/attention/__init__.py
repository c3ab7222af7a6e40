"""Attention mechanisms, one per file, behind one registry and one call signature:

    out = attention(q, k, v, mask)    # q, k, v, out: (B, heads, N, head_dim)

mask is a (B, N) bool tensor, True = real token, or None when every token is real: the encoder drops an
all-real mask (`padding_mask`) so that unpadded batches skip the masking work and softmax reaches the
mask-free flash kernels. None and an all-True mask give the same result.

Precision: under autocast q, k, v arrive in the autocast dtype (bf16 on a GPU) and a mechanism computes in
it, upcasting itself only what needs float32 (Nystrom's pseudoinverse, sums of exponentiated features, hash
projections); it returns v's dtype. `pretraining.attention_fp32` runs every mechanism wholly in float32
(effbert.train.loop.keep_attention_fp32).

The encoder block owns the projections and the head split; a mechanism holds only its own math. Flags:
`mixes_hidden_states` (FNet replaces the whole sublayer: attention(x, mask), x (B, N, hidden));
`shares_query_key` (Reformer gets the queries as keys; no key projection is built); `padding_invariant =
False` (FNet: outputs at real tokens depend on the padded length).
"""

from __future__ import annotations

from torch import nn

from effbert.attention.block_softmax import BlockSoftmaxAttention
from effbert.attention.fnet import FnetMixing
from effbert.attention.linear import LinearAttention
from effbert.attention.linformer import LinformerAttention
from effbert.attention.local import LocalAttention
from effbert.attention.masks import full_mask, padding_mask
from effbert.attention.norm_linear import NormLinearAttention
from effbert.attention.nystrom import NystromAttention
from effbert.attention.performer import PerformerAttention
from effbert.attention.reformer import ReformerAttention
from effbert.attention.slab_linear import SlabLinearAttention
from effbert.attention.softmax import SoftmaxAttention
from effbert.attention.yoso import YosoAttention
from effbert.config import ModelConfig

__all__ = ["REGISTRY", "build_attention", "full_mask", "padding_mask"]

REGISTRY: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxAttention,
    "nystrom": NystromAttention,
    "yoso": YosoAttention,
    "linformer": LinformerAttention,
    "performer": PerformerAttention,
    "reformer": ReformerAttention,
    "fnet": FnetMixing,
    "linear": LinearAttention,
    "local": LocalAttention,
    "slab_linear": SlabLinearAttention,
    "norm_linear": NormLinearAttention,
    "block_softmax": BlockSoftmaxAttention,
}


def build_attention(cfg: ModelConfig, shared: dict | None = None) -> nn.Module:
    """The mechanism named by cfg.attention.type. `shared` is one dict handed to every layer of a model,
    where a mechanism keeps parameters tied across layers."""
    return REGISTRY[cfg.attention.type](cfg, shared)

