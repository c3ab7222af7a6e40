"""Pretraining stage: a model folder's config.json + a shard set -> checkpoints and metrics.

Writes models/<name>/checkpoints/cp-NNNN.pt (every one kept unless pretraining.keep_checkpoints says how
many), models/<name>/pretrain.jsonl (every logged step and evaluation), models/<name>/tensorboard/ (when the
tensorboard package is installed) and, last, models/<name>/pretrain.json (the summary the report reads).

Every checkpoint records the run identity it was made under (effbert.train.identity); a rerun resumes
from the newest checkpoint when that identity is the current one, and otherwise stops, continues or
restarts as `pretraining.on_change` says (effbert.train.resume): never silently from step 0.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from effbert.config import Config, ModelConfig, PretrainConfig, config_json, load_config
from effbert.constants import IGNORE
from effbert.data.dynamic_masking import DynamicMasking
from effbert.data.shard_files import ShardDataset, read_manifest, shard_set_digest, verify_shards
from effbert.errors import InputError
from effbert.files import read_json, remove_leftovers, sha256_file, write_json
from effbert.layout import CONFIG_FILE, PRETRAIN_LOG, PRETRAIN_SUMMARY
from effbert.locks import writer_lock
from effbert.model.pretraining import PretrainingModel
from effbert.train.checkpoints import (
    CHECKPOINT_DIR,
    checkpoint_candidates,
    checkpoint_name,
    outdated_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from effbert.train.device import end_distributed, init_distributed, rank_zero_first, seed_everything, set_threads
from effbert.train.identity import checkpoint_identity, digest, pretraining_settings
from effbert.train.initialise import initialise_from
from effbert.train.loop import Execution, Optimisation, Reporting, SeededBatches, fit, run_evaluation
from effbert.train.resume import Start, choose_start

TENSORBOARD_DIR = "tensorboard"


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def dev_metrics(model: PretrainingModel, data: ShardDataset, batch_size: int, max_batches: int,
                device: torch.device) -> dict[str, float]:
    """MLM and SOP accuracy (0-100) over the first `max_batches` dev batches (the same ones every time)."""
    totals: dict[str, float] = {}
    for start in range(0, min(len(data), batch_size * max_batches), batch_size):
        indices = np.arange(start, min(start + batch_size, len(data)))
        out = model(_to(data.batch(indices), device))
        weight = float(out["mlm_count"])
        totals["mlm_loss"] = totals.get("mlm_loss", 0.0) + float(out["mlm_loss"]) * weight
        for key in ("mlm_correct", "mlm_count", "sop_correct", "sop_count"):
            if key in out:
                totals[key] = totals.get(key, 0.0) + float(out[key])
    result = {
        "mlm_loss": totals["mlm_loss"] / max(totals["mlm_count"], 1),
        "mlm_accuracy": 100 * totals["mlm_correct"] / max(totals["mlm_count"], 1),
    }
    if "sop_count" in totals:
        result["sop_accuracy"] = 100 * totals["sop_correct"] / max(totals["sop_count"], 1)
    return result


def _check_shards(cfg: Config, shards_dir: Path, manifest: dict, model_dir: Path) -> tuple[int, str]:
    """Vocabulary size and tokenizer text, after checking the shards fit this model."""
    if manifest["max_seq_len"] != cfg.model.max_seq_len:
        raise InputError(
            f"{shards_dir}/manifest.json: shards are {manifest['max_seq_len']} tokens long but "
            f"model.max_seq_len is {cfg.model.max_seq_len} ({model_dir}/config.json)"
        )
    tok = manifest["tokenizer"]
    tok_path = shards_dir / tok["copy"]  # the shard set's own copy, so a moved shard folder still works
    if not tok_path.is_file() or sha256_file(tok_path) != tok["sha256"]:
        raise InputError(f"{tok_path}: the tokenizer these shards were built with is missing or changed")
    vocab = cfg.model.vocab_size or tok["vocab_size"]
    if vocab < tok["vocab_size"]:
        raise InputError(f"{model_dir}/config.json: model.vocab_size {vocab} is smaller than the vocabulary of the "
                         f"shards' tokenizer, {tok['vocab_size']} ({tok_path}); leave it out to take the tokenizer's")
    return vocab, tok_path.read_text(encoding="utf-8")


def _from_cp_source(model_dir: Path, from_cp: str) -> Path:
    return Path(from_cp) if Path(from_cp).is_absolute() else model_dir / from_cp


def run_identity(cfg: Config, manifest: dict, shard_set: str, from_cp: Path | None) -> dict:
    """This run's identity: its settings and the data it reads (the shard set's digest, tokenizer, the from_cp
    source's identity when that file is there to read)."""
    source = None
    if from_cp is not None and from_cp.is_file():
        source = digest(checkpoint_identity(read_checkpoint(from_cp, mmap=True)))
    data = {"shards": shard_set, "tokenizer": manifest["tokenizer"]["sha256"], "from_cp": source}
    return {**pretraining_settings(cfg), "data": data}


