"""Pretraining shards: documents -> fixed-length MLM + sentence-order-prediction instances in .npy files.

Instances follow ALBERT's recipe: pack a document's sentences up to a target length, cut the packed chunk
at a sentence boundary into segments A and B, swap them half of the time (the SOP label), and mask 15% of
the tokens (80% [MASK], 10% a random token, 10% unchanged). Every row is

    CLS A SEP B SEP pad ...      token_type_ids 0 for CLS A SEP, 1 for B SEP, 0 over padding

with the tokenizer's own CLS/SEP/PAD ids (so <s> A </s> B </s> for RoBERTa's specials). The train/dev
split is by document, from a hash of its text, so it never depends on the seed or the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from effbert.data.tokenizer import SpecialTokens, copy_tokenizer, load_tokenizer, part_files, special_tokens
from effbert.errors import InputError
from effbert.files import atomic_dir, sha256_file

FIELDS = {
    "input_ids": np.int32,  # (B, L) masked input, pad id beyond the length
    "mlm_labels": np.int32,  # (B, L) original id where a prediction is asked, IGNORE elsewhere
    "token_type_ids": np.int8,  # (B, L)
    "sop_labels": np.int8,  # (B,) 0 = A before B as in the document, 1 = swapped
    "lengths": np.int32,  # (B,) real tokens including CLS and the two SEPs
}
IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index
SPLITS = ("train", "dev")
MANIFEST = "manifest.json"
ENCODE_SENTENCES = 20000  # sentences per encode_batch call (parallel in Rust; books are long, so count lines)


# ---------------------------------------------------------------- documents


def iter_documents(text_dir: Path) -> Iterator[list[str]]:
    """Documents of one folder as lists of sentences (one per line; blank lines separate documents)."""
    for path in part_files(text_dir):
        sentences: list[str] = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    sentences.append(line)
                elif sentences:
                    yield sentences
                    sentences = []
        if sentences:
            yield sentences


def document_position(sentences: list[str]) -> float:
    """A stable point in [0, 1) for a document: the first 8 bytes of the sha256 of its text."""
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def dev_documents(positions: np.ndarray, dev_fraction: float) -> np.ndarray:
    """Boolean mask of the dev documents: position < dev_fraction, with at least one dev and one train
    document whenever dev_fraction > 0 and there are two documents or more."""
    is_dev = positions < dev_fraction
    if dev_fraction > 0 and len(positions) >= 2:
        if not is_dev.any():
            is_dev[np.argmin(positions)] = True
        if is_dev.all():
            is_dev[np.argmax(positions)] = False
    return is_dev


# ---------------------------------------------------------------- instances


@dataclass
class Instance:
    """One row before padding: `tokens` already masked, `labels` IGNORE where nothing is predicted."""

    tokens: np.ndarray
    labels: np.ndarray
    a_length: int  # CLS + A + SEP carry token type 0
    swapped: bool


@dataclass
class InstanceMaker:
    max_seq_len: int
    specials: SpecialTokens
    vocab_size: int
    masked_lm_prob: float = 0.15
    max_predictions: int = 20
    short_seq_prob: float = 0.1
    random_ids: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Replacement tokens come from the ordinary vocabulary only.
        self.random_ids = np.setdiff1d(np.arange(self.vocab_size), sorted(self.specials.ids()))
        self.max_tokens = self.max_seq_len - 3  # room for CLS, SEP, SEP

    def _target_length(self, rng: np.random.Generator) -> int:
        # Mostly full rows; sometimes a shorter one so the model also sees short inputs (as in BERT/ALBERT).
        if rng.random() < self.short_seq_prob:
            return int(rng.integers(2, self.max_tokens + 1))
        return self.max_tokens

    def from_document(self, segments: list[list[int]], rng: np.random.Generator) -> Iterator[Instance]:
        """Pack the document's tokenised sentences into chunks near a target length, one instance each."""
        segments = [s for s in segments if s]
        target = self._target_length(rng)
        chunk: list[list[int]] = []
        length = 0
        for i, segment in enumerate(segments):
            chunk.append(segment)
            length += len(segment)
            if i == len(segments) - 1 or length >= target:
                pair = self._split(chunk, rng)
                if pair is not None:
                    yield self._instance(*pair, rng)
                chunk, length = [], 0
                target = self._target_length(rng)

    @staticmethod
    def _split(chunk: list[list[int]], rng: np.random.Generator) -> tuple[list[int], list[int]] | None:
        """A and B: the chunk cut at a random sentence boundary; a one-sentence chunk is cut in the middle
        of its tokens (so single-sentence documents still teach MLM and SOP); None below two tokens."""
        if len(chunk) >= 2:
            a_end = int(rng.integers(1, len(chunk)))
            return [t for s in chunk[:a_end] for t in s], [t for s in chunk[a_end:] for t in s]
        tokens = chunk[0]
        if len(tokens) < 2:
            return None
        middle = len(tokens) // 2
        return tokens[:middle], tokens[middle:]

    def _instance(self, a: list[int], b: list[int], rng: np.random.Generator) -> Instance:
        swapped = bool(rng.random() < 0.5)
        if swapped:
            a, b = b, a
        a, b = self._truncate(a, b, rng)
        s = self.specials
        tokens = np.array([s.cls, *a, s.sep, *b, s.sep], dtype=np.int32)
        masked, labels = self._mask(tokens, rng)
        return Instance(masked, labels, len(a) + 2, swapped)

    def _truncate(self, a: list[int], b: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """Drop tokens from the longer segment, at its front or back at random, until the pair fits
        (ALBERT's truncate_seq_pair), so neither segment always loses the same end."""
        excess = len(a) + len(b) - self.max_tokens
        if excess <= 0:
            return a, b
        bounds = [[0, len(a)], [0, len(b)]]
        for coin in rng.random(excess):
            longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
            if coin < 0.5:
                longer[0] += 1
            else:
                longer[1] -= 1
        return a[bounds[0][0] : bounds[0][1]], b[bounds[1][0] : bounds[1][1]]

    def _mask(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # Segments hold no CLS/SEP/PAD/MASK (see _encode), so the ordinary tokens are all but [UNK] and
        # the three placed at the start and at the ends of A and B.
        ordinary = (tokens != self.specials.unk) & (tokens != self.specials.sep)
        ordinary[0] = False
        candidates = np.flatnonzero(ordinary)
        labels = np.full(len(tokens), IGNORE, dtype=np.int32)
        masked = tokens.copy()
        if len(candidates) == 0:
            return masked, labels
        count = min(self.max_predictions, max(1, round(len(candidates) * self.masked_lm_prob)))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        labels[chosen] = tokens[chosen]
        fate = rng.random(count)
        masked[chosen[fate < 0.8]] = self.specials.mask
        replaced = chosen[(fate >= 0.8) & (fate < 0.9)]
        masked[replaced] = rng.choice(self.random_ids, size=len(replaced))
        return masked, labels  # the remaining 10% keep their token but are still predicted


# ---------------------------------------------------------------- writing


class ShardWriter:
    """Collects one split's instances and writes every `per_shard` of them as shard-NNNNN.<field>.npy,
    rows shuffled within the shard (seeded) so a shard never reads as one document after another."""

    def __init__(self, folder: Path, split: str, max_seq_len: int, pad: int, per_shard: int, seed: int):
        self.folder, self.split, self.max_seq_len, self.pad = folder, split, max_seq_len, pad
        self.per_shard, self.seed = per_shard, seed
        self.pending: list[Instance] = []
        self.shards: list[dict] = []
        self.tokens = 0

    def add(self, instance: Instance) -> None:
        self.pending.append(instance)
        if len(self.pending) == self.per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        number = len(self.shards)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), number])
        rows = [self.pending[i] for i in rng.permutation(len(self.pending))]
        arrays = {
            "input_ids": np.full((len(rows), self.max_seq_len), self.pad, dtype=FIELDS["input_ids"]),
            "mlm_labels": np.full((len(rows), self.max_seq_len), IGNORE, dtype=FIELDS["mlm_labels"]),
            "token_type_ids": np.zeros((len(rows), self.max_seq_len), dtype=FIELDS["token_type_ids"]),
            "sop_labels": np.array([r.swapped for r in rows], dtype=FIELDS["sop_labels"]),
            "lengths": np.array([len(r.tokens) for r in rows], dtype=FIELDS["lengths"]),
        }
        for i, row in enumerate(rows):
            n = len(row.tokens)
            arrays["input_ids"][i, :n] = row.tokens
            arrays["mlm_labels"][i, :n] = row.labels
            arrays["token_type_ids"][i, row.a_length : n] = 1
        name = f"shard-{number:05d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        for field_name, array in arrays.items():
            np.save(self.folder / f"{name}.{field_name}.npy", array, allow_pickle=False)
        self.shards.append({"name": name, "instances": len(rows)})
        self.tokens += int(arrays["lengths"].sum())
        self.pending = []

    def summary(self) -> dict:
        return {"instances": sum(s["instances"] for s in self.shards), "tokens": self.tokens, "shards": self.shards}


