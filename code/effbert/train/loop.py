"""The one training loop, shared by pretraining, GLUE and LRA.

Tasks differ only by what they pass in: a model, a loss function, a stream of batches and an
evaluation callback. The loop owns everything else, read top to bottom in `fit` (its settings come in three
small groups: Optimisation, Execution, Reporting; the steps themselves are methods of `_Trainer`):

- precision: autocast in bf16 or fp16 (fp16 with a GradScaler) on CUDA, fp32 on CPU by default. Each
  attention mechanism computes in the autocast dtype and upcasts what needs float32 itself (the policy in
  effbert.attention); `Execution.attention_fp32` (opt-in) runs every mechanism (each SelfAttention's `.mechanism`)
  wholly in float32 with autocast off, its inputs upcast, as the seeds did;
- optional torch.compile; AdamW (fused on CUDA) without decay on biases and norms; gradient clipping;
  linear warmup then linear or cosine decay to zero;
- gradient accumulation: an item of `batches` is either one batch or a list of micro-batches that
  together make one optimizer step. Each micro-batch's loss is weighted by its share of the step's
  global count (rows by default; the caller's `counts` for per-token losses such as MLM), summed over
  every micro-batch of every rank, so the gradient equals that of one big batch;
- DistributedDataParallel when torch.distributed is initialised (each rank passes its own share of the
  global batch; only rank 0 logs, evaluates and checkpoints);
- exact resumption: `_Trainer.state` gathers weights, optimizer, schedule, scaler, RNG states (python, numpy,
  torch CPU, CUDA, per rank), the data position (when `batches` has state_dict/load_state_dict) and
  the running sums; `fit(resume=that)` continues as if never stopped (bitwise on CPU);
- metrics every `Reporting.log_every` steps to a jsonl file and TensorBoard (when the tensorboard package is
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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from effbert.errors import InputError
from effbert.files import write_text
from effbert.model.norms import advance_norm_schedule
from effbert.train.device import peak_flops, reuse_freed_cpu_memory

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


@dataclass(frozen=True)
class Optimisation:
    """How the weights move: `steps` AdamW steps at peak `lr` (no decay on biases and norms), linear warmup over
    `warmup_steps`, then `schedule` ('linear' or 'cosine') decay to zero; gradient norm clipped to `grad_clip`
    (None or 0: never clipped)."""

    steps: int
    lr: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "linear"
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class Execution:
    """How the forward runs: autocast `precision` (one of PRECISIONS), every attention mechanism wholly in float32
    (`attention_fp32`), torch.compile."""

    precision: str = "fp32"
    attention_fp32: bool = False
    compile: bool = False


class Probe(Protocol):
    """Extra numbers for the training records, kept off the other steps: `arm` before a logged step's
    forward, `read` after it (what that forward saw, e.g. effbert.train.lra.PinvResiduals)."""

    def arm(self) -> None: ...

    def read(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Reporting:
    """What rank 0 shows: a record every `log_every` steps (and at the last) to `metrics_path` (jsonl) and
    `tensorboard_dir`; a progress bar named `desc`, with MFU when `flops_per_token` is given; `probe`'s numbers
    in each training record."""

    log_every: int = 50
    metrics_path: str | Path | None = None
    tensorboard_dir: str | Path | None = None
    flops_per_token: float | None = None
    desc: str = "train"
    probe: Probe | None = None


@dataclass(frozen=True)
class _Clock:
    """Where throughput is measured from: the time, tokens and positions when this call's steps began."""

    start: float
    tokens: int
    positions: int


