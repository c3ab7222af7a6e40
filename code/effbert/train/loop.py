"""The one training loop, shared by pretraining, GLUE and LRA.

Tasks differ only by what they pass in: a model, a loss function, a stream of batches and an
evaluation callback. The loop owns the optimizer (AdamW), the schedule (linear warmup, then linear
decay to zero), gradient clipping, logging to a jsonl file and the progress bar.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
Evaluate = Callable[[nn.Module], dict[str, float]]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (BERT's convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _log(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def run_evaluation(model: nn.Module, evaluate: Evaluate) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = evaluate(model)
    model.train(was_training)
    return result


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    log_every: int = 50,
    eval_every: int | None = None,
    evaluate: Evaluate | None = None,
    metrics_path: str | Path | None = None,
    on_checkpoint: Callable[[int, torch.optim.Optimizer, object], None] | None = None,
    checkpoint_every: int | None = None,
    desc: str = "train",
    seed: int = 0,
) -> list[dict]:
    """Train `model` for `steps` optimizer steps; returns the logged records (train and eval)."""
    torch.manual_seed(seed)  # dropout masks
    metrics_path = Path(metrics_path) if metrics_path else None
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")  # a fresh run starts a fresh log
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(warmup_steps, steps))
    records: list[dict] = []
    running: dict[str, float] = {}
    tokens, start = 0, time.perf_counter()
    model.train()
    bar = tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True)
    iterator = iter(batches)
    for step in range(1, steps + 1):
        batch = next(iterator)
        loss, metrics = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        schedule.step()
        if "attention_mask" in batch:
            tokens += int(batch["attention_mask"].sum())
        for key, value in {"loss": loss.item(), **metrics}.items():
            running[key] = running.get(key, 0.0) + value
        bar.update(1)
        if step % log_every == 0 or step == steps:
            count = log_every if step % log_every == 0 else step % log_every
            elapsed = time.perf_counter() - start
            record = {"step": step, "split": "train", "lr": schedule.get_last_lr()[0]}
            record |= {k: v / count for k, v in running.items()}
            record |= {"tokens": tokens, "tokens_per_s": tokens / elapsed, "seconds": elapsed}
            running = {}
            records.append(record)
            _log(metrics_path, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            record = {"step": step, "split": "dev", **run_evaluation(model, evaluate)}
            records.append(record)
            _log(metrics_path, record)
        if on_checkpoint is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == steps):
            on_checkpoint(step, optimizer, schedule)
    bar.close()
    return records
