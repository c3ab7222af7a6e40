"""The schema of a model folder's config.json: the one place where its keys are spelled.

Every stage that trains or evaluates a model folder (models/<name>/) reads its config.json through
`load_config`, which fills defaults and rejects unknown keys, wrong types and impossible values with an
error naming the file and the key. Which settings make up each stage's run (so what an edit reruns) is
effbert.train.identity.

    {
      "model": {"hidden_size": 768, "num_layers": 12, "num_heads": 12,
                "attention": {"type": "nystrom", "num_landmarks": 64}},
      "pretraining": {"tokenizer": "bpe-wiki-books", "batch_size": 256, "steps": 500000},
      "glue": {"batch_size": [16, 32], "lr": [2e-5, 3e-5, 4e-5, 5e-5], "seeds": [0, 1, 2]},
      "lra": {"listops": {"steps": 5000, "attention": {"num_landmarks": 32}}},
      "from_cp": null,
      "stages": ["pretrain", "glue", "lra"]
    }
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from effbert.constants import GLUE_TASKS, LRA_TASKS
from effbert.errors import InputError
from effbert.files import read_json
from effbert.layout import CONFIG_FILE, named_step


class _Section(BaseModel):
    # strict: "64" is not an int; extra=forbid: a misspelt key is an error, not a silent default
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# ---- attention: one class per mechanism, selected by "type" ----

class _ConvSkip(_Section):
    """An optional depthwise convolution over the sequence on V, added to the output (Nystromformer, YOSO-C)."""

    conv_kernel: int | None = Field(
        None, ge=1, description="odd kernel size of the depthwise convolution skip on V (the seeds use 35); null: none"
    )

    @model_validator(mode="after")
    def _odd_kernel(self) -> _ConvSkip:
        if self.conv_kernel is not None and self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd to keep the sequence length (got {self.conv_kernel})")
        return self


class SoftmaxOptions(_Section):
    """Exact attention through torch.nn.functional.scaled_dot_product_attention."""

    type: Literal["softmax"] = "softmax"


class NystromOptions(_ConvSkip):
    """Nystromformer (Xiong et al., AAAI 2021): segment-means landmarks and an iterative pseudoinverse."""

    type: Literal["nystrom"] = "nystrom"
    num_landmarks: int = Field(64, ge=1, description="m, the number of segment-means landmarks")
    pinv_iterations: int = Field(6, ge=1, description="Newton-Schulz iterations for the Moore-Penrose inverse")
    pinv_init: Literal["original", "per_head"] = Field(
        "original",
        description="Z0 scaling: 'original' uses the global max over the batch (the paper's code), "
        "'per_head' the per-(batch, head) max that the authors later recommended",
    )


class YosoOptions(_ConvSkip):
    """YOSO (Zeng et al., ICML 2021): Bernoulli sampling attention by LSH (random-projection hashing)."""

    type: Literal["yoso"] = "yoso"
    hash_bits: int = Field(8, ge=1, le=24, description="tau, bits per hash code (the seeds: 9 for BERT, 10-12 for LRA)")
    num_hashes: int = Field(32, ge=1, description="m, the number of hash functions whose samples are averaged")
    expectation: bool = Field(False, description="YOSO-E: the closed-form expectation (1 - arccos(q.k)/pi)^tau, O(n^2)")
    fast_hash: bool = Field(True, description="hash by fast Hadamard transforms of randomly signed inputs")
    # conv_kernel (inherited): YOSO-C


class LinformerOptions(_Section):
    """Linformer (Wang et al., 2020): keys and values projected along the sequence to k rows."""

    type: Literal["linformer"] = "linformer"
    k: int = Field(256, ge=1, description="projected length")
    share: Literal["none", "heads", "kv", "layers"] = Field(
        "heads",
        description="parameter sharing of the projections E (keys) and F (values): 'none' one pair per head, "
        "'heads' one pair per layer, 'kv' one matrix per layer for both, 'layers' one matrix for the whole model",
    )


class PerformerOptions(_Section):
    """Performer (Choromanski et al., ICLR 2021): FAVOR+ positive orthogonal random features."""

    type: Literal["performer"] = "performer"
    num_features: int = Field(256, ge=1, description="random features per head")
    kernel: Literal["softmax", "relu"] = Field("softmax", description="softmax: FAVOR+ positive features; relu")
    redraw_interval: int | None = Field(1000, ge=1, description="redraw the features every N training calls")


class ReformerOptions(_Section):
    """Reformer (Kitaev et al., ICLR 2020): LSH bucketed attention with shared query-key projections."""

    type: Literal["reformer"] = "reformer"
    num_hashes: int = Field(2, ge=1, description="rounds of hashing")
    bucket_size: int = Field(32, ge=1, description="chunk length; a chunk attends to itself and the one before")


class FnetOptions(_Section):
    """FNet (Lee-Thorp et al., NAACL 2022): the real part of a 2-D Fourier transform instead of attention."""

    type: Literal["fnet"] = "fnet"


class LinearOptions(_Section):
    """Linear attention (Katharopoulos et al., ICML 2020): feature map elu(x) + 1."""

    type: Literal["linear"] = "linear"


class LocalOptions(_Section):
    """Sliding-window attention: each token attends to the tokens within `window` positions on either side."""

    type: Literal["local"] = "local"
    window: int = Field(64, ge=1)


class SlabLinearOptions(_ConvSkip):
    """SLAB's simplified linear attention (Guo et al., ICML 2024): ReLU features, normalised, plus a depthwise
    convolution on V (one filter per head-dim channel, shared by the heads, with a bias)."""

    type: Literal["slab_linear"] = "slab_linear"
    conv_kernel: int | None = Field(
        5, ge=1, description="odd kernel size of the depthwise convolution on V (the authors' 5, over 5 x 5 image "
        "patches; here over 5 tokens); null: none (plain ReLU linear attention)"
    )


class NormLinearOptions(_Section):
    """TransNormer's NormAttention (Qin et al., EMNLP 2022): phi(Q) (phi(K)^T V) without the 1/rowsum scaling,
    a norm over each token's heads instead."""

    type: Literal["norm_linear"] = "norm_linear"
    kernel: Literal["1+elu", "elu"] = Field(
        "1+elu", description="feature map phi: '1+elu' (the authors' TransNormer T2) or 'elu' (T1)")
    norm: Literal["srmsnorm", "layernorm"] = Field(
        "srmsnorm", description="the norm over the concatenated heads: 'srmsnorm' x / (rms(x) + 1e-8), no weights "
        "(the authors' SimpleRMSNorm); 'layernorm' LayerNorm with weight and bias")


