"""Long Range Arena ListOps: the generator (the LRA rules) and the loader of the release's TSV files.

A ListOps sequence is a nested expression over the digits 0-9 with four operators:
MIN, MAX, MED (the integer part of the median; with an even count the mean of the two middle
values, truncated) and SM (sum mod 10). The label, 0-9, is the value of the whole expression.

The generator follows the rules of LRA's lra_benchmarks/data/listops.py (facts, not code):
- the root is at depth 1; below max_depth a node is an operator with probability 0.25 (otherwise a
  value), at max_depth always a value; an operator takes 2..max_args arguments (uniform), each a node
  one level deeper; operator and values are drawn uniformly;
- the length counts operators, values and closing brackets; a tree is kept when
  min_length < length < max_length (both strict); kept trees are unique across all splits;
- the release writes each tree left-nested with parentheses, e.g. [MAX 2 9 ] as
  `( ( ( [MAX 2 ) 9 ) ] )`, in a TSV with the header `Source<TAB>Target`.

The loader applies the tokenisation used for ListOps in PyTorch LRA pipelines: drop `(` and `)`,
write `]` as `X`, split on whitespace; so the tokens are exactly the counted ones (length = tokens).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from effbert.data.lra.split import LraSplit, check_split, release_folder
from effbert.errors import InputError
from effbert.files import atomic_path, text_lines, write_json
from effbert.pipeline_config import ListopsSettings

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
OPERATOR_P = 0.25  # LRA: a node below max_depth is a value unless random() <= 0.25
MAX_DEPTH = 10  # LRA's generator: the deepest node (the root is at depth 1)
MAX_ARGS = 10  # LRA's generator: the most arguments of an operator
HEADER = "Source\tTarget"
MAX_MISSES = 1_000_000  # draws in a row without a new kept sequence before giving up
SPLITS = ("train", "val", "test")
RELEASE_DIR = "listops-1000"  # the folder of the official release: <lra_dir>/listops-1000/basic_<split>.tsv

PAD, UNK, CLOSE = "<pad>", "<unk>", "X"
VOCAB: tuple[str, ...] = (PAD, UNK, *(str(d) for d in range(10)), *OPERATORS, CLOSE)
PAD_ID = VOCAB.index(PAD)
UNK_ID = VOCAB.index(UNK)
TOKEN_IDS = {tok: i for i, tok in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
RELEASE_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # LraSplit names -> the release's


def apply_operator(op: str, args: list[int]) -> int:
    """The value of `op` over its argument values, as LRA computes it."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        # LRA: int(np.median(args)); the values are >= 0, so int() of a .5 mean is floor division
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def sample_expression(
    rng: random.Random, *, max_depth: int, max_args: int, max_length: int
) -> tuple[str, int, int] | None:
    """Draw one tree; return (release string, value, length), or None once it reaches max_length.

    Iterative (an explicit stack), so no depth is too deep; giving up at max_length is safe because
    such a tree would be rejected anyway and the length only grows.
    """
    pieces: list[str] = []
    # the open operators: (op, arguments still to draw, argument values so far)
    stack: list[tuple[str, int, list[int]]] = []
    length = 0
    while True:
        # one new node, at depth len(stack) + 1; a child is written " <node> )" (the left-nested pairs)
        if stack:
            pieces.append(" ")
        if len(stack) + 1 < max_depth and rng.random() <= OPERATOR_P:
            n_args = 2 + int(rng.random() * (max_args - 1))  # uniform on 2..max_args
            op = OPERATORS[int(rng.random() * len(OPERATORS))]
            pieces.append("( " * (n_args + 1) + op)
            stack.append((op, n_args, []))
            length += 1
            if length >= max_length:
                return None
            continue
        value = int(rng.random() * 10)
        pieces.append(str(value))
        length += 1
        # close every operator whose last argument this was
        while True:
            if not stack:
                return ("".join(pieces), value, length) if length < max_length else None
            pieces.append(" )")
            op, remaining, args = stack[-1]
            args.append(value)
            if remaining > 1:
                stack[-1] = (op, remaining - 1, args)
                break
            stack.pop()
            value = apply_operator(op, args)
            pieces.append(" ] )")
            length += 1
        if length >= max_length:
            return None


@dataclass
class _Drawn:
    """What generate_listops has drawn so far, over all the splits (kept trees are unique across them)."""

    seen: set[bytes] = field(default_factory=set)  # digests, not strings: 100k sequences of ~10 kB would not fit
    draws: int = 0
    duplicates: int = 0
    lengths: list[int] = field(default_factory=list)
    labels: Counter[int] = field(default_factory=Counter)


def _next_tree(rng: random.Random, drawn: _Drawn, settings: ListopsSettings) -> tuple[str, int, int]:
    """Draw until a tree is new and min_length < length < max_length; return (release string, value, length).
    Gives up (ValueError) after MAX_MISSES draws in a row without one."""
    min_length, max_length = settings.min_length, settings.max_length
    misses = 0
    while True:
        drawn.draws += 1
        misses += 1
        if misses > MAX_MISSES:
            total = settings.train + settings.val + settings.test
            raise ValueError(
                f"{MAX_MISSES} draws in a row gave no new sequence with {min_length} < length < "
                f"{max_length}: too few distinct trees for {total} examples"
            )
        tree = sample_expression(rng, max_depth=MAX_DEPTH, max_args=MAX_ARGS, max_length=max_length)
        if tree is None or tree[2] <= min_length:
            continue
        text, value, length = tree
        digest = hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()
        if digest in drawn.seen:
            drawn.duplicates += 1
            continue
        drawn.seen.add(digest)
        drawn.lengths.append(length)
        drawn.labels[value] += 1
        return tree


