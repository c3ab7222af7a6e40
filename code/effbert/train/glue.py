"""Fine-tune a pretrained checkpoint on one GLUE task and score it on the dev set(s).

Thin by design: the task table (effbert.data.glue) says what differs between tasks, the shared loop
(effbert.train.loop.fit) trains. Pairs are encoded with the checkpoint's own tokenizer, truncated to
the model's length, padded per batch to the longest sequence in it, and the attention mask always
reaches the encoder (the seeds' run_glue.py dropped it, so padding leaked into every attention row).

One call is one run of the protocol's grid (effbert.train.glue_protocol): a batch size, a learning
rate and a seed. Result: models/<name>/glue/<TASK>/<run>.json (training log beside it as <run>.jsonl).
Test sets whose files are in the task folder are predicted after training and written in the
leaderboard's format to models/<name>/glue/<TASK>/<run>/submission/ (effbert.data.glue_submission);
MNLI's model also predicts GLUE's diagnostic set (AX) when its file is there, as the leaderboard expects.
A task with a labelled `report_split` (IMDB's test set) is scored on it once after training: `report_metrics`,
the numbers the selection reports (effbert.train.glue_protocol); its dev metrics still choose among the runs.
Batches come from the one seeded batch order (effbert.train.loop.SeededBatches): an epoch is a fresh
permutation cut into full batches (the short remainder waits for the next epoch's permutation).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from effbert.config import Config, GlueConfig, ModelConfig, load_config, parse_config
from effbert.data.glue import GlueSplit, compute_metrics, get_task, load_split
from effbert.data.glue_submission import write_submission
from effbert.data.tokenizer import special_tokens
from effbert.errors import InputError
from effbert.files import read_json, write_json
from effbert.layout import glue_run_submission_dir
from effbert.model.task_models import SequenceClassifier
from effbert.train.checkpoints import find_checkpoint, load_encoder_weights, read_checkpoint
from effbert.train.device import pick_device, seed_everything
from effbert.train.glue_protocol import GlueRun, gather, grid, run_path, task_epochs
from effbert.train.identity import glue_run_identity, weights_changes
from effbert.train.loop import Execution, Optimisation, Reporting, SeededBatches, fit

EVAL_BATCH_SIZE = 128


class Encoded:
    """A split's token ids and segment ids (one array per example) and labels, ready to batch."""

    def __init__(self, split: GlueSplit, tok: Tokenizer, type_vocab_size: int):
        pairs = list(zip(split.texts_a, split.texts_b, strict=True)) if split.texts_b is not None else split.texts_a
        encodings = tok.encode_batch(pairs)
        self.ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        # models without segment embeddings (type_vocab_size 1, RoBERTa-style) see segment 0 everywhere
        self.types = [np.minimum(np.asarray(e.type_ids, dtype=np.int64), type_vocab_size - 1) for e in encodings]
        self.labels = split.labels
        self.pad_id = special_tokens(tok).pad

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices, device: torch.device) -> dict[str, torch.Tensor]:
        """Padded to the longest example of this batch."""
        n = max(len(self.ids[i]) for i in indices)
        input_ids = torch.full((len(indices), n), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(indices), n), dtype=torch.long)
        attention_mask = torch.zeros((len(indices), n), dtype=torch.bool)
        for row, i in enumerate(indices):
            length = len(self.ids[i])
            input_ids[row, :length] = torch.from_numpy(self.ids[i])
            token_type_ids[row, :length] = torch.from_numpy(self.types[i])
            attention_mask[row, :length] = True
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        if self.labels is not None:
            batch["labels"] = torch.tensor([self.labels[i] for i in indices])
        return {k: v.to(device) for k, v in batch.items()}


def _loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch).float()
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), batch["labels"].float()), {}
    return F.cross_entropy(logits, batch["labels"]), {}