def _start(model_dir: Path, identity: dict, run: PretrainConfig, rank: int, legacy_shards: str) -> Start:
    """choose_start between barriers: every rank has read the checkpoints before rank 0 moves any."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.barrier()
    begin = choose_start(model_dir, identity, run.on_change, run.steps, rank, logs=(PRETRAIN_LOG, TENSORBOARD_DIR),
                         legacy_shards=legacy_shards)
    if distributed:
        dist.barrier()
    if rank == 0 and begin.state is not None and not begin.changed:
        tqdm.write(f"{model_dir}: resuming from {begin.path.name}", file=sys.stderr)
    return begin


def flops_per_token(model: torch.nn.Module, cfg: ModelConfig) -> float:
    """Training FLOPs per token: 6 per parameter (forward + backward) plus softmax attention's scores
    and weighted sum, 12 * layers * hidden * sequence length (the PaLM paper's accounting)."""
    params = sum(p.numel() for p in model.parameters())
    return 6.0 * params + 12.0 * cfg.num_layers * cfg.hidden_size * cfg.max_seq_len


def pretrain(model_dir: str | Path, shards_dir: str | Path, *, device: str | None = None,
             threads: int | None = None) -> dict:
    """Pretrain the model folder's config on a shard set; resumes from its newest matching checkpoint.

    Under torchrun (WORLD_SIZE > 1) every process trains its share of each global batch
    (pretraining.batch_size) with DistributedDataParallel; rank 0 alone writes files."""
    model_dir, shards_dir = Path(model_dir), Path(shards_dir)
    cfg = load_config(model_dir)
    run = cfg.pretraining
    manifest = read_manifest(shards_dir)
    vocab_size, tokenizer_json = _check_shards(cfg, shards_dir, manifest, model_dir)
    set_threads(threads)
    seed_everything(run.seed)
    # one pretraining per folder at a time; the job's rank 0 holds the lock for all its processes
    first = int(os.environ.get("RANK", "0")) == 0
    with writer_lock(model_dir, "pretraining") if first else contextlib.nullcontext():
        rank, world, dev = init_distributed(device)
        completed = False
        try:
            with rank_zero_first():  # the other processes wait here, as long as the shards' first check takes
                if first:
                    remove_leftovers(model_dir / CHECKPOINT_DIR)  # the lock holder is the only writer here
                    verify_shards(shards_dir, vocab_size)
            summary = _pretrain(model_dir, shards_dir, cfg, manifest, vocab_size, tokenizer_json, rank, world, dev)
            completed = True
            return summary
        finally:
            end_distributed(completed)


def _pretrain(model_dir: Path, shards_dir: Path, cfg: Config, manifest: dict, vocab_size: int,
              tokenizer_json: str, rank: int, world: int, dev: torch.device) -> dict:
    run = cfg.pretraining
    model = PretrainingModel(cfg.model, vocab_size, sop=run.sop).to(dev)
    train_data, dev_data = ShardDataset(shards_dir, "train"), ShardDataset(shards_dir, "dev")
    _check_batch_size(model_dir, shards_dir, run, len(train_data), world)

    manifest_sha256 = sha256_file(shards_dir / "manifest.json")
    source = _from_cp_source(model_dir, cfg.from_cp) if cfg.from_cp else None
    identity = run_identity(cfg, manifest, shard_set_digest(manifest, shards_dir / "manifest.json"), source)
    begin = _start(model_dir, identity, run, rank, legacy_shards=manifest_sha256)
    resume = begin.state
    if resume is None and source is not None:
        _start_from(model, model_dir, source, rank)

    def save(step: int, state: dict) -> None:  # the loop's state, and what this run is (over a resumed file's)
        save_checkpoint(model_dir / CHECKPOINT_DIR / checkpoint_name(step), **{
            **state, "config": config_json(cfg), "vocab_size": vocab_size, "tokenizer": tokenizer_json,
            "shards": {"dir": str(shards_dir), "tokenizer_sha256": manifest["tokenizer"]["sha256"],
                       "manifest_sha256": manifest_sha256},
            "identity": identity, "history": begin.history,
        })
        # only once the new file is durably there; fit calls this on rank 0 alone, so one process deletes
        _prune(model_dir, cfg, step)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return dev_metrics(m, dev_data, run.micro_batch_size or run.batch_size, run.eval_batches, dev)

    remask = DynamicMasking(manifest, run.seed) if run.masking == "dynamic" else None

    def make_batch(indices: np.ndarray) -> dict[str, torch.Tensor]:
        batch = train_data.batch(indices)
        return _to(batch if remask is None else remask(batch, indices, batches.epoch), dev)

    batches = SeededBatches(make_batch, len(train_data), run.batch_size, run.seed, micro_batch=run.micro_batch_size,
                            rank=rank, world=world)
    start = time.perf_counter()
    records = fit(
        model, _loss, batches, Optimisation(steps=run.steps, lr=run.lr, weight_decay=run.weight_decay,
                                            warmup_steps=run.warmup_steps, schedule=run.schedule,
                                            grad_clip=run.grad_clip),
        execution=Execution(precision=run.precision, attention_fp32=run.attention_fp32, compile=run.compile),
        report=Reporting(
            log_every=run.log_every, metrics_path=model_dir / PRETRAIN_LOG,
            tensorboard_dir=model_dir / TENSORBOARD_DIR if run.tensorboard else None,
            flops_per_token=flops_per_token(model, cfg.model), desc=f"pretrain {model_dir.name}",
        ),
        counts=functools.partial(_counts, sop=run.sop), evaluate=evaluate, eval_every=run.eval_every,
        on_checkpoint=save, checkpoint_every=run.checkpoint_every, resume=resume, seed=run.seed,
    )
    if rank != 0:
        return {}
    if begin.changed and resume["step"] == run.steps:  # nothing left to train: record the change all the same
        save(run.steps, resume)
    final = next((r for r in reversed(records) if r["split"] == "dev"), None)
    if final is None:  # a finished run whose log is gone: evaluate its weights again
        final = run_evaluation(model, evaluate)
    summary = _summary(model_dir, shards_dir, cfg, records, final, resume, time.perf_counter() - start,
                       identity, begin.history, world, dev)
    write_json(model_dir / PRETRAIN_SUMMARY, summary)
    return summary


def _prune(model_dir: Path, cfg: Config, step: int) -> None:
    """pretraining.keep_checkpoints: delete the checkpoints it no longer keeps, now that step `step`'s is saved. A
    file that cannot be deleted is one warning and the run goes on (disk space is not worth a GPU-weeks run); the
    next checkpoint tries again."""
    keep = cfg.pretraining.keep_checkpoints
    if keep is None:  # the default: nothing is ever deleted unless asked
        return
    for path in outdated_checkpoints(model_dir, keep, newest=step, spared=_spared(model_dir, cfg)):
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # the files after it would most likely fail alike: one line per checkpoint is enough
            tqdm.write(f"warning: {path}: could not delete this old checkpoint ({e.strerror or e}); training goes "
                       "on, and the next checkpoint tries again (pretraining.keep_checkpoints)", file=sys.stderr)
            return


def _spared(model_dir: Path, cfg: Config) -> list[Path]:
    """Checkpoints that pruning keeps: the one GLUE fine-tunes (glue.checkpoint), and any that a from_cp of this
    folder or of a model folder beside it starts from (the DAG runs such a folder after this one)."""
    glue = cfg.glue
    spared = [] if glue.checkpoint == "last" else checkpoint_candidates(model_dir, glue.checkpoint)
    if cfg.from_cp:
        spared.append(_from_cp_source(model_dir, cfg.from_cp))
    return spared + _from_cp_of_neighbours(model_dir)


def _from_cp_of_neighbours(model_dir: Path) -> list[Path]:
    """The from_cp files of the model folders beside `model_dir`, read as plain JSON: a neighbour's config that
    does not validate is its own run's error, never a reason to stop this one."""
    found = []
    for path in sorted(model_dir.parent.glob(f"*/{CONFIG_FILE}")):
        try:
            data = read_json(path)
        except (OSError, InputError):
            continue
        from_cp = data.get("from_cp") if isinstance(data, dict) else None
        if isinstance(from_cp, str) and from_cp:
            found.append(_from_cp_source(path.parent, from_cp))
    return found


def _start_from(model: torch.nn.Module, model_dir: Path, source: Path, rank: int) -> None:
    """A new run of a folder with from_cp: the weights of that checkpoint (train/initialise.py says what fits)."""
    if not source.is_file():
        raise InputError(f"{model_dir}/config.json: from_cp: no checkpoint at {source}")
    log = tqdm.write if rank == 0 else (lambda _: None)
    initialise_from(model, read_checkpoint(source)["model"], log=log, source=str(source))


def _check_batch_size(model_dir: Path, shards_dir: Path, run: PretrainConfig, examples: int, world: int) -> None:
    if examples < run.batch_size:
        raise InputError(f"{shards_dir}: {examples} training instances, fewer than one batch of {run.batch_size}")
    if run.batch_size % world:
        raise InputError(f"{model_dir}/config.json: pretraining.batch_size {run.batch_size} does not split "
                         f"evenly over {world} processes")


def _counts(batch: dict, *, sop: bool) -> dict:
    """The step's loss terms are normalised by these counts: masked positions, and pairs when SOP is on."""
    found = {"mlm": (batch["mlm_labels"] != IGNORE).sum()}
    if sop:
        found["sop"] = len(batch["sop_labels"])
    return found


def _loss(m: torch.nn.Module, batch: dict) -> tuple[dict, dict]:
    out = m(batch)  # losses are means: the loop wants sums, normalised by the step's global counts
    terms = {"mlm": out["mlm_loss"] * out["mlm_count"]}
    metrics = {"mlm_loss": out["mlm_loss"].detach()}
    if "sop_loss" in out:
        terms["sop"] = out["sop_loss"] * out["sop_count"]
        metrics["sop_loss"] = out["sop_loss"].detach()
    return terms, metrics


def _summary(model_dir: Path, shards_dir: Path, cfg: Config, records: list[dict], final: dict, resume: dict | None,
             seconds: float, identity: dict, history: list[dict], world: int, dev: torch.device) -> dict:
    """What the report reads: the last dev evaluation, the tokens trained on and where the run came from."""
    run = cfg.pretraining
    trained = next((r for r in reversed(records) if r["split"] == "train"), None)
    return {
        "model": model_dir.name,
        "attention": cfg.model.attention_name,  # the type, or the per-layer schedule's
        "steps": run.steps,
        "mlm_loss": final["mlm_loss"],
        "mlm_accuracy": final["mlm_accuracy"],
        "sop_accuracy": final.get("sop_accuracy"),
        "train_tokens": trained["tokens"] if trained else resume["tokens"],
        "seconds": seconds,
        "resumed_from": resume["step"] if resume else None,
        "identity": digest(identity),
        "history": history,
        "processes": world,
        "device": str(dev),
        "checkpoint": str(model_dir / CHECKPOINT_DIR / checkpoint_name(run.steps)),
        "shards": str(shards_dir),
    }
