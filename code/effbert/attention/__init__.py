"""Attention mechanisms, one per file, behind one registry and one call signature.

Every mechanism is an nn.Module built from the model config and called as

    out = attention(q, k, v, mask)    # q, k, v, out: (B, heads, N, head_dim)

mask is a (B, N) bool tensor, True = real token, or None when every token is real: the encoder drops an
all-real mask (`padding_mask`), so that a batch without padding skips the masking work and softmax reaches
the flash kernels, which take no mask. A mechanism gives the same result for None as for an all-True mask.

Precision: under autocast a mechanism gets q, k, v in the autocast dtype (bf16 on a GPU) and computes in
it, except the parts that need float32 (Nystrom's pseudoinverse, sums of exponentiated features, hash
projections), which it upcasts itself; it returns v's dtype. `pretraining.attention_fp32` opts back in to
running every mechanism wholly in float32 (effbert.train.loop.keep_attention_fp32).

Projections and the head split live once, in the encoder block; a mechanism holds only its own math.
A mechanism that replaces the whole sublayer (FNet) sets `mixes_hidden_states = True` and is called as
`attention(x, mask)` with x: (B, N, hidden); one that sets `shares_query_key = True` (Reformer) gets the
queries as keys, and the block builds no key projection for it. `padding_invariant = False` marks a
mechanism whose outputs at real tokens depend on the padded length (FNet).
"""

from __future__ import annotations

from torch import nn

from effbert.attention.fnet import FnetMixing
from effbert.attention.linear import LinearAttention
from effbert.attention.linformer import LinformerAttention
from effbert.attention.local import LocalAttention
from effbert.attention.masks import full_mask, padding_mask
from effbert.attention.nystrom import NystromAttention
from effbert.attention.performer import PerformerAttention
from effbert.attention.reformer import ReformerAttention
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
}


def build_attention(cfg: ModelConfig, shared: dict | None = None) -> nn.Module:
    """The mechanism named by cfg.attention.type. `shared` is one dict handed to every layer of a model,
    where a mechanism keeps parameters tied across layers."""
    return REGISTRY[cfg.attention.type](cfg, shared)