class BlockSoftmaxOptions(_Section):
    """TransNormer's DiagAttention: softmax attention within non-overlapping blocks of block_size tokens."""

    type: Literal["block_softmax"] = "block_softmax"
    block_size: int = Field(64, ge=1, description="tokens per block (the authors' chunk size: 64)")
    norm: Literal["none", "srmsnorm", "layernorm"] = Field(
        "none", description="a norm over the concatenated heads after the attention, as norm_linear's; the "
        "authors' code applies one ('srmsnorm' in their later settings); 'none': plain block softmax")


AttentionConfig = Annotated[
    SoftmaxOptions | NystromOptions | YosoOptions | LinformerOptions | PerformerOptions | ReformerOptions
    | FnetOptions | LinearOptions | LocalOptions | SlabLinearOptions | NormLinearOptions | BlockSoftmaxOptions,
    Field(discriminator="type"),
]
_ATTENTION_OPTIONS = {options.model_fields["type"].default: options
                      for options in get_args(get_args(AttentionConfig)[0])}
ATTENTION_TYPES = tuple(_ATTENTION_OPTIONS)


class LayerAttention(_Section):
    """One entry of model.layer_attention: an attention for the layers from..to (0-based, inclusive)."""

    layers: list[Annotated[int, Field(ge=0)]] = Field(
        ..., min_length=2, max_length=2, description="[from, to], 0-based and inclusive: [10, 11] is the last two "
        "layers of 12")
    attention: AttentionConfig

    @model_validator(mode="after")
    def _ordered(self) -> LayerAttention:
        if self.layers[0] > self.layers[1]:
            raise ValueError(f"layers must be [from, to] with from <= to (got {self.layers})")
        return self


