"""The published Long Range Arena protocol per task: the one table that holds it.

Numbers from the Nystromformer paper's LRA setup (its code's lra_config, as quoted in the project's
table of published results, ../shared/reference/published-results.md): a small pre-norm Transformer
(2 layers, width 64, 2 heads of 32, FFN 128, dropout 0.1, learned positions, mean pooling) trained from
scratch with AdamW (no weight decay), linear warmup then linear decay, evaluated on dev every
`eval_every` steps; the best dev checkpoint is scored on test. A model folder's config.json may override
any field that LraTaskConfig names (`"lra": {"listops": {"steps": 200}}`); null keeps the value here.

Each row also names its loader: the module under effbert.data.lra whose `read_split(lra_dir, split,
**options)` reads the task (Path-X is the pathfinder loader at 128x128, difficulty curv_contour_length_14).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from effbert.config import LraConfig, LraTaskConfig

# the protocol's pooling and schedule for every task: the head pools the mean over real tokens
# (model/task_models.py), the learning rate warms up linearly, then decays linearly (train/lra.py)
POOLING = "mean"
SCHEDULE = "linear"


@dataclass(frozen=True)
class LraProtocol:
    task: str
    loader: str  # module effbert.data.lra.<loader>
    num_classes: int
    vocab_size: int  # embedding table size in the published setup (the loader's VOCAB_SIZE wins if larger)
    max_len: int  # longest input; longer ones are truncated, as LRA's input pipeline does
    pad_to: int  # the published code padded every input to this fixed length; we pad per batch
    train_examples: int | None  # the published split sizes (None: a fraction of the release, see `split`)
    dev_examples: int | None
    test_examples: int | None
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
    inputs: int = 1  # encoder inputs per example: 2 for retrieval (a dual encoder)
    options: tuple[tuple[str, object], ...] = ()  # keyword options of the loader's read_split
    split: str = ""  # how the release's files become train/dev/test, when not by the release's own names
    published: bool = True  # False: no published protocol for this task; the row extrapolates (say how)
    norm: str = "pre"  # the published LRA model: LayerNorm before attention and FFN, plus a final one
    layer_norm_eps: float = 1e-5  # torch's default, which that model used
    self_pretrain_steps: int = 0  # masked-LM steps on the task's own training inputs first (0: none)
    mask_prob: float = 0.15  # of the real tokens, in self-pretraining (BERT's 80/10/10 replacement)


_MODEL = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "ffn_size": 128, "dropout": 0.1, "weight_decay": 0.0}

PROTOCOLS: dict[str, LraProtocol] = {
    "listops": LraProtocol(
        task="listops", loader="listops", num_classes=10, vocab_size=32, max_len=2000, pad_to=2048,
        train_examples=96000, dev_examples=2000, test_examples=2000,
        batch_size=32, lr=1e-4, warmup_steps=1000, steps=5000, eval_every=50, **_MODEL,
    ),
    "text": LraProtocol(
        task="text", loader="text", num_classes=2, vocab_size=512, max_len=4000, pad_to=4096,
        train_examples=25000, dev_examples=25000, test_examples=25000,
        split="IMDB test is both dev and test, as LRA does",
        batch_size=32, lr=1e-4, warmup_steps=8000, steps=20000, eval_every=500, **_MODEL,
    ),
    "retrieval": LraProtocol(
        task="retrieval", loader="retrieval", num_classes=2, vocab_size=512, max_len=4000, pad_to=4096,
        train_examples=147086, dev_examples=18090, test_examples=17437, inputs=2,
        split="new_aan_pairs train / eval / test",
        batch_size=32, lr=1e-4, warmup_steps=800, steps=30000, eval_every=300, **_MODEL,
    ),
    "image": LraProtocol(
        task="image", loader="image", num_classes=10, vocab_size=256, max_len=1024, pad_to=1024,
        train_examples=45000, dev_examples=5000, test_examples=10000,
        split="CIFAR-10 train minus its last 5000 / those 5000 / test batch",
        batch_size=256, lr=1e-4, warmup_steps=175, steps=35000, eval_every=175, **_MODEL,
    ),
    "pathfinder": LraProtocol(
        task="pathfinder", loader="pathfinder", num_classes=2, vocab_size=256, max_len=1024, pad_to=1024,
        train_examples=None, dev_examples=None, test_examples=None,
        options=(("resolution", 32), ("difficulty", "curv_contour_length_14")),
        split="80/10/10 of the release's images, in the release's order",
        batch_size=256, lr=1e-4, warmup_steps=312, steps=62400, eval_every=312, **_MODEL,
    ),
}
# The Nystromformer study did not run Path-X: Pathfinder's row at 128 x 128 (16384 pixels), marked unpublished.
PROTOCOLS["pathx"] = dataclasses.replace(
    PROTOCOLS["pathfinder"], task="pathx", max_len=16384, pad_to=16384, published=False,
    options=(("resolution", 128), ("difficulty", "curv_contour_length_14")),
)

# the protocol fields a config.json may override: those LraTaskConfig and LraProtocol both name (the others,
# seeds, micro_batch and attention, are read where they apply)
_PROTOCOL_FIELDS = {f.name for f in dataclasses.fields(LraProtocol)}
OVERRIDABLE = tuple(name for name in LraTaskConfig.model_fields if name in _PROTOCOL_FIELDS)


def resolve_protocol(task: str, overrides: LraTaskConfig | None = None) -> LraProtocol:
    """The task's published protocol with the non-null overrides of a model's config applied."""
    if task not in PROTOCOLS:
        raise ValueError(f"unknown LRA task {task!r}; expected one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[task]
    if overrides is None:
        return protocol
    changes = {name: getattr(overrides, name) for name in OVERRIDABLE if getattr(overrides, name) is not None}
    return dataclasses.replace(protocol, **changes)


def task_protocol(lra: LraConfig, task: str) -> LraProtocol:
    """The protocol a model folder's `lra` section trains `task` with: its overrides, and the self-pretraining
    steps it asks for (the task's own, else lra.self_pretrain_steps)."""
    return dataclasses.replace(resolve_protocol(task, getattr(lra, task)),
                               self_pretrain_steps=lra.task_self_pretrain_steps(task))
