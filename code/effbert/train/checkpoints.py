"""Checkpoint files models/<name>/checkpoints/cp-NNNN.pt (NNNN = optimizer step).

A checkpoint explains itself: it carries the resolved config, the vocabulary size and the tokenizer
(tokenizer.json text), so fine-tuning needs nothing but the file. Loading never runs code from it
(torch.load with weights_only=True).

A pretraining checkpoint also holds the training loop's whole state (optimizer, schedule, scaler, RNG
states, data position; see effbert.train.loop), so an interrupted run resumes exactly where it stopped.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from effbert.errors import InputError
from effbert.files import atomic_path
from effbert.layout import CHECKPOINT_DIR, CHECKPOINT_PATTERN, checkpoint_name, named_step


def save_checkpoint(path: Path, **content: object) -> None:
    try:
        with atomic_path(path, durable=True) as tmp:  # a crash of the machine leaves no checkpoint of zeros
            torch.save(content, tmp)
    except RuntimeError as e:  # torch's writer reports a failed write (a full disk) as "unexpected pos ..."
        raise OSError(errno.EIO, f"could not write the checkpoint ({str(e).splitlines()[0][:80]}); is the disk "
                      "full?", str(path)) from None


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict:
    """The checkpoint's content on the CPU; mmap: tensors read only when touched (cheap to peek at the config)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except OSError:  # the storage failed (EIO, a stale mount, no permission): not the file's fault, so not damage
        raise
    except Exception as e:  # torch's message advises loading unsafely: not repeated here
        raise InputError(f"{path}: not a readable effbert checkpoint ({type(e).__name__}): a damaged file, or one "
                         "holding more than tensors and plain values, which is never loaded") from None
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"{path}: not an effbert checkpoint (no model weights in it)")
    return state


def list_checkpoints(model_dir: str | Path) -> list[Path]:
    """The model's checkpoints, oldest step first."""
    folder = Path(model_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("cp-*.pt") if (m := CHECKPOINT_PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def newest_resumable(model_dir: str | Path, matches: Callable[[dict], bool]) -> tuple[Path, dict, list[Path]] | None:
    """The newest checkpoint `matches` accepts (the same config and data), read, and the unreadable newer files
    passed over on the way; None when there is no checkpoint, or none that `matches` accepts.

    Only files from the newest down to the first match are read. An unreadable one (an interrupted atomic
    write leaves none, but a damaged disk or a foreign file might) is passed over with a warning. When files
    are there but none of them can be read, an InputError: starting at step 0 would overwrite them. An OSError
    (the storage failing, not the file) stops the run too, as it is."""
    damaged = []
    for path in reversed(list_checkpoints(model_dir)):
        try:
            state = read_checkpoint(path, mmap=True)
        except InputError as e:
            print(f"warning: passing over a damaged checkpoint: {e}", file=sys.stderr)
            damaged.append(path)
            continue
        if matches(state):
            return path, state, damaged
    if damaged:
        raise InputError(f"{Path(model_dir) / CHECKPOINT_DIR}: no checkpoint there can be read "
                         f"({', '.join(p.name for p in damaged)}), so the run does not start over and overwrite them. "
                         "Check the storage; to start at step 0, move the files out of the folder")
    return None


def set_aside(paths: list[Path], model_dir: str | Path, why: str = "stale") -> Path | None:
    """Move checkpoints of another run (or damaged ones: why="damaged") to checkpoints/<why>-<UTC time>/
    (kept, not deleted: they may hold GPU-days). Returns that folder, or None when there was nothing to move."""
    if not paths:
        return None
    folder = Path(model_dir) / CHECKPOINT_DIR / time.strftime(f"{why}-%Y%m%dT%H%M%SZ", time.gmtime())
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.rename(folder / path.name)
    return folder


def outdated_checkpoints(model_dir: str | Path, keep: int, *, newest: int, spared: Iterable[Path] = ()) -> list[Path]:
    """What pretraining.keep_checkpoints deletes once step `newest` is saved, oldest first: the checkpoints of
    steps 1..`newest` but the `keep` newest of them, less the files in `spared`. Never step 0 (imported weights,
    or a from_cp source put there), a step past `newest` (not this run's), nor a file but cp-NNNN.pt named as
    pretraining names them (not checkpoints/damaged-*/ or stale-*/, which are kept on purpose)."""
    spared = {path.resolve() for path in spared}
    runs = []
    for path in list_checkpoints(model_dir):  # oldest first
        step = int(CHECKPOINT_PATTERN.search(path.name).group(1))
        if 0 < step <= newest and path.name == checkpoint_name(step):
            runs.append(path)
    return [path for path in runs[:-keep] if path.resolve() not in spared]


def checkpoint_candidates(model_dir: str | Path, spec: str | int) -> list[Path]:
    """The files a step number, file name or path names, in the order find_checkpoint tries them. A step
    ("100", or "cp-100.pt" as config.py's glue.checkpoint reads it) is first the file pretraining writes for it
    (cp-0100.pt)."""
    model_dir, spec = Path(model_dir), str(spec)
    candidates = [Path(spec), model_dir / CHECKPOINT_DIR / spec]
    if (step := named_step(spec)) is not None:
        candidates.insert(0, model_dir / CHECKPOINT_DIR / checkpoint_name(step))
    return candidates


def find_checkpoint(model_dir: str | Path, spec: str | int = "last") -> Path:
    """'last' (the newest), a step number (as the seeds' --checkpoint 99), a file name, or a path."""
    model_dir = Path(model_dir)
    spec = str(spec)
    if spec == "last":
        found = list_checkpoints(model_dir)
        if not found:
            raise InputError(f"{model_dir / CHECKPOINT_DIR}: no cp-NNNN.pt checkpoint; pretrain the model first")
        return found[-1]
    candidates = checkpoint_candidates(model_dir, spec)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"checkpoint {spec!r} not found for {model_dir} (looked at {', '.join(map(str, candidates))})")


def load_encoder_weights(encoder: nn.Module, checkpoint: str | Path | dict) -> None:
    """Load the `encoder.*` weights of a pretraining checkpoint into a bare Encoder (shapes must match)."""
    state = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        missing, unexpected = encoder.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatch: a checkpoint of another model size
        raise InputError(f"checkpoint does not fit this encoder: {e}") from None
    if missing or unexpected:
        raise InputError(
            f"checkpoint does not fit this encoder: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