def _open_split_files(stack: contextlib.ExitStack, out_dir: Path) -> dict:
    """basic_<split>.tsv of every split, opened for writing with the header written; each file is renamed
    into place (atomic_path) when `stack` closes without an error."""
    files = {}
    for split in SPLITS:
        tmp = stack.enter_context(atomic_path(out_dir / f"basic_{split}.tsv"))
        files[split] = stack.enter_context(open(tmp, "w", encoding="utf-8", newline="\n"))
        files[split].write(HEADER + "\n")
    return files


def generate_listops(out_dir: Path, settings: ListopsSettings) -> dict:
    """Write out_dir/basic_{train,val,test}.tsv (the release's format) and out_dir/stats.json.

    Deterministic from settings.seed; trees are drawn one after another and the unique ones that fit the
    length window fill train, then val, then test (the draws are independent, so this split is as
    random as any other). Returns the statistics written to stats.json. The settings' bounds, and
    min_length < max_length - 1, are checked where they are declared (ListopsSettings).
    """
    out_dir = Path(out_dir)
    counts = {"train": settings.train, "val": settings.val, "test": settings.test}
    rng = random.Random(settings.seed)
    drawn = _Drawn()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        files = _open_split_files(stack, out_dir)
        bar = stack.enter_context(tqdm(total=sum(counts.values()), desc="listops", unit="seq", disable=None))
        for split in SPLITS:
            for _ in range(counts[split]):
                text, value, _ = _next_tree(rng, drawn, settings)
                files[split].write(f"{text}\t{value}\n")
                bar.update(1)
        for f in files.values():
            f.close()  # before atomic_path renames them
    stats = {
        "generator": "LRA ListOps rules (lra_benchmarks/data/listops.py)",
        "counts": counts,
        "min_length": settings.min_length,
        "max_length": settings.max_length,
        "max_depth": MAX_DEPTH,
        "max_args": MAX_ARGS,
        "seed": settings.seed,
        "draws": drawn.draws,
        "duplicates": drawn.duplicates,
        "length_mean": float(np.mean(drawn.lengths)) if drawn.lengths else None,
        "length_min": min(drawn.lengths, default=None),
        "length_max": max(drawn.lengths, default=None),
        "labels": {str(k): drawn.labels[k] for k in range(NUM_CLASSES)},
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(out_dir / "stats.json", stats)
    return stats


def tokenize(source: str) -> list[str]:
    """LRA's ListOps tokenisation: drop parentheses, `]` -> `X`, split on whitespace."""
    return source.replace("(", " ").replace(")", " ").replace("]", CLOSE).split()


def load_listops(path: Path, *, strict: bool = True) -> tuple[list[list[int]], np.ndarray]:
    """Read a ListOps TSV (header `Source<TAB>Target`) into token-id lists and int64 labels.

    Malformed rows raise InputError naming the file and line; an unknown token is an error too, or
    (strict=False) maps to the unk id.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ListOps file (expected basic_<split>.tsv)")
    ids: list[list[int]] = []
    labels: list[int] = []
    header_seen = False
    # one decoding policy for text inputs: UTF-8, a byte-order mark allowed (effbert.files)
    for lineno, line in text_lines(path):
        if lineno == 1:
            if line != HEADER:
                raise InputError(f"{path}: line 1: expected the header {HEADER!r}, got {line[:60]!r}")
            header_seen = True
            continue
        if not line:
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise InputError(f"{path}: line {lineno}: expected 2 tab-separated columns, got {len(cols)}")
        source, target = cols
        if target.strip() not in {str(d) for d in range(NUM_CLASSES)}:
            raise InputError(f"{path}: line {lineno}: Target must be a digit 0-9, got {target[:20]!r}")
        tokens = tokenize(source)
        if not tokens:
            raise InputError(f"{path}: line {lineno}: empty Source")
        row = [TOKEN_IDS.get(tok, UNK_ID) for tok in tokens]
        if strict and UNK_ID in row:
            bad = next(tok for tok in tokens if tok not in TOKEN_IDS)
            raise InputError(
                f"{path}: line {lineno}: unknown ListOps token {bad!r}; expected one of {VOCAB[2:]}"
            )
        ids.append(row)
        labels.append(int(target))
    if not header_seen:
        raise InputError(f"{path}: empty file; expected the header {HEADER!r}")
    return ids, np.asarray(labels, dtype=np.int64)


def listops_path(lra_dir: Path, split: str) -> Path:
    """<lra_dir>/listops-1000/basic_<split>.tsv, the official release's layout (split: train, val, test)."""
    if split not in SPLITS:
        raise ValueError(f"unknown ListOps split {split!r}; expected one of {SPLITS}")
    return Path(lra_dir) / RELEASE_DIR / f"basic_{split}.tsv"


def load_split(lra_dir: Path, split: str) -> tuple[list[list[int]], np.ndarray]:
    """One split of the official layout, <lra_dir>/listops-1000/basic_<split>.tsv, as token ids and labels."""
    return load_listops(listops_path(lra_dir, split))


def read_split(lra_dir: Path, split: str) -> LraSplit:
    """The LraSplit for split "train", "dev" (the release's val) or "test" of <lra_dir>/listops-1000."""
    folder = release_folder(lra_dir, RELEASE_DIR, "ListOps")
    ids, labels = load_listops(folder / f"basic_{RELEASE_SPLITS[check_split(split)]}.tsv")
    return LraSplit(inputs=([np.asarray(row, dtype=np.int64) for row in ids],), labels=labels)
