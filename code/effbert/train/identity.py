"""Run identities: exactly the settings each stage's run reads, computed here and nowhere else.

An identity decides whether existing work still stands. The DAG reruns a job when its settings' digest
(a Snakemake `params` entry) changes, so an edit reruns exactly the runs it changes and a bare `touch` of
config.json reruns nothing; the stages record the full identity in what they write (checkpoints, result
files) and compare it before reusing anything.

- pretraining: the model section, the pretraining section less RUNTIME_KEYS, from_cp (the DAG's digest);
  plus the data it read (shard manifest, tokenizer, the from_cp checkpoint's identity), known only once
  it runs and recorded in every checkpoint.
- a GLUE run: its starting point (the pretraining settings, or the imported BERT), task, grid point, seed
  and the glue settings it uses; recorded with the identity of the checkpoint it read.
- an LRA run: the task's attention (lra.<task>.attention over model.attention), model.layer_attention when
  set, its resolved protocol and the seed. LRA trains from scratch, so folders with the same attention share
  their LRA runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from effbert.config import Config, parse_config
from effbert.train.glue_protocol import GlueRun, task_epochs
from effbert.train.lra_protocol import task_protocol

# pretraining keys that change how a run is watched, split into passes or kept on disk, not what it computes
RUNTIME_KEYS = ("log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "micro_batch_size",
                "compile", "tensorboard", "on_change")


def digest(identity: object) -> str:
    """A short stable digest of an identity (canonical JSON)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# pretraining and model keys added after runs existed, with their defaults: a key at its default is left out
# of the identity, so that adding it changes no existing run's identity (and restarts nothing)
LATER_KEYS = {"masking": "static"}
LATER_MODEL_KEYS = {"norm_scaling": False, "batchnorm_warmup": 0, "batchnorm_decay_steps": 300000,
                    "layer_attention": []}


def _without_later_defaults(settings: dict, later: dict) -> dict:
    return {k: v for k, v in settings.items() if not (k in later and v == later[k])}


def pretraining_settings(cfg: Config) -> dict:
    pretraining = cfg.pretraining.model_dump(mode="json")
    return {
        "model": _without_later_defaults(cfg.model.model_dump(mode="json"), LATER_MODEL_KEYS),
        "pretraining": _without_later_defaults({k: v for k, v in pretraining.items() if k not in RUNTIME_KEYS},
                                               LATER_KEYS),
        "from_cp": cfg.from_cp,
    }


def import_settings(cfg: Config) -> dict:
    """What an imported checkpoint (import_hf) is made of: the BERT folder, the attention put in, and the seed
    of the tensors BERT lacks."""
    return {"import_hf": cfg.import_hf, "attention": cfg.model.attention.model_dump(mode="json"),
            "seed": cfg.pretraining.seed, "sop": cfg.pretraining.sop}


def weights_settings(cfg: Config) -> dict:
    """The settings of the weights GLUE fine-tunes: pretrained here, or imported."""
    if "pretrain" in cfg.stages:
        return {"pretrained": digest(pretraining_settings(cfg))}
    return {"imported": digest(import_settings(cfg))}


def glue_run_settings(cfg: Config, task: str, run: GlueRun) -> dict:
    glue = cfg.glue
    return {
        "weights": weights_settings(cfg), "checkpoint": glue.checkpoint, "task": task,
        "batch_size": run.batch_size, "lr": run.lr, "seed": run.seed, "epochs": task_epochs(glue, task),
        "weight_decay": glue.weight_decay, "warmup_ratio": glue.warmup_ratio, "max_seq_len": glue.max_seq_len,
    }


def glue_selection_settings(cfg: Config, task: str) -> dict:
    glue = cfg.glue
    return {"task": task, "batch_size": glue.batch_size, "lr": glue.lr, "seeds": glue.seeds,
            "selection": glue.selection}


def glue_run_identity(cfg: Config, task: str, run: GlueRun, checkpoint: dict) -> dict:
    """A GLUE run's full identity: its settings and the checkpoint it starts from, by the identity of the run that
    made it and its step (every checkpoint of one pretraining shares the identity: a run fine-tuned from an early
    one is not current once pretraining has gone on)."""
    starts_from = {**checkpoint_identity(checkpoint), "step": checkpoint.get("step")}
    return {**glue_run_settings(cfg, task, run), "starts_from": digest(starts_from)}


def lra_run_settings(cfg: Config, task: str, seed: int) -> dict:
    protocol = task_protocol(cfg.lra, task)
    schedule = cfg.model.model_dump(mode="json")["layer_attention"]  # named only when set: older runs keep theirs
    return as_recorded({"task": task, "attention": cfg.lra_attention(task).model_dump(mode="json"),
                        "protocol": dataclasses.asdict(protocol), "seed": seed}
                       | ({"layer_attention": schedule} if schedule else {}))


def as_recorded(identity: dict) -> dict:
    """As a JSON file or checkpoint gives it back (tuples become lists), so a recorded identity compares equal."""
    return json.loads(json.dumps(identity))


def checkpoint_identity(state: dict) -> dict:
    """The identity a checkpoint was made under: pretraining's (older checkpoints: derived from their config and
    shard set), or an import's."""
    if "identity" in state:
        return state["identity"]
    shards = state.get("shards") or {}
    saved = state["config"]
    cfg = parse_config(saved if "model" in saved else {"model": saved}, "checkpoint")
    return {**pretraining_settings(cfg), "data": {"shards": shards.get("manifest_sha256"),
                                                  "tokenizer": shards.get("tokenizer_sha256"), "from_cp": None}}


# model keys that change how a model trains, not what its weights are: a checkpoint stays of the same model
FREE_IN_MODEL = ("model.dropout", "model.attention_dropout", "model.batchnorm_warmup", "model.batchnorm_decay_steps")


def weights_changes(checkpoint: dict, cfg: Config) -> list[tuple[str, object, object]]:
    """How a pretraining checkpoint's model differs from `cfg`'s in what its weights are (FREE_IN_MODEL apart): a
    checkpoint of this folder's own run gives none. Imported or converted checkpoints have no pretraining model
    settings to compare: none either."""
    recorded = checkpoint_identity(checkpoint)
    if "model" not in recorded:
        return []
    current = as_recorded(pretraining_settings(cfg))["model"]
    return [change for change in changes(recorded["model"], current, "model.") if change[0] not in FREE_IN_MODEL]


def changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf that differs, in key order."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            found += changes(a, b, f"{name}.")
        elif a != b:
            found.append((name, a, b))
    return found


def describe_changes(found: list[tuple[str, object, object]]) -> str:
    return "\n".join(f"  {key}: {json.dumps(a)} -> {json.dumps(b)}" for key, a, b in found)
