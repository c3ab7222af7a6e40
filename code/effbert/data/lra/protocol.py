"""The published Long Range Arena protocol per task: the one table that holds it.

Numbers from the Nystromformer paper's LRA setup (its code's lra_config, as quoted in the project's
table of published results): a small pre-norm Transformer trained from scratch with AdamW
(no weight decay), linear warmup then linear decay, evaluated on dev every `eval_every` steps; the
best dev checkpoint is scored on test. A model folder's config.json may override any field that
LraTaskConfig names (`"lra": {"listops": {"steps": 200}}`); null keeps the value here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from effbert.config import LraTaskConfig


@dataclass(frozen=True)
class LraProtocol:
    task: str
    num_classes: int
    vocab_size: int  # embedding table size in the published setup (>= the loader's vocabulary)
    max_len: int  # longest input; longer ones are truncated, as LRA's input pipeline does
    pad_to: int  # the published code padded every input to this fixed length; we pad per batch
    train_examples: int
    dev_examples: int
    test_examples: int
    # training
    batch_size: int
    lr: float
    warmup_steps: int
    steps: int
    eval_every: int
    weight_decay: float
    # model
    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_size: int
    dropout: float
    norm: str = "pre"  # the published LRA model: LayerNorm before attention and FFN, plus a final one
    layer_norm_eps: float = 1e-5  # torch's default, which that model used


PROTOCOLS: dict[str, LraProtocol] = {
    "listops": LraProtocol(
        task="listops", num_classes=10, vocab_size=32, max_len=2000, pad_to=2048,
        train_examples=96000, dev_examples=2000, test_examples=2000,
        batch_size=32, lr=1e-4, warmup_steps=1000, steps=5000, eval_every=50, weight_decay=0.0,
        num_layers=2, hidden_size=64, num_heads=2, ffn_size=128, dropout=0.1,
    ),
}

# the protocol fields a config.json may override (LraTaskConfig spells the same names)
OVERRIDABLE = ("steps", "batch_size", "lr", "warmup_steps", "eval_every", "max_len",
               "num_layers", "hidden_size", "num_heads", "ffn_size", "dropout")


def resolve_protocol(task: str, overrides: LraTaskConfig | None = None) -> LraProtocol:
    """The task's published protocol with the non-null overrides of a model's config applied."""
    if task not in PROTOCOLS:
        raise ValueError(f"unknown LRA task {task!r}; expected one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[task]
    if overrides is None:
        return protocol
    changes = {name: getattr(overrides, name) for name in OVERRIDABLE if getattr(overrides, name) is not None}
    return dataclasses.replace(protocol, **changes)