def predict(model: nn.Module, data: Encoded, device: torch.device) -> np.ndarray:
    """Label indices (classification) or scores (regression), in the split's order."""
    order = np.argsort([len(ids) for ids in data.ids], kind="stable")  # similar lengths: little padding
    out = np.empty(len(data), dtype=np.float64)
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        indices = order[start:start + EVAL_BATCH_SIZE]
        logits = model(data.batch(indices, device)).float()
        out[indices] = (logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)).cpu().numpy()
    return out


# tasks whose fine-tuned model also predicts another task's test set: GLUE's diagnostic set is MNLI-style
EXTRA_TEST_SETS = {"MNLI": (("AX", "test"),)}


def _present_test_sets(glue_dir: Path, task: str) -> list[GlueSplit]:
    """The task's test splits (and extra test sets) whose files exist, read before the minutes of training."""
    spec = get_task(task)
    wanted = [(task, split) for split in spec.test_splits] + list(EXTRA_TEST_SETS.get(task, ()))
    found = []
    for name, split in wanted:
        other = get_task(name)
        if (glue_dir / other.folder / other.file_name(split)).is_file():
            found.append(load_split(glue_dir, name, split))
    return found


def _metric_suffix(split: str, dev_splits: tuple[str, ...]) -> str:
    """'' for a task's only dev set; '_matched' / '_mismatched' for MNLI's two."""
    return "" if len(dev_splits) == 1 else "_" + split.removeprefix("dev_")


def finetune(model_dir: Path, task: str, glue_dir: Path, run: GlueRun | None = None, *,
             device: str | None = None) -> dict:
    """Fine-tune the model's checkpoint on `task` with one run of its grid (default: the grid's first run)
    and write models/<name>/glue/<TASK>/<run>.json."""
    start_time = time.perf_counter()
    model_dir, glue_dir = Path(model_dir), Path(glue_dir)
    cfg = load_config(model_dir)
    glue_cfg = cfg.glue
    spec = get_task(task)
    if spec.label is None:
        raise InputError(f"GLUE task {task} has no labelled training data to fine-tune on")
    run = run or grid(glue_cfg)[0]
    epochs = task_epochs(glue_cfg, task)
    # read the data first: a missing file fails before minutes of checkpoint loading
    train, devs, tests = _read_data(model_dir, glue_dir, task, run)
    reported = load_split(glue_dir, task, spec.report_split) if spec.report_split else None

    cp_path, state, model_cfg, max_len = _load_checkpoint(model_dir, glue_cfg)
    _check_weights_belong(model_dir, cfg, cp_path, state)
    identity = glue_run_identity(cfg, task, run, state)
    tok = Tokenizer.from_str(state["tokenizer"])
    tok.enable_truncation(max_len)  # the longer text of a pair loses tokens first; specials always fit

    device_ = pick_device(device)
    model = _classifier(model_cfg, state, spec.num_labels, run.seed, device_)
    del state

    train_data = Encoded(train, tok, model_cfg.type_vocab_size)
    dev_data = {split: Encoded(data, tok, model_cfg.type_vocab_size) for split, data in devs.items()}
    out = run_path(model_dir, task, run)
    records, steps, warmup_steps = _train(model, task, run, glue_cfg, epochs, train_data, dev_data, device_, out)
    submission = _predict_tests(model, tests, tok, model_cfg.type_vocab_size, device_,
                                glue_run_submission_dir(model_dir, task, run.name))
    scored = _score(model, task, reported, tok, model_cfg.type_vocab_size, device_) if reported else {}
    final = {k: v for k, v in records[-1].items() if k not in ("step", "split")}  # the end-of-training eval
    main = spec.metric + _metric_suffix(spec.dev_splits[0], spec.dev_splits)
    result = {
        "task": task,
        "run": run.name,
        "metric": main,
        "score": final[main],
        "metrics": final,
        "dev_examples": len(devs[spec.dev_splits[0]]),
        "dev_splits": {split: len(data) for split, data in devs.items()},
        "train_examples": len(train),
        "submission": submission,
        **scored,
        "checkpoint": _relative_name(cp_path, model_dir),
        "identity": identity,
        "hyperparameters": {
            "batch_size": run.batch_size, "lr": run.lr, "epochs": epochs, "steps": steps,
            "warmup_steps": warmup_steps, "weight_decay": glue_cfg.weight_decay, "max_seq_len": max_len,
            "seed": run.seed,
        },
        "device": str(device_),
        "seconds": round(time.perf_counter() - start_time, 2),
    }
    write_json(out, result)
    return result


