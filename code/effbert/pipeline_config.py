"""The Snakemake config (config/config.yaml, config/demo.yaml): one declaration per setting, with its default.

The data stages' settings (documents, shards, LRA generation) are declared here once; the rules
(workflow/rules/common.smk) read the config through `parse_pipeline_config`, which names every problem on one
line, the CLI builds its flags from these models, and each stage takes its settings as one of them. For editors
and other tools, workflow/schemas/config.schema.yaml is generated from them:

    python -m effbert.pipeline_config > workflow/schemas/config.schema.yaml

(a test fails when the committed schema differs from the generated one).
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from effbert.config import ATTENTION_TYPES, AttentionConfig, ConfigError, problems_of
from effbert.constants import GLUE_TASKS, LRA_TASKS

Source = Literal["wiki", "bookcorpus", "stories", "realnews"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DocumentsSettings(_Strict):
    """`effbert documents`: raw dump -> documents. Passed to build_documents as one object."""

    min_words: int | None = Field(None, ge=0, description="drop shorter documents (default: wiki 128, realnews 1000, "
                                                          "else 0)")
    # a float down to one byte (2**-20 MB), so that a test can cut a small file into units
    chunk_mb: float = Field(64, ge=2**-20, description="approximate size of a resumable work unit, in MB (2**20 "
                                                      "bytes)")
    max_sentences: int = Field(500, ge=1, description="bookcorpus/stories: end a document after this many "
                                                       "sentences (bounded memory)")

    @property
    def chunk_bytes(self) -> int:
        """chunk_mb in bytes; exact for any whole number of bytes, since 2**20 is a power of two."""
        return round(self.chunk_mb * 2**20)


class SourceConfig(DocumentsSettings):
    input: str = Field(description="a dump file or a folder of dump files")


class TokenizerFile(_Strict):
    file: str = Field(description="a tokenizer.json, vocab.txt or vocab.json (with merges.txt beside it) to import")


class TrainedTokenizer(_Strict):
    kind: Literal["bpe", "wordpiece"]
    vocab_size: int = Field(ge=1)
    sources: list[Source]
    lowercase: bool = False


class ShardRecipe(_Strict):
    """How `effbert shards` turns documents into fixed-length pretraining instances (BERT's recipe, with SOP):
    with the inputs, what a shard set's bytes depend on. Passed to build_shards as one object."""

    dev_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents held out for evaluation")
    masked_lm_prob: float = Field(0.15, gt=0, lt=1, description="share of tokens masked for MLM")
    short_seq_prob: float = Field(0.1, ge=0, le=1, description="share of instances cut shorter (as BERT did)")
    dupe_factor: int = Field(1, ge=1, description="passes over the training documents, each with new masks")
    seed: int = 0


class ShardSettings(ShardRecipe):
    """`effbert shards` as the DAG runs it: the recipe, the processes, and how much of each source is kept."""

    workers: int = Field(1, ge=1, description="processes for tokenising and building instances; the output is "
                                             "the same for any value")
    sample_probs: dict[Source, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=dict, description="share of a source's documents kept, above 0 and at most 1 (default 1); "
                                          "Nystromformer kept stories and realnews at 1/3")


class ShardSetSettings(ShardSettings):
    """One shard set: the settings above and the corpora its documents come from."""

    sources: list[Source] = Field(min_length=1, description="the sources whose documents the shards are built from")

    @model_validator(mode="after")
    def _sampled_sources_are_used(self) -> ShardSetSettings:
        unused = sorted(set(self.sample_probs) - set(self.sources))
        if unused:  # a share for a source the set does not read: most likely a source left out by mistake
            raise ValueError(f"sample_probs names {unused}, which sources {self.sources} does not list")
        return self


def _overrides(settings: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A model of the same fields as `settings`, each optional and None by default (bounds and descriptions kept):
    values that override some of them. Derived, so a setting is declared once."""
    fields: dict = {}
    for key, f in settings.model_fields.items():
        kind = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation  # bounds: on the value
        fields[key] = (kind | None, Field(None, description=f.description))
    return create_model(name, __base__=_Strict, __doc__=doc, __module__=__name__, **fields)


ShardOverride = _overrides(ShardSetSettings, "ShardOverride", "Settings for one shard length over the defaults (the "
                           "seeds' 4096-token set added Stories and RealNews).")


class ShardsConfig(ShardSetSettings):
    by_length: dict[int, ShardOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _each_length_samples_its_sources(self) -> ShardsConfig:
        for length in self.by_length:
            merged = self.for_length(length)
            unused = sorted(set(merged.sample_probs) - set(merged.sources))
            if unused:
                raise ValueError(f"by_length {length}: sample_probs names {unused}, which its sources "
                                 f"{merged.sources} does not list")
        return self

    def for_length(self, length: int) -> ShardsConfig:
        """The settings of one shard length: the defaults, overridden by by_length[length]."""
        override = self.by_length.get(int(length))
        return self if override is None else self.model_copy(update=override.model_dump(exclude_none=True))


class GlueDataConfig(_Strict):
    dir: str = Field(description="the GLUE data folder in the official layout")
    tasks: list[Literal[GLUE_TASKS]]  # type: ignore[valid-type]
    imdb_dir: str | None = Field(None, description="the folder holding aclImdb/ for the IMDB task (optional, beside "
                                 "GLUE); null: lra.dir, the files LRA Text reads")


class ListopsSettings(_Strict):
    """`effbert lra-data --task listops`: ListOps by the LRA generator's rules. Passed to generate_listops as one
    object."""

    train: int = Field(96000, ge=1)
    val: int = Field(2000, ge=1)
    test: int = Field(2000, ge=1)
    min_length: int = Field(500, ge=1)
    max_length: int = Field(2000, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _length_window(self) -> ListopsSettings:
        if not self.min_length < self.max_length - 1:  # a tree is kept when min_length < length < max_length
            raise ValueError(f"min_length must be below max_length - 1, so that some length fits "
                             f"strictly between them (got min_length {self.min_length}, max_length {self.max_length})")
        return self


class PathfinderSettings(_Strict):
    """`effbert lra-data --task pathfinder`: images in the release's layout (resolution and difficulty: the task's
    protocol row, pathfinder 32, pathx 128). Passed to generate_pathfinder as one object."""

    n_images: int = Field(200000, ge=10, description="all images; read as 80/10/10 train/dev/test")
    images_per_batch: int = Field(1000, ge=1, description="images per metadata file")
    workers: int = Field(1, ge=1, description="processes (the same bytes for any number)")
    seed: int = 0


class LraGenerate(_Strict):
    listops: ListopsSettings | None = None
    pathfinder: PathfinderSettings | None = None
    pathx: PathfinderSettings | None = None


class LraDataConfig(_Strict):
    dir: str = Field(description="the lra_release folder")
    tasks: list[Literal[LRA_TASKS]] = Field(  # type: ignore[valid-type]
        description="LRA tasks to train (seeds and protocol overrides are each model's config.json lra section)")
    generate: LraGenerate | None = Field(None, description="tasks to generate instead of reading the release")


class SwapConfig(_Strict):
    """`effbert swap-eval` (train/swap_eval.py), and in the DAG the target `swap` (not part of `all`) ->
    <results>/swap.{csv,md,png}."""

    hf_dir: str | None = Field(None, description="a HuggingFace BERT folder; null: the swap target does nothing")
    source: str = Field("wiki", description="the source whose documents are compared on (<data>/text/<source>)")
    variants: list[str] = Field(
        ["softmax", "nystrom:num_landmarks=16", "nystrom:num_landmarks=32", "nystrom:num_landmarks=64",
         "nystrom:num_landmarks=128", "yoso", "linformer:k=128", "performer", "linear", "local", "fnet"],
        min_length=1, description="mechanisms with options swapped in, e.g. nystrom:num_landmarks=64 "
        "linformer:k=128,share=kv fnet")
    passages: int = Field(32, ge=2, description="documents compared on; the rest are the adaptation text")
    adapt_steps: int = Field(0, ge=0, description="masked-LM steps per swapped model (0: zero-shot only)")
    cost_length: int = Field(512, ge=0, description="n for each layer's time and memory (0: not measured)")
    sts: bool = Field(False, description="also Spearman on <glue.dir>/STS-B/dev.tsv")


# effbert bench attention's row of the explicit O(n^2) softmax, the paper's baseline: declared here, below the bench
# and effbert.report.efficiency, which import it, so that the config can name it without importing torch
NAIVE_SOFTMAX = "naive-softmax"
# a variant's label is a command-line word and a csv cell: no leading "-" (a flag), no spaces, quotes or commas
VariantLabel = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]


class EfficiencyConfig(_Strict):
    """`effbert bench attention` as the target `efficiency` runs it (workflow/rules/efficiency.smk; not part of
    `all`) -> <results>/efficiency.{csv,png,md}. Null lengths and mechanisms: the bench's own defaults for the device
    it runs on (effbert.bench.attention.bench_attention), so that each is declared once."""

    lengths: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, description="sequence lengths n; null: the bench's (512..4096 on CPU, 512..16384 on a GPU)")
    mechanisms: list[str] | None = Field(
        None, min_length=1, description="rows to measure: registered mechanisms, naive-softmax and variants' labels "
        "(softmax, the baseline, always); null: every mechanism, each followed by its variants, then naive-softmax")
    variants: dict[VariantLabel, AttentionConfig] = Field(
        default_factory=dict, description="label -> a mechanism and its options, as a model's attention section "
        "({type: nystrom, num_landmarks: 32}): a row of its own beside the mechanism's; a mechanism's own name sets "
        "that row's options. Measured when mechanisms lists the label (null mechanisms: every variant)")
    repeats: int = Field(5, ge=1, description="timed forward+backward calls per (mechanism, n); the median is kept")
    threads: int = Field(4, ge=1, description="the job's threads: CPU threads of each measurement (Snakemake "
                         "lowers it to --cores)")

    @model_validator(mode="after")
    def _known_rows(self) -> EfficiencyConfig:
        for label, options in self.variants.items():
            if label in ATTENTION_TYPES and options.type != label:  # the csv's row names must say what ran
                raise ValueError(f"variants.{label}: a mechanism's own name can only set its options (type "
                                 f"{label}, got {options.type})")
            if label == NAIVE_SOFTMAX:
                raise ValueError(f"variants.{label}: {NAIVE_SOFTMAX} is the bench's explicit softmax, not a label")
        known = {*ATTENTION_TYPES, NAIVE_SOFTMAX, *self.variants}
        unknown = [name for name in self.mechanisms or [] if name not in known]
        if unknown:
            raise ValueError(f"mechanisms: unknown {unknown}; known: {[*ATTENTION_TYPES, NAIVE_SOFTMAX]} and the "
                             f"labels of variants {sorted(self.variants)}")
        return self

    def bench_args(self) -> list[str]:
        """`effbert bench attention`'s flags for these settings (--threads aside: the job's threads). Variants go in
        --options (label -> options with "type"); lengths and mechanisms only when set, else the bench's defaults."""
        args = ["--repeats", str(self.repeats)]
        if self.lengths:
            args += ["--lengths", *map(str, self.lengths)]
        if self.mechanisms:
            args += ["--mechanisms", *self.mechanisms]
        if self.variants:
            # only what was written: a default of the mechanism's Options stays declared there alone
            options = {label: attention.model_dump(mode="json", exclude_unset=True)
                       for label, attention in self.variants.items()}
            args += ["--options", json.dumps(options, sort_keys=True)]
        return args

    def bench_command_args(self) -> str:
        """bench_args as one shell-quoted string, for a rule's params."""
        return shlex.join(self.bench_args())


