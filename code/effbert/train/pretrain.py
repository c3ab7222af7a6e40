"""Pretraining stage: a model folder's config.json + a shard set -> checkpoints and metrics.

Writes models/<name>/checkpoints/cp-NNNN.pt, models/<name>/pretrain.jsonl (every logged step and
evaluation) and, last, models/<name>/pretrain.json (the summary the report reads).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from effbert.config import Config, config_json, load_config
from effbert.data.shards import ShardDataset, read_manifest
from effbert.errors import InputError
from effbert.files import sha256_file, write_json
from effbert.model.pretraining import PretrainingModel
from effbert.train.checkpoints import (
    CHECKPOINT_DIR,
    checkpoint_name,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from effbert.train.device import pick_device, seed_everything, set_threads
from effbert.train.loop import fit

METRICS_FILE = "pretrain.jsonl"
SUMMARY_FILE = "pretrain.json"


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_batches(data: ShardDataset, batch_size: int, seed: int, device: torch.device) -> Iterator[dict]:
    """Endless batches, each epoch in a fresh seeded order."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(data))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield _to(data.batch(np.sort(order[start : start + batch_size])), device)


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


def _check_shards(cfg: Config, shards_dir: Path, manifest: dict) -> tuple[int, str]:
    """Vocabulary size and tokenizer text, after checking the shards fit this model."""
    if manifest["max_seq_len"] != cfg.model.max_seq_len:
        raise InputError(
            f"{shards_dir}/manifest.json: shards are {manifest['max_seq_len']} tokens long but "
            f"model.max_seq_len is {cfg.model.max_seq_len}"
        )
    tok = manifest["tokenizer"]
    tok_path = shards_dir / tok["copy"]  # the shard set's own copy, so a moved shard folder still works
    if not tok_path.is_file() or sha256_file(tok_path) != tok["sha256"]:
        raise InputError(f"{tok_path}: the tokenizer these shards were built with is missing or changed")
    vocab = cfg.model.vocab_size or tok["vocab_size"]
    if vocab < tok["vocab_size"]:
        raise InputError(f"model.vocab_size {vocab} is smaller than the tokenizer's {tok['vocab_size']}")
    return vocab, tok_path.read_text(encoding="utf-8")


def _initialise_from(model: PretrainingModel, model_dir: Path, from_cp: str) -> None:
    source = Path(from_cp) if Path(from_cp).is_absolute() else model_dir / from_cp
    state = read_checkpoint(source)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{model_dir}/config.json: from_cp {from_cp!r} does not fit this model: {e}") from None


def pretrain(model_dir: str | Path, shards_dir: str | Path, *, device: str | None = None,
             threads: int | None = None) -> dict:
    model_dir, shards_dir = Path(model_dir), Path(shards_dir)
    cfg = load_config(model_dir)
    run = cfg.pretraining
    manifest = read_manifest(shards_dir)
    vocab_size, tokenizer_json = _check_shards(cfg, shards_dir, manifest)
    set_threads(threads)
    seed_everything(run.seed)
    dev = pick_device(device)

    model = PretrainingModel(cfg.model, vocab_size, sop=run.sop).to(dev)
    if cfg.from_cp:
        _initialise_from(model, model_dir, cfg.from_cp)
    train_data, dev_data = ShardDataset(shards_dir, "train"), ShardDataset(shards_dir, "dev")
    if len(train_data) < run.batch_size:
        raise InputError(
            f"{shards_dir}: {len(train_data)} training instances, fewer than one batch of {run.batch_size}"
        )

    for stale in list_checkpoints(model_dir):  # from an earlier config; this run starts from scratch
        stale.unlink()

    def save(step: int, optimizer: torch.optim.Optimizer, schedule: object) -> None:
        save_checkpoint(
            model_dir / CHECKPOINT_DIR / checkpoint_name(step),
            model=model.state_dict(), optimizer=optimizer.state_dict(), step=step,
            config=config_json(cfg), vocab_size=vocab_size, tokenizer=tokenizer_json,
            shards={"dir": str(shards_dir), "tokenizer_sha256": manifest["tokenizer"]["sha256"]},
        )

    def loss_fn(m: PretrainingModel, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = m(batch)
        metrics = {"mlm_loss": out["mlm_loss"].item()}
        if "sop_loss" in out:
            metrics["sop_loss"] = out["sop_loss"].item()
        return out["loss"], metrics

    start = time.perf_counter()
    records = fit(
        model, loss_fn, train_batches(train_data, run.batch_size, run.seed, dev),
        steps=run.steps, lr=run.lr, weight_decay=run.weight_decay, warmup_steps=run.warmup_steps,
        grad_clip=run.grad_clip, log_every=run.log_every, eval_every=run.eval_every,
        evaluate=lambda m: dev_metrics(m, dev_data, run.batch_size, run.eval_batches, dev),
        metrics_path=model_dir / METRICS_FILE, on_checkpoint=save, checkpoint_every=run.checkpoint_every,
        desc=f"pretrain {model_dir.name}", seed=run.seed,
    )
    final = [r for r in records if r["split"] == "dev"][-1]
    trained = [r for r in records if r["split"] == "train"][-1]
    summary = {
        "model": model_dir.name,
        "attention": cfg.model.attention.type,
        "steps": run.steps,
        "mlm_loss": final["mlm_loss"],
        "mlm_accuracy": final["mlm_accuracy"],
        "sop_accuracy": final.get("sop_accuracy"),
        "train_tokens": trained["tokens"],
        "seconds": time.perf_counter() - start,
        "checkpoint": str(model_dir / CHECKPOINT_DIR / checkpoint_name(run.steps)),
        "shards": str(shards_dir),
    }
    write_json(model_dir / SUMMARY_FILE, summary)
    return summary

