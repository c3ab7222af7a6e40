"""Where everything lives on disk: a model folder's files, run names, and the data and result folders.

The drivers (effbert.train, effbert.report, the CLI) and the Snakemake rules (workflow/rules/common.smk)
build every path through this module, so a layout is spelled once. Folders may be given with Snakemake
wildcards ("demo/models/{model}"): the functions only join names, so the braces pass through unchanged.

    <models>/<name>/config.json                         the model's settings (the user's file)
    <models>/<name>/checkpoints/cp-NNNN.pt              pretraining (or import: cp-0000.pt) checkpoints
    <models>/<name>/pretrain.json, pretrain.jsonl       the pretraining summary and its log
    <models>/<name>/glue/<TASK>/<run>.json              one GLUE run (run: bs<B>-lr<LR>-seed<S>)
    <models>/<name>/glue/<TASK>/<run>/submission/       its leaderboard predictions
    <models>/<name>/glue/<TASK>.json, glue/submission/  the selection among the runs, leaderboard files
    <models>/<name>/lra/<task>/seed-<s>.json            one LRA seed (+ .metrics.jsonl, .self-pretrain.jsonl)
    <models>/<name>/lra/<task>.json                     the seeds gathered
    <data>/text/<source>/, tokenizers/<name>/, <length>-<tokenizer>/   documents, tokenizers, shards
    <results>/{pretrain,glue,lra}.{csv,md,html}         the report's tables (tidy, to read, as a page)
    <results>/{pretrain-loss,lra-accuracy,lra-cost}.png  the report's plots
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from effbert.errors import InputError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
PRETRAIN_SUMMARY = "pretrain.json"
PRETRAIN_LOG = "pretrain.jsonl"
GLUE_DIR = "glue"
LRA_DIR = "lra"
SUBMISSION_DIR = "submission"
REPORT_TABLES = ("pretrain", "glue", "lra")
SWAP_TABLE = "swap"  # <results>/swap.{csv,md,png}: `effbert swap-eval` (pretrained BERT with swapped attention)
REPORT_TABLE_FORMATS = ("csv", "md", "html")
REPORT_PLOTS = ("pretrain-loss", "lra-accuracy", "lra-cost")
CHECKPOINT_PATTERN = re.compile(r"cp-(\d+)\.pt$")
GLUE_RUN_PATTERN = r"bs(\d+)-lr([0-9.e+-]+)-seed(-?\d+)"
GLUE_RUN_WILDCARD = GLUE_RUN_PATTERN.replace("(", "(?:")  # the same names, without groups (Snakemake)


def checkpoint_name(step: int) -> str:
    return f"cp-{step:04d}.pt"


def named_step(spec: str) -> int | None:
    """The pretraining step a checkpoint spec names ("75", "cp-75.pt", "cp-0075.pt"); None for 'last' or a path."""
    found = re.fullmatch(r"(?:cp-)?(\d+)(?:\.pt)?", spec)
    return int(found.group(1)) if found else None


def imported_checkpoint(model_dir: str | Path) -> Path:
    """Where the import stage puts a model folder's weights (the checkpoint of step 0)."""
    return Path(model_dir) / CHECKPOINT_DIR / checkpoint_name(0)


@dataclass(frozen=True)
class GlueRun:
    """One fine-tuning run: a grid point and a seed; its name is its file name."""

    batch_size: int
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"bs{self.batch_size}-lr{self.lr:g}-seed{self.seed}"

    @classmethod
    def parse(cls, name: str) -> GlueRun:
        found = re.fullmatch(GLUE_RUN_PATTERN, name)
        if not found:
            raise InputError(f"{name!r} is not a GLUE run name; expected e.g. bs32-lr3e-05-seed0")
        return cls(int(found[1]), float(found[2]), int(found[3]))


def glue_run_path(model_dir: str | Path, task: str, run: str) -> Path:
    """One run's result; `run` is a GlueRun's name (or a Snakemake wildcard)."""
    return Path(model_dir) / GLUE_DIR / task / f"{run}.json"


def glue_run_submission_dir(model_dir: str | Path, task: str, run: str) -> Path:
    """One run's leaderboard predictions; the selected run's are copied to glue_submission_dir."""
    return glue_run_path(model_dir, task, run).with_suffix("") / SUBMISSION_DIR


def glue_result(model_dir: str | Path, task: str) -> Path:
    return Path(model_dir) / GLUE_DIR / f"{task}.json"


def glue_submission_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / GLUE_DIR / SUBMISSION_DIR


def lra_seed_path(model_dir: str | Path, task: str, seed: int | str, suffix: str = ".json") -> Path:
    """One seed's result (suffix .json), its log (.metrics.jsonl) or its self-pretraining log."""
    return Path(model_dir) / LRA_DIR / task / f"seed-{seed}{suffix}"


def lra_result(model_dir: str | Path, task: str) -> Path:
    return Path(model_dir) / LRA_DIR / f"{task}.json"


def text_dir(data_dir: str | Path, source: str) -> Path:
    """One source's documents folder."""
    return Path(data_dir) / "text" / source


def tokenizer_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "tokenizers" / name


def tokenizer_file(data_dir: str | Path, name: str) -> Path:
    return tokenizer_dir(data_dir, name) / "tokenizer.json"


def shards_dir(data_dir: str | Path, max_seq_len: int | str, tokenizer: str) -> Path:
    """A shard set, named by its length and tokenizer, as the seeds named theirs (512-roberta)."""
    return Path(data_dir) / f"{max_seq_len}-{tokenizer}"


def report_table(results_dir: str | Path, table: str, ext: str) -> Path:
    return Path(results_dir) / f"{table}.{ext}"


def report_plot(results_dir: str | Path, plot: str) -> Path:
    return Path(results_dir) / f"{plot}.png"


# <results>/efficiency.{csv,md,png}: `effbert bench attention` (csv, png) and the page beside the Nystromformer
# paper's Table 1 (md: effbert.report.efficiency); Snakemake's opt-in `efficiency` target
EFFICIENCY_TABLE = "efficiency"
EFFICIENCY_FORMATS = ("csv", "md", "png")


def efficiency_file(results_dir: str | Path, ext: str) -> Path:
    return report_table(results_dir, EFFICIENCY_TABLE, ext)