def _read_data(model_dir: Path, glue_dir: Path, task: str, run: GlueRun
               ) -> tuple[GlueSplit, dict[str, GlueSplit], list[GlueSplit]]:
    """The task's training split, its dev split(s) by name and the test sets present, each checked non-empty."""
    spec = get_task(task)
    train = load_split(glue_dir, task, "train")
    devs = {split: load_split(glue_dir, task, split) for split in spec.dev_splits}
    for split in [train, *devs.values()]:
        if not len(split):
            raise InputError(f"{glue_dir / spec.folder / spec.file_name(split.split)}: no examples")
    if len(train) < run.batch_size:
        raise InputError(f"{glue_dir / spec.folder / spec.file_name('train')}: {len(train)} examples, fewer than"
                         f" one batch of {run.batch_size} (glue.batch_size in {model_dir}/config.json)")
    return train, devs, _present_test_sets(glue_dir, task)


def _load_checkpoint(model_dir: Path, glue_cfg: GlueConfig) -> tuple[Path, dict, ModelConfig, int]:
    """The checkpoint to start from: its path, its contents, its model settings, and the sequence length to
    fine-tune at (at most the model's)."""
    cp_path = find_checkpoint(model_dir, glue_cfg.checkpoint)
    state = read_checkpoint(cp_path)
    saved = state["config"]  # the resolved config the weights were saved with: its shapes are the truth
    model_cfg = parse_config(saved if "model" in saved else {"model": saved}, str(cp_path)).model
    max_len = glue_cfg.max_seq_len or model_cfg.max_seq_len
    if max_len > model_cfg.max_seq_len:
        raise InputError(
            f"{model_dir}/config.json: glue.max_seq_len {max_len} exceeds the model's max_seq_len "
            f"{model_cfg.max_seq_len} (position embeddings)"
        )
    return cp_path, state, model_cfg, max_len


def _check_weights_belong(model_dir: Path, cfg: Config, cp_path: Path, state: dict) -> None:
    """A folder that pretrains fine-tunes its own model: a checkpoint of another (copied in, or named by
    glue.checkpoint) would file its scores under this folder's settings."""
    if "pretrain" not in cfg.stages:
        return
    found = weights_changes(state, cfg)
    if found:
        raise InputError(f"{cp_path}: its weights are of another model than {model_dir}/config.json's "
                         f"({'; '.join(f'{key} {old!r} there, {new!r} here' for key, old, new in found)}); "
                         "fine-tune them in the folder they were pretrained in")


def _classifier(model_cfg: ModelConfig, state: dict, num_labels: int, seed: int, device: torch.device
                ) -> SequenceClassifier:
    """The checkpoint's encoder under a freshly initialised head (seeded), on `device`."""
    seed_everything(seed)  # the head's initialisation
    model = SequenceClassifier(model_cfg, state["vocab_size"], num_labels)
    load_encoder_weights(model.encoder, state)
    model.to(device)
    return model


