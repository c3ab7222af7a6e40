"""Long Range Arena Retrieval: ACL Anthology Network citation pairs, two byte-level documents per example.

Facts from LRA's matching input pipeline:
- files <lra_dir>/tsv_data/new_aan_pairs.{train,eval,test}.tsv, no header, tab-separated with no quoting,
  columns label, id1, id2, text1, text2; the label is written as a number (e.g. 1.0) and is 0 or 1;
- each text is cut to its first 10000 bytes, then byte-encoded like Text (byte b -> id b + 1, 0 = padding)
  and cut to max_length tokens (LRA: 4000 per document);
- the model is a dual encoder: both documents go through one shared encoder (two inputs here).
"dev" reads the release's eval file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from effbert.data.lra.split import LraSplit, check_split, release_folder
from effbert.data.lra.text import BYTE_OFFSET, encode_bytes
from effbert.errors import InputError

RELEASE_DIR = "tsv_data"
PAD_ID = 0
VOCAB_SIZE = 256 + BYTE_OFFSET
NUM_CLASSES = 2
COLUMNS = ("label", "id1", "id2", "text1", "text2")
RELEASE_SPLITS = {"train": "train", "dev": "eval", "test": "test"}
MAX_BYTES = 10_000  # LRA cuts each document's bytes to this before encoding


def retrieval_path(lra_dir: Path, split: str) -> Path:
    """<lra_dir>/tsv_data/new_aan_pairs.<train|eval|test>.tsv for split train, dev, test."""
    return Path(lra_dir) / RELEASE_DIR / f"new_aan_pairs.{RELEASE_SPLITS[check_split(split)]}.tsv"


def _label(field: bytes, path: Path, lineno: int) -> int:
    try:
        value = float(field)
    except ValueError:
        value = -1.0
    if value not in (0.0, 1.0):
        raise InputError(f"{path}: line {lineno}: column 'label' must be 0 or 1, got {field[:20]!r}")
    return int(value)


def read_pairs(path: Path, *, max_length: int | None = None) -> LraSplit:
    """Read one AAN pairs TSV into a two-input LraSplit (text1, text2) with 0/1 labels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected the LRA release's tsv_data/new_aan_pairs.<split>.tsv")
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    labels: list[int] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(tqdm(f, desc=path.name, unit="pair", disable=None), start=1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            cols = line.split(b"\t")
            if len(cols) != len(COLUMNS):
                raise InputError(
                    f"{path}: line {lineno}: expected {len(COLUMNS)} tab-separated columns {COLUMNS}, got {len(cols)}"
                )
            labels.append(_label(cols[0], path, lineno))
            first.append(encode_bytes(cols[3][:MAX_BYTES], max_length))
            second.append(encode_bytes(cols[4][:MAX_BYTES], max_length))
    if not labels:
        raise InputError(f"{path}: no rows; expected lines of {COLUMNS} separated by tabs")
    return LraSplit(inputs=(first, second), labels=np.asarray(labels, dtype=np.int64))


def read_split(lra_dir: Path, split: str, *, max_length: int | None = None) -> LraSplit:
    """The two-input LraSplit for "train", "dev" (the release's eval) or "test"."""
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    release_folder(lra_dir, RELEASE_DIR, "Retrieval (AAN)")
    return read_pairs(retrieval_path(lra_dir, split), max_length=max_length)