class PipelineConfig(_Strict):
    models_dir: str = Field(description="folder of model folders, each holding a config.json")
    models: list[str] | None = Field(None, description="names of the model folders to run (null or absent: every "
                                                       "folder with a config.json)")
    data_dir: str = Field(description="where documents, tokenizers and shards are written")
    results_dir: str
    logs_dir: str = "logs"
    container: str = Field("docker://effbert:latest", description="the image every job runs in with "
                           "--software-deployment-method apptainer (docker://<registry>/effbert:<tag>)")
    sources: dict[Source, SourceConfig] = Field(description="raw corpora by source name")
    tokenizers: dict[str, TokenizerFile | TrainedTokenizer] = Field(
        description="tokenizers by name; a model picks one with pretraining.tokenizer")
    shards: ShardsConfig
    glue: GlueDataConfig
    lra: LraDataConfig
    swap: SwapConfig = SwapConfig()
    efficiency: EfficiencyConfig = EfficiencyConfig()


def parse_pipeline_config(data: object, source: str) -> PipelineConfig:
    """Validate the Snakemake config, defaults filled in; a ConfigError names `source` (the config files) and
    every problem as "key: what is wrong", all on one line."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, problems_of(e)) from None


def schema_yaml() -> str:
    """workflow/schemas/config.schema.yaml: the config's JSON schema, for editors and other tools."""
    import yaml  # snakemake's dependency, needed only here

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "description": "The Snakemake config of an effbert run (config/config.yaml, config/demo.yaml). "
                             "Generated from effbert.pipeline_config: edit that, then run "
                             "python -m effbert.pipeline_config > workflow/schemas/config.schema.yaml",
              **PipelineConfig.model_json_schema()}
    return yaml.safe_dump(schema, sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(schema_yaml())