def _train(model: nn.Module, task: str, run: GlueRun, glue_cfg: GlueConfig, epochs: int, train_data: Encoded,
           dev_data: dict[str, Encoded], device: torch.device, out: Path) -> tuple[list[dict], int, int]:
    """`epochs` epochs of the run, evaluated on every dev split each epoch; the loop's records, steps and warmup."""
    spec = get_task(task)
    steps_per_epoch = len(train_data) // run.batch_size
    steps = epochs * steps_per_epoch
    warmup_steps = int(glue_cfg.warmup_ratio * steps)

    def evaluate(m: nn.Module) -> dict[str, float]:
        metrics = {}
        for split, data in dev_data.items():
            found = compute_metrics(task, predict(m, data, device), data.labels)
            suffix = _metric_suffix(split, spec.dev_splits)
            metrics |= {f"{name}{suffix}": value for name, value in found.items()}
        return metrics

    batches = SeededBatches(lambda indices: train_data.batch(indices, device), len(train_data), run.batch_size,
                            run.seed)
    records = fit(
        model, _loss, batches,
        Optimisation(
            steps=steps, lr=run.lr, weight_decay=glue_cfg.weight_decay, warmup_steps=warmup_steps,
            # BERT's fine-tuning recipe (run_glue.py): linear decay after the warmup, gradient norm clipped at 1;
            # config.json's glue section does not set either, so these are fixed (the loop's defaults until now)
            schedule="linear", grad_clip=1.0,
        ),
        # float32 on every device: the glue section has no precision setting (the loop's default until now)
        execution=Execution(precision="fp32"),
        report=Reporting(log_every=max(1, min(50, steps_per_epoch)), metrics_path=out.with_suffix(".jsonl"),
                         desc=f"glue {task} {run.name}"),
        evaluate=evaluate, eval_every=steps_per_epoch, seed=run.seed,
    )
    return records, steps, warmup_steps


def _predict_tests(model: nn.Module, tests: list[GlueSplit], tok: Tokenizer, type_vocab_size: int,
                   device: torch.device, folder: Path) -> list[str]:
    """Predict each test set present and write it in the leaderboard's format into `folder`; the files' names."""
    submission = []
    model.eval()
    with torch.no_grad():
        for split in tests:
            predictions = predict(model, Encoded(split, tok, type_vocab_size), device)
            path = write_submission(folder, split.task, split.split, split.ids, predictions)
            submission.append(path.name)
    return submission


def _score(model: nn.Module, task: str, split: GlueSplit, tok: Tokenizer, type_vocab_size: int,
           device: torch.device) -> dict:
    """The trained model's metrics on a labelled split that is reported, not selected on (IMDB's test set)."""
    model.eval()
    with torch.no_grad():
        predictions = predict(model, Encoded(split, tok, type_vocab_size), device)
    return {"report_split": split.split, "report_examples": len(split),
            "report_metrics": compute_metrics(task, predictions, split.labels)}


def _relative_name(cp_path: Path, model_dir: Path) -> str:
    """The checkpoint's path relative to the model folder when inside it, else as given."""
    try:
        return str(cp_path.resolve().relative_to(model_dir.resolve()))
    except ValueError:
        return str(cp_path)


def expected_identities(model_dir: Path, task: str) -> dict[GlueRun, dict]:
    """Every run of the grid's identity, as a run made now would record it."""
    cfg = load_config(model_dir)
    state = read_checkpoint(find_checkpoint(model_dir, cfg.glue.checkpoint), mmap=True)
    return {run: glue_run_identity(cfg, task, run, state) for run in grid(cfg.glue)}


def select(model_dir: Path, task: str) -> dict:
    """The selection among the grid's runs, each checked to be of the current settings and weights."""
    return gather(model_dir, task, expected_identities(model_dir, task))


def finetune_grid(model_dir: Path, task: str, glue_dir: Path, *, device: str | None = None) -> dict:
    """Every run of the model's grid not yet on disk under its current identity, one after another, then the
    selection (no Snakemake)."""
    for run, identity in expected_identities(model_dir, task).items():
        path = run_path(model_dir, task, run)
        if not path.is_file() or read_json(path).get("identity") != identity:
            finetune(model_dir, task, glue_dir, run, device=device)
    return select(model_dir, task)
