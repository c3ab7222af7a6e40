"""Long Range Arena: train a small encoder from scratch on one task, score its best dev checkpoint on test.

Thin by design: the task's loader (effbert.data.lra.<loader>.read_split, named by the protocol row)
gives LraSplits; the model folder gives the attention settings; the task's protocol
(effbert.train.lra_protocol) gives sizes and schedule; the one training loop (effbert.train.loop.fit)
trains, over effbert.train.loop.SeededBatches (the one seeded batch order). Batches are padded to their
longest member and the attention mask comes from the sequence lengths, never from a token id (pixel
value 0 is data). The head pools the mean over real tokens; retrieval is a dual encoder: one shared
encoder, each document pooled, a classifier over [x0, x1, x0*x1, x0-x1].

Optional self-pretraining (the "Never Train from Scratch" result): masked-LM steps on the task's own
training inputs, then the classification training starts from those encoder weights.

One run per seed, then a gather:

    models/<name>/lra/<task>/seed-<s>.json                one seed's result (accuracy = test acc of the best dev step)
    models/<name>/lra/<task>/seed-<s>.metrics.jsonl       the loop's train and dev log (with Nystrom's
                                                          pseudoinverse residuals, PinvResiduals)
    models/<name>/lra/<task>/seed-<s>.self-pretrain.jsonl the masked-LM log, when self-pretraining
    models/<name>/lra/<task>.json                         the gather: accuracy (mean over seeds), accuracy_std, runs

The attention is the folder's model.attention with lra.<task>.attention over it (YOSO's per-task tau);
every seed's result records its identity (effbert.train.identity.lra_run_settings), which the gather checks.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from effbert.attention.nystrom import NystromAttention
from effbert.config import CONFIG_FILE, ModelConfig, load_config
from effbert.constants import (
    IGNORE,  # label of positions without a masked-LM prediction
    LRA_TASKS,
)
from effbert.data.lra.split import LraSplit
from effbert.errors import InputError
from effbert.files import read_json, write_json
from effbert.layout import lra_result, lra_seed_path
from effbert.model.encoder import Encoder
from effbert.model.task_models import LraClassifier, MaskedLm, input_keys
from effbert.train.device import pick_device, seed_everything
from effbert.train.identity import lra_run_settings
from effbert.train.loop import Execution, Optimisation, Reporting, SeededBatches, fit, run_evaluation
from effbert.train.lra_protocol import PROTOCOLS, SCHEDULE, LraProtocol, task_protocol

assert set(LRA_TASKS) == set(PROTOCOLS), "config.LRA_TASKS and protocol.PROTOCOLS must name the same tasks"
TASKS = tuple(PROTOCOLS)


def task_loader(task: str) -> ModuleType:
    """The module that reads `task` (effbert.data.lra.<loader>)."""
    if task not in PROTOCOLS:
        raise InputError(f"unknown LRA task {task!r}; expected one of {sorted(PROTOCOLS)}")
    return importlib.import_module(f"effbert.data.lra.{PROTOCOLS[task].loader}")


def pad_batch(rows: list[np.ndarray] | list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, longest) token ids and the (B, longest) bool mask of real tokens, from the lengths."""
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), max(int(lengths.max()), 1)), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return ids, mask