class _Trainer:
    """One `fit`'s moving parts (optimizer, schedule, scaler) and what it counts between steps."""

    def __init__(self, model: nn.Module, batches: Iterable, optimisation: Optimisation, execution: Execution,
                 seed: int):
        self.model, self.batches, self.optimisation = model, batches, optimisation
        self.rank, self.world = _world()
        self.device = next(model.parameters()).device
        if self.device.type == "cpu":
            reuse_freed_cpu_memory()  # each step's tensors are the last step's sizes: keep their pages mapped
        self.amp_dtype = autocast_dtype(execution.precision, self.device)
        if execution.attention_fp32 and self.amp_dtype is not None:
            keep_attention_fp32(model, self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(param_groups(model, optimisation.weight_decay), lr=optimisation.lr,
                                           **fused)
        schedule = warmup_decay(optimisation.warmup_steps, optimisation.steps, optimisation.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        torch.manual_seed(seed + self.rank)  # dropout masks; each rank its own
        self.running: dict[str, torch.Tensor] = {}  # sums since the last log, on the device
        self.done, self.tokens, self.positions = 0, 0, 0
        self.trained: nn.Module = model  # the module that runs forward (see `wrap`)

    def restore(self, resume: dict) -> None:
        """Continue from a `state` as if never stopped."""
        self.model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        self.scaler.load_state_dict(resume["scaler"])
        self.done, self.tokens, self.positions = resume["step"], resume["tokens"], resume["positions"]
        self._apply_settings()
        # each rank's sums since the last log (another world size: rank 0 carries them all)
        mine = resume["running"]
        if len(mine) == self.world:
            mine = mine[self.rank]
        else:
            mine = {k: sum(r[k] for r in mine) * (self.rank == 0) for k in mine[0]}
        self.running = {k: torch.as_tensor(v).to(self.device) for k, v in mine.items()}
        if hasattr(self.batches, "load_state_dict") and resume.get("data") is not None:
            self.batches.load_state_dict(resume["data"])
        states = resume["rng"]
        if len(states) == self.world:  # the same world size: each rank continues its own streams
            set_rng_state(states[self.rank])

    def _apply_settings(self) -> None:
        """The settings given now, not the saved ones (the same values on a plain resume; new ones when a run
        continues with new settings): peak lr and decay per group, and the new schedule at this step."""
        lr, optimizer, scheduler = self.optimisation.lr, self.optimizer, self.scheduler
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        fresh_groups = param_groups(self.model, self.optimisation.weight_decay)
        for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
            group.update(initial_lr=lr, weight_decay=fresh["weight_decay"], lr=lr * scheduler.lr_lambdas[0](self.done))
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]

    def wrap(self, compile: bool) -> nn.Module:
        """The module that runs forward: DDP (gradients averaged over ranks) and/or compiled."""
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if compile:
            self.trained = torch.compile(self.trained)
        return self.trained

    def state(self, step: int) -> dict:
        """The loop's full state after `step` (see the module doc); every rank takes part (RNG states are gathered)."""
        return {
            "step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": _gather(rng_state(), self.world),
            "data": self.batches.state_dict() if hasattr(self.batches, "state_dict") else None,
            "running": _gather({k: torch.as_tensor(v).cpu() for k, v in self.running.items()}, self.world),
            "tokens": self.tokens, "positions": self.positions,
        }

    def autocast(self):
        amp_dtype = self.amp_dtype
        return torch.autocast(self.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    def optimizer_step(self, loss_fn: LossFn, item: dict | list[dict], counts: CountFn | None) -> None:
        """One optimizer step over `item`'s micro-batches: scaled backward passes, clipping, the schedule."""
        micro = item if isinstance(item, list) else [item]
        names, local, totals = self._step_counts(micro, counts)
        for i, batch in enumerate(micro):
            self._micro_step(loss_fn, batch, i == len(micro) - 1, names, local[i], totals)
        if self.optimisation.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optimisation.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        advance_norm_schedule(self.model)  # pre_batchnorm's LayerNorm share follows the optimizer steps

    def _step_counts(self, micro: list[dict], counts: CountFn | None
                     ) -> tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]:
        """Each loss term's count per micro-batch (micro, terms) and over the whole step (every micro-batch of
        every rank), kept on the device so no step waits for the GPU: a micro-batch's term weighs its sum / the
        global count."""
        local = [{"_rows": _rows(b), **(counts(b) if counts else {"loss": _rows(b)})} for b in micro]
        names = sorted(local[0])
        local_t = torch.stack([torch.stack([torch.as_tensor(c[n], dtype=torch.float32, device=self.device)
                                            for n in names]) for c in local])  # (micro, terms)
        totals = dict(zip(names, _all_sum(local_t.sum(0), self.world), strict=True))
        return names, local_t, totals

    def _micro_step(self, loss_fn: LossFn, batch: dict, last: bool, names: list[str], local: torch.Tensor,
                    totals: dict[str, torch.Tensor]) -> None:
        """Forward and backward of one micro-batch (gradients sync over ranks on the step's last one only)."""
        sync = contextlib.nullcontext() if last or self.world == 1 else self.trained.no_sync()
        with sync:
            with self.autocast():
                loss, metrics = loss_fn(self.trained, batch)
            if isinstance(loss, dict):  # {term: sum over the micro-batch}
                loss = sum(loss[n].float() / totals[n] for n in names if n != "_rows")
            else:  # a mean over the micro-batch's rows
                loss = loss.float() * (local[names.index("loss")] / totals["loss"])
            # DDP averages gradients over ranks; the global sums want them added
            self.scaler.scale(loss * self.world).backward()
        # other metrics: means over the rows of the global batch
        share = local[names.index("_rows")] / totals["_rows"]
        running = self.running
        for key, value in metrics.items():
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach()
            running[key] = running.get(key, 0.0) + value * share
        running["loss"] = running.get("loss", 0.0) + loss.detach()
        if "attention_mask" in batch:
            running["_tokens"] = running.get("_tokens", 0.0) + batch["attention_mask"].sum()
            self.positions += batch["attention_mask"].numel() * self.world  # ranks take equal shares

    def train_record(self, step: int, count: int, clock: _Clock, flops_per_token: float | None,
                     peak: float | None) -> dict:
        """The means over the last `count` steps of every rank's running sums, which start again from zero."""
        keys = sorted(self.running)
        summed = _all_sum(torch.stack([torch.as_tensor(self.running[k], dtype=torch.float64, device=self.device)
                                       for k in keys]), self.world).tolist()
        values = dict(zip(keys, summed, strict=True))  # every rank holds its part of each global-batch sum
        self.tokens += int(values.pop("_tokens", 0))
        values = {k: v / count for k, v in values.items()}
        elapsed = time.perf_counter() - clock.start
        record = {"step": step, "split": "train", "lr": self.scheduler.get_last_lr()[0], **values}
        record |= {"tokens": self.tokens, "tokens_per_s": (self.tokens - clock.tokens) / elapsed, "seconds": elapsed}
        if flops_per_token and peak:
            record["mfu"] = (self.positions - clock.positions) / elapsed * flops_per_token / peak
        self.running = {}
        return record

    def check_finite(self, step: int) -> None:
        """Stop a run whose weights hold NaN or inf, at a logged step and before any checkpoint: diverged, it
        would train on (GPU-days of nothing) and save only NaN, over its last good checkpoint's successors.
        One sync; every rank holds the same weights, so every rank stops here together."""
        if bool(torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()):
            return
        raise InputError(f"training diverged by step {step}: the weights hold NaN or inf, so the run stops and "
                         "saves nothing more. Lower the learning rate (or lengthen its warmup, or clip gradients: "
                         "grad_clip), then run again from the last checkpoint")

    def dev_record(self, step: int, evaluate: Evaluate) -> dict:
        with self.autocast():
            return {"step": step, "split": "dev", **run_evaluation(self.model, evaluate)}


class _Records:
    """Every logged record: returned by `fit`, and on rank 0 appended to the jsonl file and TensorBoard."""

    def __init__(self, report: Reporting, done: int, rank: int):
        self.path = Path(report.metrics_path) if report.metrics_path and rank == 0 else None
        self.records: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if done and self.path.is_file():  # keep what was logged up to the checkpoint, drop the rest
                self.records = [r for r in read_log(self.path) if r["step"] <= done]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))  # whole or not at all
        self.writer = _tensorboard(Path(report.tensorboard_dir)) if report.tensorboard_dir and rank == 0 else None

    def add(self, record: dict) -> None:
        self.records.append(record)
        _log(self.path, record)
        if self.writer is not None:  # its numbers, as <split>/<key> at its step
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _postfix(record: dict) -> dict[str, str]:
    """The progress bar's summary of a training record."""
    postfix = {"loss": f"{record['loss']:.3f}", "tok_s": f"{record['tokens_per_s']:.0f}"}
    if "mfu" in record:
        postfix["mfu"] = f"{100 * record['mfu']:.1f}%"
    return postfix


