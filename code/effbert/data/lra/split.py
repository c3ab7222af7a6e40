"""The one shape every LRA loader returns: token-id arrays per encoder input, and int64 labels.

Each task module (listops, text, retrieval, image, pathfinder) exposes
`read_split(lra_dir, split, **options) -> LraSplit` with split in SPLITS, and the constants
VOCAB_SIZE (embedding rows), PAD_ID (fills padded positions only; the mask comes from the lengths,
never from token ids), NUM_CLASSES and RELEASE_DIR (the release's folder under lra_dir).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbert.errors import InputError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class LraSplit:
    """One split: `inputs[k][i]` is example i's 1-D int64 token ids for encoder input k; `labels[i]` its class."""

    inputs: tuple[list[np.ndarray], ...]  # one list per encoder input (1; 2 for retrieval)
    labels: np.ndarray  # (n,) int64 class ids

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("an LraSplit needs at least one input")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.dtype != np.int64:
            raise ValueError(f"labels must be a 1-D int64 array, got {labels.dtype} of shape {labels.shape}")
        for k, seqs in enumerate(self.inputs):
            if len(seqs) != len(labels):
                raise ValueError(f"input {k} has {len(seqs)} sequences for {len(labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def lengths(self, k: int = 0) -> np.ndarray:
        """(n,) int64 lengths of input k's sequences (the real tokens; the padding mask comes from these)."""
        return np.fromiter((len(s) for s in self.inputs[k]), dtype=np.int64, count=len(self))

    def subset(self, index: Sequence[int] | np.ndarray) -> LraSplit:
        """The examples at `index`, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return LraSplit(
            inputs=tuple([seqs[int(i)] for i in idx] for seqs in self.inputs), labels=self.labels[idx].copy()
        )


def make_split(inputs: Sequence[Sequence[Sequence[int] | np.ndarray]], labels: Sequence[int]) -> LraSplit:
    """An LraSplit from plain lists: each sequence becomes a 1-D int64 array, labels an int64 array."""
    return LraSplit(
        inputs=tuple([np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs] for seqs in inputs),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
    )


def check_split(split: str) -> str:
    """Return `split` if it is one of SPLITS, else raise ValueError naming the choices."""
    if split not in SPLITS:
        raise ValueError(f"unknown LRA split {split!r}; expected one of {SPLITS}")
    return split


def release_folder(lra_dir: Path, release_dir: str, task: str) -> Path:
    """<lra_dir>/<release_dir>, or InputError naming it and where the data comes from (README)."""
    folder = Path(lra_dir) / release_dir
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder; expected the LRA {task} data there "
            f"(README.md, 'Real runs: where each dataset goes', says where to get it or how to generate it)"
        )
    return folder
