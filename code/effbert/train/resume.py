"""Where a pretraining run starts: its newest checkpoint, judged against the settings in config.json now.

A pretraining run can hold GPU-weeks, so it never starts over on its own. Every checkpoint records its run
identity (effbert.train.identity: settings, shard set and tokenizer, from_cp source); on a rerun the
newest checkpoint decides:

- same identity: resume exactly where it stopped (bitwise on the CPU);
- another identity, `pretraining.on_change` = "stop" (the default): stop, naming every changed key
  (old -> new) and the two ways forward, touching nothing;
- "continue": go on from it with the new settings where the weights still fit (model section apart from
  dropout, tokenizer and SOP head unchanged): the optimizer keeps its moments, the new schedule starts at
  the checkpoint's step, a new batch size keeps the share of the epoch seen, new shards start a fresh
  epoch; the change is recorded in the checkpoints' `history`;
- "restart": start at step 0, moving the old checkpoints, log and TensorBoard events to
  checkpoints/stale-<time>/ (never deleted).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from effbert.errors import InputError
from effbert.train.checkpoints import newest_resumable, read_checkpoint, set_aside
from effbert.train.identity import FREE_IN_MODEL, as_recorded, changes, checkpoint_identity, describe_changes

# changes a continued run cannot absorb: the weights (or the vocabulary they index) would be another model's
_FIXED = ("model.", "pretraining.tokenizer", "pretraining.sop", "data.tokenizer")
# (pre_batchnorm's schedule too: its norms keep their step count and follow the new gamma from there)


@dataclass
class Start:
    """Where training starts: a checkpoint's state (None: step 0; when continuing with new settings, its data
    position already carried over to the new batches) and what changed."""

    path: Path | None = None
    state: dict | None = None
    changed: list[tuple[str, object, object]] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def _blocking(found: list[tuple[str, object, object]]) -> list[str]:
    return [key for key, _, _ in found if key.startswith(_FIXED) and key not in FREE_IN_MODEL]


def _stop_message(model_dir: Path, path: Path, step: int, found: list, blocked: list[str]) -> str:
    head = (f"{model_dir}: the newest checkpoint, {path.name} (step {step}), was made under other settings "
            f"than {model_dir / 'config.json'} now:\n{describe_changes(found)}\nNothing was changed. ")
    if any(key.startswith("data.") for key, _, _ in found):
        head += ("(data.*: the content of the shard set or tokenizer the run reads, by digest, not settings: to put "
                 "it back, rebuild or restore the old files; continuing on new shards starts a fresh epoch.) ")
    restart = ('  "pretraining": {"on_change": "restart"}   start again at step 0; the old checkpoints are moved '
               "to checkpoints/stale-<time>/")
    if blocked:
        return (head + f"These changes cannot continue from {path.name} ({', '.join(blocked)}: the weights would be "
                "another model's). Set the old values back to resume, or choose in config.json:\n" + restart +
                f"\n  or a new model folder with \"from_cp\": \"../{model_dir.name}/checkpoints/{path.name}\" "
                "to start from these weights")
    return (head + "Set the old values back to resume, or choose in config.json, then run again:\n"
            f'  "pretraining": {{"on_change": "continue"}}  go on from {path.name} (step {step}) with the new '
            "settings\n" + restart)


def _set_aside_run(model_dir: Path, paths: list[Path], extra: tuple[str, ...]) -> Path | None:
    """Checkpoints and the run's logs to checkpoints/stale-<time>/."""
    moved = set_aside(paths + [model_dir / name for name in extra if (model_dir / name).exists()], model_dir)
    if moved:
        tqdm.write(f"{model_dir}: the earlier run's checkpoints and logs moved to {moved}", file=sys.stderr)
    return moved


def choose_start(model_dir: Path, identity: dict, on_change: str, steps: int, rank: int,
                 logs: tuple[str, ...] = (), legacy_shards: str | None = None) -> Start:
    """Judge the newest pretraining checkpoint against `identity` (see the module doc). Rank 0 alone moves
    files; every rank decides the same. `legacy_shards`: the manifest file's sha256, which checkpoints made
    before effbert.data.shard_files.shard_set_digest recorded as data.shards for the same shard set."""
    found = newest_resumable(model_dir, lambda s: "scheduler" in s)  # imported weights (cp-0000) are not runs
    if found is None:
        return Start()
    path, state, damaged = found
    if damaged and rank == 0:  # out of the way of this run's saves at their steps, and kept
        moved = set_aside(damaged, model_dir, "damaged")
        tqdm.write(f"{model_dir}: unreadable checkpoints newer than {path.name} moved to {moved}", file=sys.stderr)
    recorded = checkpoint_identity(state)
    current = as_recorded(identity)
    if recorded.get("data", {}).get("from_cp") is None or current["data"]["from_cp"] is None:
        current["data"]["from_cp"] = recorded.get("data", {}).get("from_cp")  # unknown on one side: not a change
    if legacy_shards is not None and recorded.get("data", {}).get("shards") == legacy_shards:
        current["data"]["shards"] = legacy_shards
    history = list(state.get("history") or [])
    if recorded == current:
        return Start(path, state, history=history)
    found_changes = changes(recorded, current)
    blocked = _blocking(found_changes)
    if on_change == "restart":
        if rank == 0:
            runs = [p for p in path.parent.glob("cp-*.pt") if _is_run(p)]
            _set_aside_run(model_dir, runs, logs)
        return Start()
    if on_change == "stop" or blocked:
        raise InputError(_stop_message(model_dir, path, state["step"], found_changes, blocked))
    if state["step"] > steps:
        raise InputError(f"{model_dir}/config.json: pretraining.steps is {steps}, but the run to continue is "
                         f"already at step {state['step']} ({path.name})")
    if rank == 0:
        tqdm.write(f"{model_dir}: continuing from {path.name} (step {state['step']}) with new settings:\n"
                   f"{describe_changes(found_changes)}", file=sys.stderr)
    history.append({"step": state["step"], "changed": {k: [a, b] for k, a, b in found_changes}})
    return Start(path, {**state, "data": _continued_data(state, recorded, current)}, found_changes, history)


def _is_run(path: Path) -> bool:
    """A pretraining checkpoint (with training state), or one that cannot be read; not imported weights kept as
    a from_cp source."""
    try:
        return "scheduler" in read_checkpoint(path, mmap=True)
    except InputError:  # of no use as a source, and a restart's saves would overwrite it: moved aside too
        return True


def _continued_data(state: dict, recorded: dict, current: dict) -> dict | None:
    """The data position to continue from: new shards start a fresh epoch; a new batch size keeps the share of
    the epoch already seen."""
    data = state.get("data")
    if data is None:
        return None
    if recorded.get("data", {}).get("shards") != current["data"]["shards"]:
        return {"epoch": int(data["epoch"]) + 1, "position": 0}
    old, new = recorded["pretraining"]["batch_size"], current["pretraining"]["batch_size"]
    return {"epoch": int(data["epoch"]), "position": int(data["position"]) * old // new}
