"""Long Range Arena: train a small encoder from scratch on one task and score its best dev checkpoint on test.

Thin by design: read the task's splits, build Encoder + mean-pooling head from the model folder's
attention settings and the task's protocol (effbert.data.lra.protocol), and hand everything to the
one training loop. Batches are padded to their longest member; the attention mask comes from the
sequence lengths, never from "token id == pad".

    models/<name>/lra/<task>.json            the result (contract: task, accuracy, dev_accuracy, best_step, ...)
    models/<name>/lra/<task>.metrics.jsonl   the loop's train and dev log
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from effbert.config import CONFIG_FILE, ModelConfig, load_config
from effbert.data.lra import listops
from effbert.data.lra.protocol import LraProtocol, resolve_protocol
from effbert.errors import InputError
from effbert.files import write_json
from effbert.model.encoder import Encoder
from effbert.model.heads import MeanPoolClassifier
from effbert.train.device import pick_device, seed_everything
from effbert.train.loop import fit, run_evaluation

Split = tuple[list[list[int]], np.ndarray]  # token ids per example, labels

# task -> (reader of one split from <lra_dir>, pad id, vocabulary size, names of the train/dev/test splits)
TASKS: dict[str, tuple[Callable[[Path, str], Split], int, int, tuple[str, str, str]]] = {
    "listops": (listops.load_split, listops.PAD_ID, len(listops.VOCAB), ("train", "val", "test")),
}


class LraClassifier(nn.Module):
    """Encoder, then the mean over real tokens and a two-layer MLP (the LRA head)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int, mlp_size: int):
        super().__init__()
        self.encoder = Encoder(cfg, vocab_size)
        self.head = MeanPoolClassifier(cfg.hidden_size, num_classes, mlp_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask), attention_mask)  # (B, classes)


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, longest) token ids and the (B, longest) bool mask of real tokens, from the lengths."""
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return ids, mask


def train_batches(split: Split, batch_size: int, pad_id: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless full batches over a seeded stream of epochs, each a fresh permutation."""
    ids, labels = split
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    while True:
        while len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(ids))])
        take, order = order[:batch_size], order[batch_size:]
        input_ids, mask = pad_batch([ids[i] for i in take], pad_id)
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": torch.from_numpy(labels[take])}


def accuracy(model: nn.Module, split: Split, batch_size: int, pad_id: int, device: torch.device) -> float:
    """Accuracy in percent; batches of similar length, so little time goes to padding."""
    ids, labels = split
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    correct = 0
    for start in range(0, len(order), batch_size):
        take = order[start : start + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in take], pad_id)
        predicted = model(input_ids.to(device), mask.to(device)).argmax(-1).cpu()
        correct += int((predicted == torch.from_numpy(labels[take])).sum())
    return 100.0 * correct / len(ids)


def model_config(base: ModelConfig, protocol: LraProtocol, vocab_size: int, source: str) -> ModelConfig:
    """The model folder's attention settings on the protocol's model sizes."""
    sizes = {
        "vocab_size": vocab_size, "max_seq_len": protocol.max_len, "type_vocab_size": 1,
        "hidden_size": protocol.hidden_size, "num_layers": protocol.num_layers, "num_heads": protocol.num_heads,
        "ffn_size": protocol.ffn_size, "dropout": protocol.dropout, "attention_dropout": protocol.dropout,
        "norm": protocol.norm, "layer_norm_eps": protocol.layer_norm_eps,
    }
    try:
        return ModelConfig.model_validate(base.model_dump() | sizes)
    except ValidationError as e:
        msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise InputError(f"{source}: lra.{protocol.task}: {msg}") from None


def _read(task: str, lra_dir: Path, max_len: int) -> tuple[dict[str, Split], int]:
    reader, _, _, names = TASKS[task]
    splits, truncated = {}, 0
    for role, name in zip(("train", "dev", "test"), names, strict=True):
        ids, labels = reader(lra_dir, name)
        if not ids:
            raise InputError(f"{lra_dir}: the {task} {name} split has no examples")
        truncated += sum(len(r) > max_len for r in ids)
        splits[role] = ([r[:max_len] for r in ids], labels)  # as LRA's input pipeline truncates
    return splits, truncated


def train_lra(model_dir: Path, task: str, lra_dir: Path, *, device: torch.device | str | None = None) -> dict:
    """Train on <lra_dir>'s task data with the model folder's attention; write models/<name>/lra/<task>.json."""
    if task not in TASKS:
        raise InputError(f"unknown LRA task {task!r}; expected one of {sorted(TASKS)}")
    started = time.perf_counter()
    model_dir, lra_dir = Path(model_dir), Path(lra_dir)
    cfg = load_config(model_dir)
    overrides = getattr(cfg.lra, task)
    protocol = resolve_protocol(task, overrides)
    _, pad_id, data_vocab, _ = TASKS[task]
    device = torch.device(device) if device is not None else pick_device()

    splits, truncated = _read(task, lra_dir, protocol.max_len)
    vocab_size = max(protocol.vocab_size, data_vocab)
    mcfg = model_config(cfg.model, protocol, vocab_size, str(model_dir / CONFIG_FILE))
    seed_everything(overrides.seed)
    model = LraClassifier(mcfg, vocab_size, protocol.num_classes, mlp_size=protocol.ffn_size).to(device)

    step = 0
    best: dict = {"dev_accuracy": -1.0, "best_step": 0, "state": None}
    history: list[dict] = []

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal step
        step += 1  # the loop calls this once per optimizer step
        labels = batch["labels"].to(device)
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        acc = float((logits.argmax(-1) == labels).float().mean()) * 100.0
        return F.cross_entropy(logits, labels), {"accuracy": acc}

    def evaluate(model: nn.Module) -> dict[str, float]:
        dev = accuracy(model, splits["dev"], protocol.batch_size, pad_id, device)
        history.append({"step": step, "dev_accuracy": dev})
        if dev > best["dev_accuracy"]:  # the earliest of equal scores is kept
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best.update(dev_accuracy=dev, best_step=step, state=state)
        return {"accuracy": dev}

    out_dir = model_dir / "lra"
    fit(
        model, loss_fn, train_batches(splits["train"], protocol.batch_size, pad_id, overrides.seed),
        steps=protocol.steps, lr=protocol.lr, weight_decay=protocol.weight_decay,
        warmup_steps=protocol.warmup_steps, eval_every=protocol.eval_every, evaluate=evaluate,
        metrics_path=out_dir / f"{task}.metrics.jsonl", desc=f"lra {task}", seed=overrides.seed,
    )
    model.load_state_dict(best["state"])
    test = run_evaluation(
        model, lambda m: {"accuracy": accuracy(m, splits["test"], protocol.batch_size, pad_id, device)}
    )["accuracy"]
    result = {
        "task": task,
        "accuracy": test,
        "dev_accuracy": best["dev_accuracy"],
        "best_step": best["best_step"],
        "steps": protocol.steps,
        "protocol": dataclasses.asdict(protocol),
        "seconds": round(time.perf_counter() - started, 3),
        "model": model_dir.name,
        "attention": cfg.model.attention.model_dump(),
        "seed": overrides.seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": {role: len(split[0]) for role, split in splits.items()},
        "truncated": truncated,
        "device": str(device),
        "dev_history": history,
    }
    write_json(out_dir / f"{task}.json", result)
    return result