def make_batch(split: LraSplit, indices: np.ndarray | list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The padded inputs (every encoder input) and labels of the examples at `indices`."""
    batch: dict[str, torch.Tensor] = {}
    for k, seqs in enumerate(split.inputs):
        ids_key, mask_key = input_keys(k)
        batch[ids_key], batch[mask_key] = pad_batch([seqs[int(i)] for i in indices], pad_id)
    batch["labels"] = torch.from_numpy(split.labels[np.asarray(indices, dtype=np.int64)])
    return batch


def forward(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    return model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})


def accuracy(model: nn.Module, split: LraSplit, batch_size: int, pad_id: int, device: torch.device) -> float:
    """Accuracy in percent; batches of similar length, so little time goes to padding."""
    longest = np.max(np.stack([split.lengths(k) for k in range(split.num_inputs)]), axis=0)
    order = np.argsort(longest, kind="stable")
    correct = 0
    for start in range(0, len(order), batch_size):
        batch = make_batch(split, order[start : start + batch_size], pad_id)
        predicted = forward(model, batch, device).argmax(-1).cpu()
        correct += int((predicted == batch["labels"]).sum())
    return 100.0 * correct / len(split)


def model_config(base: ModelConfig, protocol: LraProtocol, vocab_size: int, source: str) -> ModelConfig:
    """`base`'s attention settings on the protocol's model sizes."""
    sizes = {
        "vocab_size": vocab_size, "max_seq_len": protocol.max_len, "type_vocab_size": 1,
        "hidden_size": protocol.hidden_size, "num_layers": protocol.num_layers, "num_heads": protocol.num_heads,
        "ffn_size": protocol.ffn_size, "dropout": protocol.dropout, "attention_dropout": protocol.dropout,
        "norm": protocol.norm, "norm_scaling": False, "layer_norm_eps": protocol.layer_norm_eps,
    }
    try:
        return ModelConfig.model_validate(base.model_dump() | sizes)
    except ValidationError as e:
        msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise InputError(f"{source}: lra.{protocol.task}: {msg}") from None


def truncate(split: LraSplit, max_len: int) -> tuple[LraSplit, int]:
    """Every input cut to max_len tokens, as LRA's input pipeline does; and how many sequences were cut."""
    cut = sum(int((split.lengths(k) > max_len).sum()) for k in range(split.num_inputs))
    if not cut:
        return split, 0
    return LraSplit(inputs=tuple([s[:max_len] for s in seqs] for seqs in split.inputs), labels=split.labels), cut


def read_task(task: str, lra_dir: Path, protocol: LraProtocol) -> tuple[dict[str, LraSplit], int]:
    """train/dev/test LraSplits of `task`, truncated to the protocol's max_len; and the truncation count."""
    module = task_loader(task)
    options = dict(protocol.options)
    if "max_length" in inspect.signature(module.read_split).parameters:
        options["max_length"] = protocol.max_len + 1  # long documents are cut while read (+1: still counted as cut)
    splits, truncated = {}, 0
    for name in ("train", "dev", "test"):
        split = module.read_split(Path(lra_dir), name, **options)
        if not len(split):
            raise InputError(f"{lra_dir}: the {task} {name} split has no examples")
        if split.num_inputs != protocol.inputs:
            raise InputError(f"{lra_dir}: the {task} loader gave {split.num_inputs} inputs, expected {protocol.inputs}")
        splits[name], cut = truncate(split, protocol.max_len)
        truncated += cut
    return splits, truncated


# ---- self-pretraining: masked LM on the task's own inputs ----


def mask_tokens(ids: torch.Tensor, real: torch.Tensor, *, mask_id: int, data_vocab: int, mask_prob: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking on real tokens only: choose mask_prob of them (at least one per batch); of those 80%
    become mask_id, 10% a random data token, 10% stay. Returns (inputs, labels with IGNORE elsewhere)."""
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & real
    if not chosen.any():
        first = real.nonzero()[0]
        chosen[first[0], first[1]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    draw = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (draw < 0.8)] = mask_id
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[swap] = torch.randint(0, data_vocab, ids.shape, generator=generator)[swap]
    return inputs, labels


def self_pretrain(encoder: Encoder, train: LraSplit, protocol: LraProtocol, *, mask_id: int, data_vocab: int,
                  pad_id: int, seed: int, metrics_path: Path | None = None,
                  micro_batch: int | None = None) -> list[dict]:
    """protocol.self_pretrain_steps masked-LM steps on every training input (both documents for retrieval).

    Changes `encoder` in place; the MLM head (tied to the word embeddings) is dropped afterwards."""
    device = next(encoder.parameters()).device
    sequences = [s for seqs in train.inputs for s in seqs]
    generator = torch.Generator().manual_seed(seed)

    def batch_of(indices: np.ndarray) -> dict[str, torch.Tensor]:
        ids, real = pad_batch([sequences[int(i)] for i in indices], pad_id)
        inputs, labels = mask_tokens(ids, real, mask_id=mask_id, data_vocab=data_vocab,
                                     mask_prob=protocol.mask_prob, generator=generator)
        return {"input_ids": inputs, "attention_mask": real, "labels": labels}

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return model(**{k: v.to(device) for k, v in batch.items()}), {}

    steps = protocol.self_pretrain_steps
    batches = SeededBatches(batch_of, len(sequences), min(protocol.batch_size, len(sequences)), seed + 1,
                            micro_batch=micro_batch)
    model = MaskedLm(encoder, protocol.layer_norm_eps).to(device)
    optimisation = Optimisation(
        steps=steps, lr=protocol.lr, weight_decay=protocol.weight_decay,
        warmup_steps=min(protocol.warmup_steps, steps // 10),
        # the classification training's schedule and clipping (see _train_classifier), for the same reasons
        schedule=SCHEDULE, grad_clip=1.0,
    )
    report = Reporting(log_every=max(1, min(50, steps)), metrics_path=metrics_path,
                       desc=f"lra {protocol.task} self-pretrain")
    # float32 as in _train_classifier: the lra settings have no precision setting
    return fit(model, loss_fn, batches, optimisation, execution=Execution(precision="fp32"), report=report,
               seed=seed + 1)


# ---- one seed, and the gather over seeds ----


def train_lra(model_dir: Path, task: str, lra_dir: Path, *, seed: int | None = None,
              device: torch.device | str | None = None) -> dict:
    """Train one seed (default: the task's first) on <lra_dir>'s data; write models/<name>/lra/<task>/seed-<s>.json."""
    module = task_loader(task)
    started = time.perf_counter()
    model_dir, lra_dir = Path(model_dir), Path(lra_dir)
    cfg = load_config(model_dir)
    overrides = getattr(cfg.lra, task)
    seed = cfg.lra.task_seeds(task)[0] if seed is None else seed
    protocol = task_protocol(cfg.lra, task)
    device = torch.device(device) if device is not None else pick_device()

    splits, truncated = read_task(task, lra_dir, protocol)
    data_vocab, pad_id = int(module.VOCAB_SIZE), int(module.PAD_ID)
    mask_id = data_vocab  # self-pretraining's [MASK]: one row past the data's tokens
    attention = cfg.lra_attention(task)  # model.attention with this task's options over it
    model = _classifier(cfg.model.model_copy(update={"attention": attention}), protocol, data_vocab,
                        str(model_dir / CONFIG_FILE), seed, device)

    self_pretrain_log: list[dict] = []
    if protocol.self_pretrain_steps:
        self_pretrain_log = self_pretrain(
            model.encoder, splits["train"], protocol, mask_id=mask_id, data_vocab=data_vocab, pad_id=pad_id,
            seed=seed, metrics_path=lra_seed_path(model_dir, task, seed, ".self-pretrain.jsonl"),
            micro_batch=overrides.micro_batch,
        )

    best, history, train_seconds = _train_classifier(
        model, task, splits, protocol, pad_id=pad_id, seed=seed, micro_batch=overrides.micro_batch,
        metrics_path=lra_seed_path(model_dir, task, seed, ".metrics.jsonl"), device=device,
    )
    model.load_state_dict(best["state"])
    test = run_evaluation(
        model, lambda m: {"accuracy": accuracy(m, splits["test"], protocol.batch_size, pad_id, device)}
    )["accuracy"]
    result = {
        "task": task,
        "seed": seed,
        "accuracy": test,
        "dev_accuracy": best["dev_accuracy"],
        "best_step": best["best_step"],
        "steps": protocol.steps,
        "protocol": dataclasses.asdict(protocol),
        "seconds": round(time.perf_counter() - started, 3),
        "train_seconds": round(train_seconds, 3),
        "model": model_dir.name,
        "attention": attention.model_dump(),
        "identity": lra_run_settings(cfg, task, seed),
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": {name: len(split) for name, split in splits.items()},
        "truncated": truncated,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dev_history": history,
        "self_pretrain": ({"steps": protocol.self_pretrain_steps, "final_loss": self_pretrain_log[-1]["loss"]}
                          if self_pretrain_log else None),
    }
    write_json(lra_seed_path(model_dir, task, seed), result)
    return result


def _classifier(base: ModelConfig, protocol: LraProtocol, data_vocab: int, source: str, seed: int,
                device: torch.device) -> LraClassifier:
    """The task's model, freshly initialised from `seed`: an embedding row for every data token (and one more for
    self-pretraining's [MASK]), at least the published table's size."""
    vocab_size = max(protocol.vocab_size, data_vocab + (protocol.self_pretrain_steps > 0))
    mcfg = model_config(base, protocol, vocab_size, source)
    seed_everything(seed)
    return LraClassifier(mcfg, vocab_size, protocol.num_classes, mlp_size=protocol.ffn_size,
                         inputs=protocol.inputs).to(device)


def _train_classifier(model: nn.Module, task: str, splits: dict[str, LraSplit], protocol: LraProtocol, *,
                      pad_id: int, seed: int, micro_batch: int | None, metrics_path: Path, device: torch.device
                      ) -> tuple[dict, list[dict], float]:
    """protocol.steps steps on the training split, dev accuracy every protocol.eval_every steps.

    Returns the best dev score with its step and weights (the earliest of equal scores), every dev score,
    and the seconds the loop took."""
    step = 0
    best: dict = {"dev_accuracy": -1.0, "best_step": 0, "state": None}
    history: list[dict] = []

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"].to(device)
        logits = forward(model, batch, device)
        return F.cross_entropy(logits, labels), {"accuracy": (logits.argmax(-1) == labels).float().mean() * 100.0}

    def evaluate(model: nn.Module) -> dict[str, float]:
        dev = accuracy(model, splits["dev"], protocol.batch_size, pad_id, device)
        history.append({"step": step, "dev_accuracy": dev})
        if dev > best["dev_accuracy"]:  # the earliest of equal scores is kept
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best.update(dev_accuracy=dev, best_step=step, state=state)
        return {"accuracy": dev}

    train = splits["train"]
    batches = SeededBatches(lambda idx: make_batch(train, idx, pad_id), len(train), protocol.batch_size, seed,
                            micro_batch=micro_batch)

    def counted(model: nn.Module, batch: dict[str, torch.Tensor]):
        nonlocal step
        step = batches.epoch * (batches.n // batches.batch_size) + batches.position  # optimizer steps so far
        return loss_fn(model, batch)

    optimisation = Optimisation(
        steps=protocol.steps, lr=protocol.lr, weight_decay=protocol.weight_decay, warmup_steps=protocol.warmup_steps,
        schedule=SCHEDULE,  # the published protocol: linear warmup then linear decay (effbert.train.lra_protocol)
        grad_clip=1.0,  # not part of the published protocol table: the loop's default until now, kept
    )
    report = Reporting(log_every=min(50, protocol.eval_every), metrics_path=metrics_path,
                       desc=f"lra {task} seed {seed}", probe=PinvResiduals(model))
    started = time.perf_counter()
    # float32 on every device: the lra settings have no precision setting (the loop's default until now)
    fit(model, counted, batches, optimisation, execution=Execution(precision="fp32"), report=report,
        evaluate=evaluate, eval_every=protocol.eval_every, seed=seed)
    return best, history, time.perf_counter() - started


class PinvResiduals:
    """Each Nystrom layer's pseudoinverse residual R = I - A Z (effbert.attention.nystrom.pinv_residual) in the
    logged step's forward: pinv_residual_<i> = ||R||_2 mean over batch and heads, pinv_residual_<i>_max its
    maximum, pinv_residual_<i>_rms the mean of ||R||_F / sqrt(m); i counts the Nystrom layers from the input.

    Only the logged steps compute it, without gradients and without drawing random numbers, so training is the
    same with or without it. No keys when the model has no Nystrom layer or a batch was no longer than m."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, NystromAttention)]

    def arm(self) -> None:
        for layer in self.layers:
            layer.record_residual = True

    def read(self) -> dict[str, float]:
        values = {}
        for i, layer in enumerate(self.layers):
            residual, layer.last_residual, layer.record_residual = layer.last_residual, None, False
            if residual is not None:
                spectral, name = residual["spectral"], f"pinv_residual_{i}"
                values |= {name: float(spectral.mean()), f"{name}_max": float(spectral.max()),
                           f"{name}_rms": float(residual["rms"].mean())}
        return values


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def gather_lra(model_dir: Path, task: str, seeds: list[int] | None = None, runs: list[Path] | None = None) -> dict:
    """Mean and spread over the seeds' results; write models/<name>/lra/<task>.json (what the report reads).

    `runs`: the seeds' result files when they are not this folder's own (another folder with the same LRA
    settings ran them); each must be of this folder's settings for its task and seed."""
    model_dir = Path(model_dir)
    task_loader(task)  # names the task in the error when unknown
    cfg = load_config(model_dir)
    seeds = cfg.lra.task_seeds(task) if seeds is None else list(seeds)
    paths = [Path(p) for p in runs] if runs is not None else [lra_seed_path(model_dir, task, seed) for seed in seeds]
    if len(paths) != len(seeds):
        raise InputError(f"{model_dir}: {len(paths)} result files given for the {len(seeds)} seeds of {task}")
    results = []
    for seed, path in zip(seeds, paths, strict=True):
        if not path.is_file():
            raise InputError(f"{path}: no result for seed {seed}; run `effbert lra --model {model_dir} --task {task} "
                             f"--seed {seed}` first")
        found = read_json(path)
        if found.get("identity") != lra_run_settings(cfg, task, seed):
            raise InputError(f"{path}: made under other LRA settings than {model_dir / CONFIG_FILE}'s for {task} "
                             f"seed {seed}; run it again")
        results.append(found)
    accuracy_mean, accuracy_std = _mean_std([r["accuracy"] for r in results])
    dev_mean, dev_std = _mean_std([r["dev_accuracy"] for r in results])
    result = {
        "task": task,
        "accuracy": accuracy_mean,
        "accuracy_std": accuracy_std,
        "dev_accuracy": dev_mean,
        "dev_accuracy_std": dev_std,
        "seeds": seeds,
        "steps": results[0]["steps"],
        "model": model_dir.name,
        "attention": results[0]["attention"],
        "protocol": results[0]["protocol"],
        "seconds": round(sum(r["seconds"] for r in results), 3),
        "runs": [{k: v for k, v in r.items() if k not in ("protocol", "attention", "identity")} | {"file": str(path)}
                 for r, path in zip(results, paths, strict=True)],
    }
    write_json(lra_result(model_dir, task), result)
    return result


def run_lra(model_dir: Path, task: str, lra_dir: Path, *, device: torch.device | str | None = None,
            progress: Callable[[dict], None] | None = None) -> dict:
    """Every seed of the task not yet on disk under its current settings, in turn, then the gather."""
    cfg = load_config(model_dir)
    for seed in cfg.lra.task_seeds(task):
        path = lra_seed_path(model_dir, task, seed)
        if path.is_file() and read_json(path).get("identity") == lra_run_settings(cfg, task, seed):
            continue
        result = train_lra(model_dir, task, lra_dir, seed=seed, device=device)
        if progress is not None:
            progress(result)
    return gather_lra(model_dir, task)