class ModelConfig(_Section):
    vocab_size: int | None = Field(None, ge=1, description="null: taken from the tokenizer")
    max_seq_len: int = Field(512, ge=2, description="position embeddings; also the shard length")
    hidden_size: int = Field(768, ge=1)
    num_layers: int = Field(12, ge=1)
    num_heads: int = Field(12, ge=1)
    ffn_size: int = Field(3072, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="on attention weights, where a mechanism has them"
    )
    norm: Literal["post", "pre", "pre_rmsnorm", "pre_crmsnorm", "peri", "pre_batchnorm"] = Field(
        "post", description="post: BERT's LayerNorm after each residual sum; pre: LayerNorm on each sublayer's input "
        "and a final one; pre_rmsnorm, pre_crmsnorm: pre with RMSNorm, or with CRMSNorm on a residual stream "
        "stored as d-1 entries (Jiang et al. 2023; effbert convert-norm makes them from a pre model); peri: "
        "LayerNorm on each sublayer's input and output (Peri-LN); pre_batchnorm: pre with SLAB's progressive "
        "re-parameterised BatchNorm (PRepBN, Guo et al. 2024) in place of every LayerNorm but the embeddings'. "
        "See effbert.model.norms")
    norm_scaling: bool = Field(
        False, description="LayerNorm Scaling (Sun et al. 2025): the input norms of layer l (1-based) scaled by "
        "1/sqrt(l); not with norm 'post'")
    layer_norm_eps: float = Field(1e-12, gt=0.0)
    batchnorm_warmup: int = Field(
        0, ge=0, description="pre_batchnorm: optimizer steps of plain LayerNorm before the decay starts "
        "(the authors' `warm`, 0 in their code)")
    batchnorm_decay_steps: int = Field(
        300000, ge=1, description="pre_batchnorm: optimizer steps over which the LayerNorm share gamma falls "
        "linearly from 1 to 0, after which every norm is RepBN alone (the authors' `step`, 300000 in their code)")
    type_vocab_size: int = Field(2, ge=1)
    attention: AttentionConfig = SoftmaxOptions()
    layer_attention: list[LayerAttention] = Field(
        [], description="a per-layer schedule over model.attention: each entry's attention (a whole attention "
        "with its \"type\", as model.attention) in the 0-based layers from..to (inclusive); layers no entry names "
        "keep model.attention. E.g. [{\"layers\": [10, 11], \"attention\": {\"type\": \"softmax\"}}]")

    @model_validator(mode="after")
    def _settings_fit(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.norm_scaling and self.norm == "post":
            raise ValueError("norm_scaling scales the norm on each sublayer's input, which norm 'post' has not: "
                             "set norm to 'pre', 'pre_rmsnorm', 'pre_crmsnorm' or 'peri', or norm_scaling to false")
        if self.norm == "pre_crmsnorm" and self.hidden_size < 2:
            raise ValueError("norm 'pre_crmsnorm' stores hidden_size - 1 entries: hidden_size must be at least 2")
        self._schedule_fits()
        return self

    def _schedule_fits(self) -> None:
        taken: dict[int, int] = {}  # layer -> the entry that names it
        for i, entry in enumerate(self.layer_attention):
            first, last = entry.layers
            if last >= self.num_layers:
                raise ValueError(f"layer_attention[{i}].layers: {entry.layers} goes past the last layer "
                                 f"{self.num_layers - 1} (layers are 0-based, num_layers {self.num_layers})")
            clash = sorted({taken[layer] for layer in range(first, last + 1) if layer in taken})
            if clash:
                raise ValueError(f"layer_attention[{i}].layers: {entry.layers} overlaps layer_attention{clash}")
            taken |= dict.fromkeys(range(first, last + 1), i)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def layer_attentions(self) -> list[AttentionConfig]:
        """The attention of each layer (0-based): model.attention, with layer_attention's entries over it."""
        found = [self.attention] * self.num_layers
        for entry in self.layer_attention:
            first, last = entry.layers
            found[first:last + 1] = [entry.attention] * (last - first + 1)
        return found

    def for_layer(self, layer: int) -> ModelConfig:
        """This config with layer `layer`'s (0-based) attention as model.attention: what a mechanism reads."""
        attention = self.layer_attentions()[layer]
        return self if attention == self.attention else self.model_copy(update={"attention": attention})

    @property
    def attention_name(self) -> str:
        """The mechanism's name for tables: its type, or each run of layers' type under a schedule
        ("nystrom[0-9]+softmax[10-11]")."""
        kinds = [a.type for a in self.layer_attentions()]
        if len(set(kinds)) == 1 and not self.layer_attention:
            return kinds[0]
        runs, start = [], 0
        for i in range(1, len(kinds) + 1):
            if i == len(kinds) or kinds[i] != kinds[start]:
                runs.append(f"{kinds[start]}[{start}]" if i - 1 == start else f"{kinds[start]}[{start}-{i - 1}]")
                start = i
        return "+".join(runs)


class PretrainConfig(_Section):
    tokenizer: str = Field("bpe-wiki-books", description="a tokenizer named in the Snakemake config's `tokenizers`")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(10000, ge=0)
    steps: int = Field(500000, ge=1)
    micro_batch_size: int | None = Field(
        None, ge=1, description="batch per device and step; batch_size is reached by accumulation (null: none)"
    )
    schedule: Literal["linear", "cosine"] = Field("linear", description="decay after the warmup, to zero")
    grad_clip: float = Field(1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on a GPU, fp32 on CPU")
    attention_fp32: bool = Field(
        False,
        description="run every attention mechanism wholly in float32 under autocast (the seeds' behaviour); off: each "
        "computes in the autocast dtype and upcasts only the parts that need float32 (see effbert.attention)",
    )
    compile: bool = Field(False, description="torch.compile the model")
    tensorboard: bool = Field(True, description="also write TensorBoard events (when tensorboard is installed)")
    sop: bool = Field(True, description="sentence-order prediction head beside MLM")
    masking: Literal["static", "dynamic"] = Field(
        "static", description="static: the masks drawn when the shards were built (dupe_factor copies), as the "
        "Nystromformer runs did; dynamic: masks drawn anew every epoch by the same rule (RoBERTa, the YOSO runs)")
    log_every: int = Field(100, ge=1)
    eval_every: int = Field(5000, ge=1)
    eval_batches: int = Field(50, ge=1, description="dev batches per evaluation")
    checkpoint_every: int = Field(5000, ge=1)
    keep_checkpoints: int | None = Field(
        None, ge=1,
        description="after each checkpoint is saved, delete the older ones, oldest first, until the newest N are "
        "left; the one glue.checkpoint names, step 0 (imported weights) and any that a model folder's from_cp "
        "names are kept besides them. null: keep every checkpoint",
    )
    seed: int = 0
    on_change: Literal["stop", "continue", "restart"] = Field(
        "stop",
        description="when the newest checkpoint was made under other settings: 'stop' with a message naming the "
        "changed keys; 'continue' from it with the new settings (where the weights still fit: lr, steps, "
        "schedule, batch size, ...); 'restart' at step 0 with the old checkpoints moved to checkpoints/stale-<time>/",
    )


def _as_list(value: object) -> object:
    """A single value where a list is expected means a one-point list: "lr": 3e-5 is [3e-5]."""
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value


class GlueConfig(_Section):
    """Fine-tuning protocol: every (batch_size, lr) grid point is run with every seed; the grid point whose
    dev scores aggregate best (`selection`) is reported, with the spread over its seeds."""

    batch_size: list[Annotated[int, Field(ge=1)]] = Field([16, 32], min_length=1, description="grid")
    lr: list[Annotated[float, Field(gt=0.0)]] = Field([2e-5, 3e-5, 4e-5, 5e-5], min_length=1, description="grid")
    epochs: Annotated[int, Field(ge=1)] | dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="null: each task's default (effbert.data.glue); an int for every task; or {task: epochs}"
    )
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    selection: Literal["mean", "median", "max"] = Field(
        "mean", description="how a grid point's seeds are aggregated, both to choose the point and to report it"
    )
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_seq_len: int | None = Field(None, ge=2, description="null: the model's max_seq_len")
    checkpoint: str = Field("last", description="'last', a step number, a cp-NNNN.pt file name, or a path to a .pt")

    @property
    def checkpoint_step(self) -> int | None:
        """The pretraining step `checkpoint` names ("1000", "cp-1000.pt"); None for 'last' or a path."""
        return named_step(self.checkpoint)

    _lists = field_validator("batch_size", "lr", "seeds", mode="before")(_as_list)

    @model_validator(mode="after")
    def _distinct(self) -> GlueConfig:
        for name in ("batch_size", "lr", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice ({values})")
        if isinstance(self.epochs, dict):
            unknown = sorted(set(self.epochs) - set(GLUE_TASKS))
            if unknown:
                raise ValueError(f"epochs names unknown GLUE tasks {unknown}; expected some of {sorted(GLUE_TASKS)}")
        return self


class LraTaskConfig(_Section):
    """Overrides of a Long Range Arena task's protocol (null: the published protocol's value)."""

    steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    micro_batch: int | None = Field(None, ge=1, description="rows per forward pass (gradient accumulation)")
    lr: float | None = Field(None, gt=0.0)
    warmup_steps: int | None = Field(None, ge=0)
    eval_every: int | None = Field(None, ge=1)
    max_len: int | None = Field(None, ge=2)
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    ffn_size: int | None = Field(None, ge=1)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    self_pretrain_steps: int | None = Field(
        None, ge=0, description="masked-LM steps on the task's own training inputs first; null: lra.self_pretrain_steps"
    )
    mask_prob: float | None = Field(None, gt=0.0, lt=1.0, description="masked share of real tokens in self-pretraining")
    seeds: list[int] | None = Field(None, min_length=1, description="null: lra.seeds")
    attention: dict[str, Any] | None = Field(
        None, description="attention options for this task over model.attention, e.g. {\"hash_bits\": 11} "
        "(YOSO's per-task tau); with another \"type\", a whole attention of its own"
    )


class LraConfig(_Section):
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one run per seed; the task's result is their mean")
    self_pretrain_steps: int = Field(
        0, ge=0, description="the switch for every task: masked-LM steps on its own inputs before training (0: off)"
    )
    listops: LraTaskConfig = LraTaskConfig()
    text: LraTaskConfig = LraTaskConfig()
    retrieval: LraTaskConfig = LraTaskConfig()
    image: LraTaskConfig = LraTaskConfig()
    pathfinder: LraTaskConfig = LraTaskConfig()
    pathx: LraTaskConfig = LraTaskConfig()

    @model_validator(mode="after")
    def _distinct_seeds(self) -> LraConfig:
        for where, seeds in [("seeds", self.seeds)] + [
            (f"{task}.seeds", getattr(self, task).seeds) for task in LRA_TASKS
        ]:
            if seeds is not None and len(set(seeds)) != len(seeds):
                raise ValueError(f"lra.{where}: repeated seeds {seeds}")
        return self

    def task_seeds(self, task: str) -> list[int]:
        """The seeds a task runs with: its own list, else lra.seeds."""
        return list(getattr(self, task).seeds or self.seeds)

    def task_self_pretrain_steps(self, task: str) -> int:
        own = getattr(self, task).self_pretrain_steps
        return self.self_pretrain_steps if own is None else own


STAGES = ("pretrain", "glue", "lra")
_ATTENTION = TypeAdapter(AttentionConfig)


def _task_attention(base: BaseModel, override: dict[str, Any] | None) -> BaseModel:
    """model.attention with a task's options over it; another "type" replaces it whole."""
    if not override:
        return base
    if override.get("type", base.type) != base.type:
        return _ATTENTION.validate_python(override, strict=True)
    return _ATTENTION.validate_python(base.model_dump() | override, strict=True)


class Config(_Section):
    description: str = Field("", description="what this folder reproduces and where its settings come from "
                             "(read by people and listed in the README; no run reads it)")
    model: ModelConfig = ModelConfig()
    pretraining: PretrainConfig = PretrainConfig()
    glue: GlueConfig = GlueConfig()
    lra: LraConfig = LraConfig()
    from_cp: str | None = Field(
        None, description="a checkpoint (path relative to the model folder) to initialise pretraining from"
    )
    import_hf: str | None = Field(
        None, description="a HuggingFace BERT folder (config.json, weights, vocab; path relative to the model "
        "folder) imported with model.attention as this folder's weights, in place of pretraining (stages without "
        "'pretrain'); GLUE fine-tunes them"
    )
    stages: list[Literal["pretrain", "glue", "lra"]] = Field(
        list(STAGES), min_length=1, description="what the DAG runs for this folder: pretraining, GLUE fine-tuning "
        "(of the pretrained or imported weights), Long Range Arena (from scratch at the LRA protocol)"
    )

    @model_validator(mode="after")
    def _stages_fit(self) -> Config:
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages lists a stage twice ({self.stages})")
        pretrains = "pretrain" in self.stages
        if self.import_hf and pretrains:
            raise ValueError("import_hf gives this folder imported weights in place of pretraining: remove "
                             "'pretrain' from stages, or pretrain in another folder whose from_cp names "
                             "this one's checkpoints/cp-0000.pt")
        if self.from_cp and not pretrains:
            raise ValueError("from_cp starts pretraining, but stages has no 'pretrain'")
        if "glue" in self.stages and not (pretrains or self.import_hf):
            raise ValueError("stages: 'glue' fine-tunes pretrained weights: add 'pretrain' to stages, or name a "
                             "HuggingFace BERT folder to import in import_hf")
        if "glue" in self.stages:
            self._glue_checkpoint_is_made(pretrains)
        for task in LRA_TASKS:
            try:
                self.lra_attention(task)
            except ValidationError as e:
                found = "; ".join(_describe(err, f"lra.{task}.attention") for err in e.errors())
                raise ValueError(found) from None
        return self

    def _glue_checkpoint_is_made(self, pretrains: bool) -> None:
        """glue.checkpoint names a checkpoint, and (a step of this folder's pretraining) one that it saves: found
        wrong only after pretraining, it would cost the run's time first."""
        spec, n = self.glue.checkpoint, self.glue.checkpoint_step
        if spec != "last" and n is None and not spec.endswith(".pt"):
            raise ValueError(f"glue.checkpoint {spec!r}: expected 'last', a step number, a cp-NNNN.pt file name or "
                             "a path to a .pt checkpoint")
        run = self.pretraining
        if n is not None and pretrains:
            if n > run.steps or (n % run.checkpoint_every and n != run.steps):
                raise ValueError(f"glue.checkpoint {spec!r}: pretraining saves steps {run.checkpoint_every}, "
                                 f"{2 * run.checkpoint_every}, ... (pretraining.checkpoint_every) and its last, "
                                 f"{run.steps}; step {n} is none of them")

    def lra_attention(self, task: str) -> AttentionConfig:
        """The attention an LRA task trains with: model.attention, with lra.<task>.attention over it."""
        return _task_attention(self.model.attention, getattr(self.lra, task).attention)


def check_attention(attention: object, source: str) -> AttentionConfig:
    """An attention given outside a config.json (a command-line option such as import-hf's --attention), checked
    as config.json's model.attention is; errors name `source`, not a file the user did not type it in."""
    try:
        return _ATTENTION.validate_python(attention)
    except ValidationError as e:
        found = "; ".join(_describe(err, "attention").removeprefix("attention.").removeprefix("attention: ")
                          for err in e.errors())
        raise InputError(f"{source}: {found}") from None


def _describe(error: dict, prefix: str = "") -> str:
    # pydantic puts the union tag into the location (model.attention.nystrom.x): drop it, and say which it was
    loc = [str(p) for p in error["loc"]]
    before = ["attention" if prefix else "", *loc]  # the key before each of loc's (a prefix ends in "attention")
    kinds = [p for i, p in enumerate(loc) if before[i] == "attention" and p in ATTENTION_TYPES]
    loc = [p for i, p in enumerate(loc) if not (before[i] == "attention" and p in ATTENTION_TYPES)]
    where = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
    if where == "(top level)" and error["type"] == "value_error":  # a check across sections names its own keys
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        if not kinds:
            return f"{where}: unknown key"
        options = [name for name in _ATTENTION_OPTIONS[kinds[-1]].model_fields if name != "type"]
        return f"{where}: unknown key ({kinds[-1]} attention's options: {', '.join(options) or 'none'})"
    if error["type"] in ("model_attributes_type", "dict_type", "model_type"):
        return f"{where}: expected a JSON object, got {error['input']!r:.60}"
    if error["type"] == "union_tag_not_found":
        return f'{where}: no "type" key; expected one of {list(ATTENTION_TYPES)}'
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"{where}: unknown attention type {tag!r}; expected one of {list(ATTENTION_TYPES)}"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{where}: {msg} (got {error['input']!r})" if not isinstance(error["input"], dict) else f"{where}: {msg}"


def problems_of(error: ValidationError) -> list[str]:
    """A validation error's problems, each "key: what is wrong" on one line (keys dotted from the top)."""
    return [_describe(err) for err in error.errors()]


class ConfigError(InputError):
    """A config that does not validate: every problem on the error's one line, and as a list (`problems`, each
    "key: what is wrong") for callers that name the config otherwise."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: invalid config: {'; '.join(problems)}")
        self.problems = problems


def parse_config(data: object, source: str) -> Config:
    """Validate a decoded config.json; `source` names the file in errors."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, problems_of(e)) from None


def load_config(path: str | Path) -> Config:
    """Read a config.json (or a model folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    try:
        data = read_json(path, unique_keys=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    return parse_config(data, str(path))


def config_json(config: Config) -> dict:
    """The fully resolved config, as stored inside checkpoints so that a checkpoint explains itself."""
    return config.model_dump(mode="json")