# ---------------------------------------------------------------- building


def build_shards(
    text_dirs: list[Path],
    tokenizer_path: Path,
    out_dir: Path,
    *,
    max_seq_len: int,
    dev_fraction: float = 0.01,
    seed: int = 0,
    masked_lm_prob: float = 0.15,
    max_predictions: int | None = None,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    instances_per_shard: int = 100000,
) -> dict:
    """Write <out_dir>/{train,dev}/shard-NNNNN.<field>.npy and manifest.json; returns the manifest.

    Train documents are passed over `dupe_factor` times (new chunk cuts, swaps and masks each time); dev
    documents once, since evaluation needs no duplicates. Each (document, pass) draws from its own
    Generator seeded by (seed, document number, pass): the output depends only on the inputs and `seed`.
    """
    text_dirs = [Path(d) for d in text_dirs]
    if max_predictions is None:
        max_predictions = round(masked_lm_prob * max_seq_len)
    _check_settings(
        text_dirs,
        max_seq_len,
        dev_fraction,
        masked_lm_prob,
        max_predictions,
        short_seq_prob,
        dupe_factor,
        instances_per_shard,
    )
    tok = load_tokenizer(tokenizer_path)
    tok.no_padding()
    tok.no_truncation()
    specials = special_tokens(tok)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    maker = InstanceMaker(max_seq_len, specials, vocab_size, masked_lm_prob, max_predictions, short_seq_prob)

    # First pass: count documents and place them in train or dev before any tokenising.
    sources, positions = [], []
    for d in text_dirs:
        before = len(positions)
        positions.extend(document_position(doc) for doc in iter_documents(d))
        if len(positions) == before:
            raise InputError(f"{d}: its part-*.txt files hold no documents")
        stats_path = d / "stats.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else None
        sources.append({"path": str(d), "documents": len(positions) - before, "stats": stats})
    is_dev = dev_documents(np.array(positions), dev_fraction)

    with atomic_dir(out_dir) as tmp:
        writers = {
            split: ShardWriter(tmp / split, split, max_seq_len, specials.pad, instances_per_shard, seed)
            for split in SPLITS
        }
        structural = frozenset({specials.pad, specials.cls, specials.sep, specials.mask})
        documents = (doc for d in text_dirs for doc in iter_documents(d))
        with tqdm(total=len(positions), desc="shards", unit="doc", disable=None) as bar:
            for start, batch in _batches(documents, ENCODE_SENTENCES):
                for offset, segments in enumerate(_encode(tok, batch, structural)):
                    number = start + offset
                    split = "dev" if is_dev[number] else "train"
                    for dupe in range(dupe_factor if split == "train" else 1):
                        rng = np.random.default_rng([seed, number, dupe])
                        for instance in maker.from_document(segments, rng):
                            writers[split].add(instance)
                bar.update(len(batch))
        for writer in writers.values():
            writer.flush()
        if writers["train"].summary()["instances"] == 0:
            raise InputError(f"{', '.join(map(str, text_dirs))}: no training instance could be made")
        tokenizer_file = Path(tokenizer_path)
        if tokenizer_file.is_dir():
            tokenizer_file = tokenizer_file / "tokenizer.json"
        copy_tokenizer(tokenizer_file, tmp / "tokenizer.json")
        manifest = {
            "max_seq_len": max_seq_len,
            "tokenizer": {
                "path": str(tokenizer_file),
                "copy": "tokenizer.json",  # byte-identical copy beside the shards
                "sha256": sha256_file(tokenizer_file),
                "vocab_size": vocab_size,
                "specials": {name: getattr(specials, name) for name in ("pad", "cls", "sep", "mask", "unk")},
            },
            "sources": sources,
            "seed": seed,
            "dev_fraction": dev_fraction,
            "masked_lm_prob": masked_lm_prob,
            "max_predictions": max_predictions,
            "short_seq_prob": short_seq_prob,
            "dupe_factor": dupe_factor,
            "documents": {"train": int((~is_dev).sum()), "dev": int(is_dev.sum())},
            "splits": {split: writer.summary() for split, writer in writers.items()},
            "fields": {name: np.dtype(dtype).name for name, dtype in FIELDS.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _check_settings(
    text_dirs,
    max_seq_len,
    dev_fraction,
    masked_lm_prob,
    max_predictions,
    short_seq_prob,
    dupe_factor,
    instances_per_shard,
) -> None:
    if not text_dirs:
        raise InputError("shards: no text folders given")
    checks = [
        (max_seq_len >= 8, f"max_seq_len {max_seq_len} is below 8"),
        (0 <= dev_fraction < 1, f"dev_fraction {dev_fraction} is not in [0, 1)"),
        (0 < masked_lm_prob < 1, f"masked_lm_prob {masked_lm_prob} is not in (0, 1)"),
        (max_predictions >= 1, f"max_predictions {max_predictions} is below 1"),
        (0 <= short_seq_prob <= 1, f"short_seq_prob {short_seq_prob} is not in [0, 1]"),
        (dupe_factor >= 1, f"dupe_factor {dupe_factor} is below 1"),
        (instances_per_shard >= 1, f"instances_per_shard {instances_per_shard} is below 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"shards: {message}")


def _batches(documents: Iterator[list[str]], sentences: int) -> Iterator[tuple[int, list[list[str]]]]:
    """(number of the first document, documents) holding about `sentences` sentences at a time."""
    batch: list[list[str]] = []
    start = size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= sentences:
            yield start, batch
            start += len(batch)
            batch, size = [], 0
    if batch:
        yield start, batch


def _encode(tok, documents: list[list[str]], structural: frozenset[int]) -> list[list[list[int]]]:
    """Token ids of every sentence, grouped by document. CLS/SEP/PAD/MASK ids that literal strings in the
    text turned into are dropped, so a row's only structural tokens are the ones placed here."""
    flat = [sentence for doc in documents for sentence in doc]
    encodings = tok.encode_batch(flat, add_special_tokens=False)
    ids = iter(
        [e.ids if structural.isdisjoint(e.ids) else [t for t in e.ids if t not in structural] for e in encodings]
    )
    return [[next(ids) for _ in doc] for doc in documents]


# ---------------------------------------------------------------- reading


def read_manifest(out_dir: Path) -> dict:
    """The manifest.json of a shards folder, checked for the keys readers rely on."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: not found (expected the output of `effbert shards`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    for key in ("max_seq_len", "tokenizer", "splits", "fields"):
        if key not in manifest:
            raise InputError(f"{path}: key {key!r} missing")
    return manifest


class ShardDataset:
    """Random access to one split's instances across its shards, memory-mapped (nothing read until used)."""

    def __init__(self, out_dir: Path, split: str):
        self.out_dir, self.split = Path(out_dir), split
        self.manifest = read_manifest(self.out_dir)
        if split not in self.manifest["splits"]:
            raise InputError(f"{self.out_dir / MANIFEST}: no split {split!r} (has {list(self.manifest['splits'])})")
        self.max_seq_len = int(self.manifest["max_seq_len"])
        self._open()

    def _open(self) -> None:
        self._shards = []
        counts = []
        for shard in self.manifest["splits"][self.split]["shards"]:
            arrays = {}
            for name, dtype in FIELDS.items():
                path = self.out_dir / self.split / f"{shard['name']}.{name}.npy"
                if not path.is_file():
                    raise InputError(f"{path}: shard file missing (listed in {MANIFEST})")
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                shape = (shard["instances"], self.max_seq_len)[: array.ndim]
                if array.dtype != dtype or array.shape != shape:
                    raise InputError(f"{path}: {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}")
                arrays[name] = array
            self._shards.append(arrays)
            counts.append(shard["instances"])
        self._ends = np.cumsum(counts, dtype=np.int64)
        self._starts = self._ends - np.array(counts, dtype=np.int64)

    # Memory maps do not travel well to DataLoader workers: send the folder, reopen there.
    def __getstate__(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "split": self.split,
            "manifest": self.manifest,
            "max_seq_len": self.max_seq_len,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """input_ids, mlm_labels, token_type_ids (B, L), sop_labels (B,) as long; attention_mask (B, L) bool."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"instance index out of range 0..{len(self) - 1} ({self.out_dir}, {self.split})")
        shard = np.searchsorted(self._ends, indices, side="right")
        rows = indices - self._starts[shard]
        row_shape = {"sop_labels": (), "lengths": ()}
        out = {
            name: np.empty((len(indices), *row_shape.get(name, (self.max_seq_len,))), dtype=np.int64) for name in FIELDS
        }
        for s in np.unique(shard):
            chosen = shard == s
            for name in FIELDS:
                out[name][chosen] = self._shards[s][name][rows[chosen]]
        lengths = torch.from_numpy(out.pop("lengths"))
        batch = {name: torch.from_numpy(array) for name, array in out.items()}
        batch["attention_mask"] = torch.arange(self.max_seq_len)[None, :] < lengths[:, None]
        return batch
