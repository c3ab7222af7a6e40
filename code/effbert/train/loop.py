"""The one training loop, shared by pretraining, GLUE and LRA.

Tasks differ only by what they pass in: a model, a loss function, a stream of batches and an
evaluation callback. The loop owns everything else, read top to bottom in `fit`:

- precision: autocast in bf16 or fp16 (fp16 with a GradScaler) on CUDA, fp32 on CPU by default. Each
  attention mechanism computes in the autocast dtype and upcasts what needs float32 itself (the policy in
  effbert.attention); `attention_fp32` (opt-in) runs every mechanism (each SelfAttention's `.mechanism`)
  wholly in float32 with autocast off, its inputs upcast, as the seeds did;
- optional torch.compile; AdamW (fused on CUDA) without decay on biases and norms; gradient clipping;
  linear warmup then linear or cosine decay to zero;
- gradient accumulation: an item of `batches` is either one batch or a list of micro-batches that
  together make one optimizer step. Each micro-batch's loss is weighted by its share of the step's
  global count (rows by default; the caller's `counts` for per-token losses such as MLM), summed over
  every micro-batch of every rank, so the gradient equals that of one big batch;
- DistributedDataParallel when torch.distributed is initialised (each rank passes its own share of the
  global batch; only rank 0 logs, evaluates and checkpoints);
- exact resumption: `state_of` gathers weights, optimizer, schedule, scaler, RNG states (python, numpy,
  torch CPU, CUDA, per rank), the data position (when `batches` has state_dict/load_state_dict) and
  the running sums; `fit(resume=that)` continues as if never stopped (bitwise on CPU);
- metrics every `log_every` steps to a jsonl file and TensorBoard (when the tensorboard package is
  installed), and a tqdm bar with tokens/s and MFU (given the model's FLOPs per token and a known GPU).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from effbert.errors import InputError
from effbert.train.device import peak_flops

Metrics = dict[str, float | torch.Tensor]
# loss: a scalar mean over the batch's rows, or {term: sum over the batch} normalised by `counts`
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor | dict[str, torch.Tensor], Metrics]]
CountFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor | int]]
Evaluate = Callable[[nn.Module], dict[str, float]]
OnCheckpoint = Callable[[int, dict], None]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (BERT's convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_decay(warmup_steps: int, total_steps: int, kind: str = "linear") -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1, then linear or cosine decay to 0 at `total_steps`."""
    if kind not in ("linear", "cosine"):
        raise ValueError(f"schedule must be 'linear' or 'cosine', not {kind!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - done if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None: no autocast. 'auto' is bf16 on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def keep_attention_fp32(model: nn.Module, device_type: str) -> int:
    """Run every attention mechanism (a module registered as `mechanism`) in float32, autocast off.

    The forward is wrapped on the instance, so state_dict keys do not change. Returns how many."""
    count = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] != "mechanism" or getattr(module, "_effbert_fp32", False):
            continue
        inner = module.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            def up(t):
                return t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

            with torch.autocast(device_type, enabled=False):
                return _inner(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

        module.forward = forward
        module._effbert_fp32 = True
        count += 1
    return count


def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # arrays would not pass torch.load(weights_only)
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_python_state(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state(state) -> tuple:
    """random.getstate() comes back from torch.load with lists where tuples were."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def read_log(path: Path) -> list[dict]:
    """The records of a metrics log. A torn last line (a kill or a full disk during an append) is dropped with
    a warning; a damaged line before it is an error naming the line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise InputError(f"{path}: line {number}: not a JSON record; remove the line to resume") from None
            tqdm.write(f"warning: {path}: line {number} was cut off when written; dropped", file=sys.stderr)
    return records


def _log(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _tensorboard(folder: Path | None):
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional
        return None
    return SummaryWriter(str(folder))


def run_evaluation(model: nn.Module, evaluate: Evaluate) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = evaluate(model)
    model.train(was_training)
    return result


class SeededBatches:
    """Endless epochs of a seeded permutation of `n` examples, cut into global batches; resumable.

    Epoch e's order is default_rng([seed, e]).permutation(n), so a position (epoch, batch) is all
    a checkpoint needs. Each global batch is split evenly over the ranks (rank r takes the r-th slice),
    then into micro-batches of at most `micro_batch` rows; one item is the list of micro-batches of this
    rank for one optimizer step. `make_batch(indices)` builds a batch (indices sorted, for locality)."""

    def __init__(self, make_batch: Callable[[np.ndarray], dict[str, torch.Tensor]], n: int, batch_size: int,
                 seed: int, *, micro_batch: int | None = None, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world} processes")
        if n < batch_size:
            raise ValueError(f"{n} examples, fewer than one batch of {batch_size}")
        self.make_batch, self.n, self.batch_size, self.seed = make_batch, n, batch_size, seed
        self.share = batch_size // world
        self.micro = min(micro_batch or self.share, self.share)
        self.rank = rank
        self.epoch, self.position = 0, 0  # the next global batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self):
        per_epoch = self.n // self.batch_size  # the incomplete last batch is dropped
        while True:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            while self.position < per_epoch:
                start = self.position * self.batch_size + self.rank * self.share
                mine = order[start:start + self.share]
                self.position += 1  # before the yield: a checkpoint taken after this step points past it
                yield [self.make_batch(np.sort(mine[i:i + self.micro])) for i in range(0, self.share, self.micro)]
            self.epoch, self.position = self.epoch + 1, 0


def _rows(batch: dict[str, torch.Tensor]) -> int:
    return len(next(iter(batch.values())))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
    return values


def _gather(obj: object, world: int) -> list:
    """Every rank's `obj`, in rank order (a checkpoint keeps each rank's RNG streams and running sums)."""
    if world == 1:
        return [obj]
    found = [None] * world
    dist.all_gather_object(found, obj)
    return found


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]],
    *,
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    schedule: str = "linear",
    grad_clip: float | None = 1.0,
    counts: CountFn | None = None,
    precision: str = "fp32",
    attention_fp32: bool = False,
    compile: bool = False,
    log_every: int = 50,
    eval_every: int | None = None,
    evaluate: Evaluate | None = None,
    metrics_path: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    checkpoint_every: int | None = None,
    resume: dict | None = None,
    flops_per_token: float | None = None,
    desc: str = "train",
    seed: int = 0,
) -> list[dict]:
    """Train `model` (already on its device) for `steps` optimizer steps; returns every logged record.

    on_checkpoint(step, state) is called on rank 0 every `checkpoint_every` steps and at the end with
    the loop's full state (see the module doc); pass such a state as `resume` to continue from it."""
    rank, world = _world()
    device = next(model.parameters()).device
    amp_dtype = autocast_dtype(precision, device)
    if attention_fp32 and amp_dtype is not None:
        keep_attention_fp32(model, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, **fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(warmup_steps, steps, schedule))
    torch.manual_seed(seed + rank)  # dropout masks; each rank its own
    running: dict[str, torch.Tensor] = {}  # sums since the last log, on the device
    done, tokens, positions = 0, 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        done, tokens, positions = resume["step"], resume["tokens"], resume["positions"]
        # the settings given now, not the saved ones (the same values on a plain resume; new ones when a run
        # continues with new settings): peak lr and decay per group, and the new schedule at this step
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        for group, fresh in zip(optimizer.param_groups, param_groups(model, weight_decay), strict=True):
            group.update(initial_lr=lr, weight_decay=fresh["weight_decay"], lr=lr * scheduler.lr_lambdas[0](done))
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        # each rank's sums since the last log (another world size: rank 0 carries them all)
        mine = resume["running"]
        if len(mine) == world:
            mine = mine[rank]
        else:
            mine = {k: sum(r[k] for r in mine) * (rank == 0) for k in mine[0]}
        running = {k: torch.as_tensor(v).to(device) for k, v in mine.items()}
        if hasattr(batches, "load_state_dict") and resume.get("data") is not None:
            batches.load_state_dict(resume["data"])
        states = resume["rng"]
        if len(states) == world:  # the same world size: each rank continues its own streams
            set_rng_state(states[rank])

    # the module that runs forward: DDP (gradients averaged over ranks) and/or compiled
    trained: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile:
        trained = torch.compile(trained)

    metrics_path = Path(metrics_path) if metrics_path and rank == 0 else None
    records: list[dict] = []
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        if done and metrics_path.is_file():  # keep what was logged up to the checkpoint, drop the rest
            records = [r for r in read_log(metrics_path) if r["step"] <= done]
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    writer = _tensorboard(Path(tensorboard_dir)) if tensorboard_dir and rank == 0 else None
    peak = peak_flops(device, amp_dtype)

    def state_of(step: int) -> dict:
        return {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _gather(rng_state(), world),
            "data": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "running": _gather({k: torch.as_tensor(v).cpu() for k, v in running.items()}, world),
            "tokens": tokens, "positions": positions,
        }

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    model.train()
    bar = tqdm(total=steps, initial=done, desc=desc, unit="step", dynamic_ncols=True, disable=rank != 0)
    try:  # the bar and the event file are closed on every path, so an error prints on a line of its own
        iterator = iter(batches)
        start, start_tokens, start_positions = time.perf_counter(), tokens, positions
        for step in range(done + 1, steps + 1):
            item = next(iterator)
            micro = item if isinstance(item, list) else [item]
            # each loss term's count over the whole step (every micro-batch of every rank), kept on the
            # device so no step waits for the GPU: a micro-batch's term weighs its sum / the global count
            local = [{"_rows": _rows(b), **(counts(b) if counts else {"loss": _rows(b)})} for b in micro]
            names = sorted(local[0])
            local_t = torch.stack([torch.stack([torch.as_tensor(c[n], dtype=torch.float32, device=device)
                                                for n in names]) for c in local])  # (micro, terms)
            totals = dict(zip(names, _all_sum(local_t.sum(0), world), strict=True))
            for i, batch in enumerate(micro):
                last = i == len(micro) - 1
                sync = contextlib.nullcontext() if last or world == 1 else trained.no_sync()
                with sync:
                    with autocast():
                        loss, metrics = loss_fn(trained, batch)
                    if isinstance(loss, dict):  # {term: sum over the micro-batch}
                        loss = sum(loss[n].float() / totals[n] for n in names if n != "_rows")
                    else:  # a mean over the micro-batch's rows
                        loss = loss.float() * (local_t[i, names.index("loss")] / totals["loss"])
                    # DDP averages gradients over ranks; the global sums want them added
                    scaler.scale(loss * world).backward()
                # other metrics: means over the rows of the global batch
                share = local_t[i, names.index("_rows")] / totals["_rows"]
                for key, value in metrics.items():
                    value = torch.as_tensor(value, dtype=torch.float32, device=device).detach()
                    running[key] = running.get(key, 0.0) + value * share
                running["loss"] = running.get("loss", 0.0) + loss.detach()
                if "attention_mask" in batch:
                    running["_tokens"] = running.get("_tokens", 0.0) + batch["attention_mask"].sum()
                    positions += batch["attention_mask"].numel() * world  # ranks take equal shares
            if grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            bar.update(1)

            if step % log_every == 0 or step == steps:
                count = log_every if step % log_every == 0 else step % log_every
                keys = sorted(running)
                summed = _all_sum(torch.stack([torch.as_tensor(running[k], dtype=torch.float64, device=device)
                                               for k in keys]), world).tolist()
                values = dict(zip(keys, summed, strict=True))  # every rank holds its part of each global-batch sum
                tokens += int(values.pop("_tokens", 0))
                values = {k: v / count for k, v in values.items()}
                elapsed = time.perf_counter() - start
                record = {"step": step, "split": "train", "lr": scheduler.get_last_lr()[0], **values}
                record |= {"tokens": tokens, "tokens_per_s": (tokens - start_tokens) / elapsed, "seconds": elapsed}
                if flops_per_token and peak:
                    record["mfu"] = (positions - start_positions) / elapsed * flops_per_token / peak
                running = {}
                records.append(record)
                _log(metrics_path, record)
                if writer is not None:
                    for key, value in record.items():
                        if key not in ("step", "split"):
                            writer.add_scalar(f"train/{key}", value, step)
                postfix = {"loss": f"{record['loss']:.3f}", "tok_s": f"{record['tokens_per_s']:.0f}"}
                if "mfu" in record:
                    postfix["mfu"] = f"{100 * record['mfu']:.1f}%"
                bar.set_postfix(postfix)
            if evaluate is not None and rank == 0 and ((eval_every and step % eval_every == 0) or step == steps):
                with autocast():
                    record = {"step": step, "split": "dev", **run_evaluation(model, evaluate)}
                records.append(record)
                _log(metrics_path, record)
                if writer is not None:
                    for key, value in record.items():
                        if key not in ("step", "split") and isinstance(value, int | float):
                            writer.add_scalar(f"dev/{key}", value, step)
            if on_checkpoint is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == steps):
                state = state_of(step)  # every rank takes part (RNG states are gathered)
                if rank == 0:
                    on_checkpoint(step, state)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return records