def _due(step: int, every: int | None, last: int) -> bool:
    return bool((every and step % every == 0) or step == last)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]],
    optimisation: Optimisation,
    *,
    execution: Execution | None = None,
    report: Reporting | None = None,
    counts: CountFn | None = None,
    evaluate: Evaluate | None = None,
    eval_every: int | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    checkpoint_every: int | None = None,
    resume: dict | None = None,
    seed: int = 0,
) -> list[dict]:
    """Train `model` (already on its device) for `optimisation.steps` optimizer steps; returns every logged record.

    execution defaults to Execution() (fp32, no compile), report to Reporting(). evaluate(model) runs on rank 0
    every `eval_every` steps and at the end. on_checkpoint(step, state) is called on rank 0 every
    `checkpoint_every` steps and at the end with the loop's full state (see the module doc); pass such a state
    as `resume` to continue from it."""
    execution, report = execution or Execution(), report or Reporting()
    trainer = _Trainer(model, batches, optimisation, execution, seed)
    if resume is not None:
        trainer.restore(resume)
    trainer.wrap(execution.compile)
    records = _Records(report, trainer.done, trainer.rank)
    peak = peak_flops(trainer.device, trainer.amp_dtype)
    steps, log_every, rank = optimisation.steps, report.log_every, trainer.rank
    model.train()
    bar = tqdm(total=steps, initial=trainer.done, desc=report.desc, unit="step", dynamic_ncols=True, disable=rank != 0)
    try:  # the bar and the event file are closed on every path, so an error prints on a line of its own
        iterator = iter(batches)
        clock = _Clock(time.perf_counter(), trainer.tokens, trainer.positions)
        for step in range(trainer.done + 1, steps + 1):
            logged = step % log_every == 0 or step == steps
            if logged and report.probe is not None:
                report.probe.arm()
            trainer.optimizer_step(loss_fn, next(iterator), counts)
            bar.update(1)
            checkpointed = on_checkpoint is not None and _due(step, checkpoint_every, steps)
            if logged or checkpointed:
                trainer.check_finite(step)
            if logged:
                count = log_every if step % log_every == 0 else step % log_every
                record = trainer.train_record(step, count, clock, report.flops_per_token, peak)
                records.add(record | (report.probe.read() if report.probe is not None else {}))
                bar.set_postfix(_postfix(record))
            if evaluate is not None and rank == 0 and _due(step, eval_every, steps):
                records.add(trainer.dev_record(step, evaluate))
            if checkpointed:
                state = trainer.state(step)  # every rank takes part (RNG states are gathered)
                if rank == 0:
                    on_checkpoint(step, state)
    finally:
        bar.close()
        records.close()
    return records.records
