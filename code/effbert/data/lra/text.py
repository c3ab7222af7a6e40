"""Long Range Arena Text: IMDB sentiment from the aclImdb folders, one token per byte.

Facts from LRA's text_classification input pipeline (tfds imdb_reviews + ByteTextEncoder):
- a review is its file's bytes with leading and trailing ASCII whitespace stripped; label neg = 0, pos = 1;
  train is aclImdb/train/{neg,pos}, and IMDB's test set is used for both validation and test (IMDB has no
  validation set), so here "dev" and "test" both read aclImdb/test;
- a byte b becomes token id b + 1 (id 0 is reserved for padding), so the vocabulary has 257 rows; the
  sequence is then cut to max_length tokens (LRA's configs use 1000 or 4000).
The unlabeled aclImdb/train/unsup folder is not read. Files are read in sorted order (neg, then pos).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from effbert.data.lra.split import LraSplit, check_split, release_folder
from effbert.errors import InputError

RELEASE_DIR = "aclImdb"  # <lra_dir>/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt
PAD_ID = 0
BYTE_OFFSET = 1  # tfds ByteTextEncoder: id = byte + 1
VOCAB_SIZE = 256 + BYTE_OFFSET
NUM_CLASSES = 2
LABELS = ("neg", "pos")  # class id = index
RELEASE_SPLITS = {"train": "train", "dev": "test", "test": "test"}  # LRA validates on IMDB's test set

_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


def encode_bytes(data: bytes, max_length: int | None = None) -> np.ndarray:
    """LRA's byte encoding: each byte b -> b + 1, cut to max_length tokens; a 1-D int64 array."""
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + BYTE_OFFSET
    return ids if max_length is None else ids[:max_length]


def _sort_key(path: Path) -> tuple[int, int, str]:
    m = _NAME.match(path.name)
    return (int(m.group(1)), int(m.group(2)), path.name) if m else (1 << 62, 0, path.name)


def review_files(folder: Path) -> list[tuple[Path, int]]:
    """(file, label) for every .txt review under folder/{neg,pos}, neg first, each in id order."""
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(LABELS):
        sub = folder / name
        if not sub.is_dir():
            raise InputError(f"{sub}: no such folder; expected aclImdb/<split>/{{neg,pos}}/<id>_<rating>.txt")
        files.extend((p, label) for p in sorted(sub.glob("*.txt"), key=_sort_key))
    if not files:
        raise InputError(f"{folder}: no reviews in neg/ or pos/ (expected <id>_<rating>.txt files)")
    return files


def read_split(lra_dir: Path, split: str, *, max_length: int | None = None) -> LraSplit:
    """The LraSplit for "train", "dev" or "test" (dev and test both read aclImdb/test, as LRA does)."""
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    folder = release_folder(lra_dir, RELEASE_DIR, "Text (IMDB)") / RELEASE_SPLITS[check_split(split)]
    seqs: list[np.ndarray] = []
    labels: list[int] = []
    for path, label in tqdm(review_files(folder), desc=f"imdb {split}", unit="doc", disable=None):
        seqs.append(encode_bytes(path.read_bytes().strip(), max_length))
        labels.append(label)
    return LraSplit(inputs=(seqs,), labels=np.asarray(labels, dtype=np.int64))
