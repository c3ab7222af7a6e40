"""Pretraining shards: documents -> fixed-length MLM + sentence-order-prediction instances in .npy files.

Instances follow ALBERT's recipe: pack a document's sentences up to a target length, cut the packed chunk
at a sentence boundary into segments A and B, swap them half of the time (the SOP label), and mask 15% of
the tokens (80% [MASK], 10% a random token, 10% unchanged). Every row is

    CLS A SEP B SEP pad ...      token_type_ids 0 for CLS A SEP, 1 for B SEP, 0 over padding

with the tokenizer's own CLS/SEP/PAD ids (so <s> A </s> B </s> for RoBERTa's specials). The train/dev
split is by document, from a hash of its text, so it never depends on the seed or the tokenizer.

At scale (issue #4) the work streams in three steps, memory bounded by a unit and a shard, not the corpus:
1. index: every part file is read once (in parallel) for each document's split position and cut into
   units of about UNIT_SENTENCES sentences; sampling (sample_probs) and the dev split are decided here;
2. units: each unit is tokenised (encode_batch) and turned into instances by a pool of `workers`
   processes, into <out>.work/<inputs key>/unit-NNNNNN/ (written atomically: a present folder is a done
   unit, so a killed run resumes there);
3. assemble: the units' instances are read in document order into shards of instances_per_shard rows.
Since every (document, pass) has its own Generator and the order is the documents', the bytes never depend
on the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from effbert.data.tokenizer import SpecialTokens, copy_tokenizer, load_tokenizer, part_files, special_tokens
from effbert.errors import InputError
from effbert.files import atomic_dir, sha256_file

# The widest dtype of each field; field_dtypes narrows the ids for vocabularies that fit (the manifest says).
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


# ---------------------------------------------------------------- dtypes


def field_dtypes(vocab_size: int) -> dict[str, np.dtype]:
    """On-disk dtype of every field: token ids in uint16 while the vocabulary fits (BERT 30522, RoBERTa
    50265), labels (ids or IGNORE = -100) in int16 while it fits there (BERT yes, RoBERTa no)."""
    dtypes = dict(FIELDS)
    if vocab_size <= 1 << 16:
        dtypes["input_ids"] = np.uint16
    if vocab_size <= 1 << 15:
        dtypes["mlm_labels"] = np.int16
    return {name: np.dtype(d) for name, d in dtypes.items()}


# ---------------------------------------------------------------- index: documents -> work units


@dataclass(frozen=True)
class Unit:
    """A run of consecutive documents of one part file: the work one process tokenises at a time."""

    number: int
    path: str
    offset: int  # byte offset of the first document's first line
    first: int  # global number of the first document
    count: int


def _read_documents(path: str, offset: int = 0, count: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(byte offset, sentences) of the documents of a part file from `offset`, `count` of them at most.
    Bytes, not text mode, so offsets can be sought; lines split on "\\n" and stripped as in iter_documents."""
    with open(path, "rb") as f:
        f.seek(offset)
        position, start, sentences, seen = offset, offset, [], 0
        for raw in f:
            line = raw.decode("utf-8").strip()
            if line:
                if not sentences:
                    start = position
                sentences.append(line)
            elif sentences:
                yield start, sentences
                seen += 1
                if count is not None and seen == count:
                    return
                sentences = []
            position += len(raw)
        if sentences:
            yield start, sentences


def _index_file(args: tuple[str, int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Positions of a part file's documents and its cuts into units: (byte offset, documents) each,
    cut after about `unit_sentences` sentences. Units depend only on the file, never on the worker count."""
    path, unit_sentences = args
    positions, cuts = [], []
    size = 0
    for offset, sentences in _read_documents(path):
        if not cuts or size >= unit_sentences:
            cuts.append([offset, 0])
            size = 0
        cuts[-1][1] += 1
        size += len(sentences)
        positions.append(document_position(sentences))
    return np.array(positions, dtype=np.float64), [(o, n) for o, n in cuts]


def uniform_draws(seed: int, source: int, documents: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per (seed, source, document index): splitmix64 of the three, vectorised,
    so sampling millions of documents costs no Python loop and no Generator per document."""
    with np.errstate(over="ignore"):
        x = documents.astype(np.uint64) + np.uint64((seed * 1_000_003 + source) % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


# ---------------------------------------------------------------- work units: documents -> instances


@dataclass
class UnitJob:
    """Everything a process needs to turn one unit into instance files (picklable, sent to workers)."""

    unit: Unit
    split: np.ndarray  # per document of the unit: 0 train, 1 dev, -1 dropped by sampling
    folder: Path  # the unit's finished folder (written atomically: its existence is the done-marker)


_worker: dict = {}  # per process: tokenizer, maker and settings, set by _init_worker


def _init_worker(tokenizer_path: str, maker: InstanceMaker, seed: int, dupe_factor: int) -> None:
    tok = load_tokenizer(Path(tokenizer_path))
    tok.no_padding()
    tok.no_truncation()
    s = maker.specials
    _worker.update(tok=tok, maker=maker, seed=seed, dupe_factor=dupe_factor,
                   structural=frozenset({s.pad, s.cls, s.sep, s.mask}))  # fmt: skip


def _run_unit(job: UnitJob) -> tuple[int, int]:
    """Tokenise and instance one unit into job.folder; returns (unit number, documents tokenised)."""
    maker, seed, dupe_factor = _worker["maker"], _worker["seed"], _worker["dupe_factor"]
    unit = job.unit
    collected: dict[str, list[Instance]] = {split: [] for split in SPLITS}
    documents = (
        (number, sentences)
        for number, (_, sentences) in enumerate(_read_documents(unit.path, unit.offset, unit.count))
        if job.split[number] >= 0
    )
    kept = 0
    for _, batch in _batches(documents, ENCODE_SENTENCES):
        encoded = _encode(_worker["tok"], [sentences for _, sentences in batch], _worker["structural"])
        for (number, _), segments in zip(batch, encoded, strict=True):
            split = SPLITS[job.split[number]]
            for dupe in range(dupe_factor if split == "train" else 1):
                rng = np.random.default_rng([seed, unit.first + number, dupe])
                collected[split].extend(maker.from_document(segments, rng))
            kept += 1
    with atomic_dir(job.folder) as tmp:
        for split, instances in collected.items():
            _save_instances(tmp, split, instances)
    return unit.number, kept


def _save_instances(folder: Path, split: str, instances: list[Instance]) -> None:
    """A unit's instances of one split, ragged: tokens and labels concatenated, with lengths."""
    lengths = np.array([len(i.tokens) for i in instances], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int32)
    arrays = {
        "tokens": np.concatenate([i.tokens for i in instances]) if instances else empty,
        "labels": np.concatenate([i.labels for i in instances]) if instances else empty,
        "lengths": lengths,
        "a_lengths": np.array([i.a_length for i in instances], dtype=np.int64),
        "swapped": np.array([i.swapped for i in instances], dtype=np.int8),
    }
    for name, array in arrays.items():
        np.save(folder / f"{split}.{name}.npy", array, allow_pickle=False)


# ---------------------------------------------------------------- assembling: instances -> shards


class ShardWriter:
    """Fills one split's shards of `per_shard` rows from the units' instances in document order and writes
    each as shard-NNNNN.<field>.npy, rows shuffled within the shard (seeded) so a shard never reads as one
    document after another. Holds one shard in memory at most."""

    def __init__(self, folder: Path, split: str, max_seq_len: int, pad: int, per_shard: int, seed: int,
                 dtypes: dict[str, np.dtype]):  # fmt: skip
        self.folder, self.split, self.max_seq_len, self.pad = folder, split, max_seq_len, pad
        self.per_shard, self.seed, self.dtypes = per_shard, seed, dtypes
        self.shards: list[dict] = []
        self.tokens = 0
        self._new()

    def _new(self, rows: int = 1024) -> None:
        # Start small and double up to per_shard: a small split (dev) never holds a full shard's memory.
        n, L = min(rows, self.per_shard), self.max_seq_len
        self.arrays = {
            "input_ids": np.full((n, L), self.pad, dtype=self.dtypes["input_ids"]),
            "mlm_labels": np.full((n, L), IGNORE, dtype=self.dtypes["mlm_labels"]),
            "token_type_ids": np.zeros((n, L), dtype=self.dtypes["token_type_ids"]),
            "sop_labels": np.zeros(n, dtype=self.dtypes["sop_labels"]),
            "lengths": np.zeros(n, dtype=self.dtypes["lengths"]),
        }
        self.filled = 0

    def _grow(self) -> None:
        old, filled = self.arrays, self.filled
        self._new(2 * len(old["lengths"]))
        for name, array in old.items():
            self.arrays[name][:filled] = array
        self.filled = filled

    def add_unit(self, unit_folder: Path) -> None:
        load = {name: np.load(unit_folder / f"{self.split}.{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in ("tokens", "labels", "lengths", "a_lengths", "swapped")}  # fmt: skip
        ends = np.cumsum(load["lengths"])
        starts = ends - load["lengths"]
        for i in range(len(load["lengths"])):
            if self.filled == len(self.arrays["lengths"]):
                self._grow()
            row, n = self.filled, int(load["lengths"][i])
            a = self.arrays
            a["input_ids"][row, :n] = load["tokens"][starts[i] : ends[i]]
            a["mlm_labels"][row, :n] = load["labels"][starts[i] : ends[i]]
            a["token_type_ids"][row, int(load["a_lengths"][i]) : n] = 1
            a["sop_labels"][row] = load["swapped"][i]
            a["lengths"][row] = n
            self.filled += 1
            if self.filled == self.per_shard:
                self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        number = len(self.shards)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), number])
        order = rng.permutation(self.filled)
        name = f"shard-{number:05d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        digests = {}
        for field_name, array in self.arrays.items():
            path = self.folder / f"{name}.{field_name}.npy"
            np.save(path, array[: self.filled][order], allow_pickle=False)
            digests[field_name] = sha256_file(path)
        self.shards.append({"name": name, "instances": self.filled, "sha256": digests})
        self.tokens += int(self.arrays["lengths"][: self.filled].sum())
        self._new()

    def summary(self) -> dict:
        return {"instances": sum(s["instances"] for s in self.shards), "tokens": self.tokens, "shards": self.shards}


# ---------------------------------------------------------------- building

UNIT_SENTENCES = 100000  # sentences per work unit (~10 MB of text): the grain of parallelism and of resuming
FORMAT = 2  # bump when the shards' bytes change for the same inputs, so old work and outputs are not reused
_after_unit = None  # test hook: called with the unit number after each unit is done (to simulate a kill)


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
    sample_probs: list[float] | None = None,
    workers: int = 1,
) -> dict:
    """Write <out_dir>/{train,dev}/shard-NNNNN.<field>.npy and manifest.json; returns the manifest.

    Train documents are passed over `dupe_factor` times (new chunk cuts, swaps and masks each time); dev
    documents once, since evaluation needs no duplicates. Each (document, pass) draws from its own
    Generator seeded by (seed, document number, pass), and shards are assembled in document order, so the
    bytes depend only on the inputs and `seed`, never on `workers`.

    `sample_probs[i]`: each document of text_dirs[i] is kept with this probability (a draw keyed by seed,
    i and the document's index in its source); dropped documents keep their numbers, so the others'
    instances do not change. Work goes through <out_dir>.work/ one unit of documents at a time: a killed
    run resumes from its finished units, and a rerun on the same inputs returns the existing manifest.
    """
    text_dirs = [Path(d) for d in text_dirs]
    out_dir = Path(out_dir)
    if max_predictions is None:
        max_predictions = round(masked_lm_prob * max_seq_len)
    if sample_probs is None:
        sample_probs = [1.0] * len(text_dirs)
    sample_probs = [float(p) for p in sample_probs]
    _check_settings(text_dirs, max_seq_len, dev_fraction, masked_lm_prob, max_predictions, short_seq_prob,
                    dupe_factor, instances_per_shard, sample_probs, workers)  # fmt: skip
    tokenizer_file = Path(tokenizer_path)
    if tokenizer_file.is_dir():
        tokenizer_file = tokenizer_file / "tokenizer.json"
    tok = load_tokenizer(tokenizer_file)
    specials = special_tokens(tok)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    maker = InstanceMaker(max_seq_len, specials, vocab_size, masked_lm_prob, max_predictions, short_seq_prob)
    settings = {
        "max_seq_len": max_seq_len, "seed": seed, "dev_fraction": dev_fraction, "masked_lm_prob": masked_lm_prob,
        "max_predictions": max_predictions, "short_seq_prob": short_seq_prob, "dupe_factor": dupe_factor,
        "instances_per_shard": instances_per_shard, "sample_probs": sample_probs,
    }  # fmt: skip
    files = {d: part_files(d) for d in text_dirs}
    inputs_key = _inputs_key(files, sha256_file(tokenizer_file), settings)
    done = _finished(out_dir, inputs_key)
    if done is not None:
        return done

    work = Path(f"{out_dir}.work") / f"{inputs_key[:16]}-{UNIT_SENTENCES}"
    _clear_other_work(work)
    units, positions, sources = _index(files, UNIT_SENTENCES, workers)
    split = _assign_splits(positions, sources, sample_probs, seed, dev_fraction)
    for i, source in enumerate(sources):
        kept = int((split[source["first"] : source["first"] + source["documents"]] >= 0).sum())
        source.update(sample_prob=sample_probs[i], kept=kept, dropped=source["documents"] - kept)
        del source["first"]

    jobs = [UnitJob(u, split[u.first : u.first + u.count], work / f"unit-{u.number:06d}") for u in units]
    _run_units([j for j in jobs if not j.folder.is_dir()], len(jobs), str(tokenizer_file), maker, seed,
               dupe_factor, workers)  # fmt: skip

    dtypes = field_dtypes(vocab_size)
    with atomic_dir(out_dir) as tmp:
        writers = {
            name: ShardWriter(tmp / name, name, max_seq_len, specials.pad, instances_per_shard, seed, dtypes)
            for name in SPLITS
        }
        for job in tqdm(jobs, desc="assemble", unit="unit", disable=None):
            for writer in writers.values():
                writer.add_unit(job.folder)
        for writer in writers.values():
            writer.flush()
        if writers["train"].summary()["instances"] == 0:
            raise InputError(f"{', '.join(map(str, text_dirs))}: no training instance could be made")
        copy_tokenizer(tokenizer_file, tmp / "tokenizer.json")
        manifest = {
            "format": FORMAT,
            "inputs_key": inputs_key,
            "max_seq_len": max_seq_len,
            "tokenizer": {
                "path": str(tokenizer_file),
                "copy": "tokenizer.json",  # byte-identical copy beside the shards
                "sha256": sha256_file(tokenizer_file),
                "vocab_size": vocab_size,
                "specials": {name: getattr(specials, name) for name in ("pad", "cls", "sep", "mask", "unk")},
            },
            "sources": sources,
            **{k: v for k, v in settings.items() if k not in ("max_seq_len", "instances_per_shard", "sample_probs")},
            "documents": {"train": int((split == 0).sum()), "dev": int((split == 1).sum())},
            "splits": {name: writer.summary() for name, writer in writers.items()},
            "fields": {name: dtype.name for name, dtype in dtypes.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work.parent, ignore_errors=True)
    return manifest


def _inputs_key(files: dict[Path, list[Path]], tokenizer_sha: str, settings: dict) -> str:
    """sha256 of what the shards depend on: each part file's name, size and mtime, each stats.json's bytes,
    the tokenizer's sha256, the settings and the format version."""
    sources = []
    for d, paths in files.items():
        stats = d / "stats.json"
        sources.append({
            "stats": sha256_file(stats) if stats.is_file() else None,
            "parts": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths],
        })  # fmt: skip
    text = json.dumps({"format": FORMAT, "sources": sources, "tokenizer": tokenizer_sha, "settings": settings})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _finished(out_dir: Path, inputs_key: str) -> dict | None:
    """The manifest of an earlier build of the same inputs, if its shard files are all there."""
    try:
        manifest = read_manifest(out_dir)
    except InputError:
        return None
    if manifest.get("inputs_key") != inputs_key:
        return None
    for name, info in manifest["splits"].items():
        for shard in info["shards"]:
            if not all((out_dir / name / f"{shard['name']}.{f}.npy").is_file() for f in manifest["fields"]):
                return None
    return manifest


def _clear_other_work(work: Path) -> None:
    # Units of other inputs (an earlier, changed corpus or setting) can never be reused.
    if work.parent.is_dir():
        for other in work.parent.iterdir():
            if other != work:
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)


def _pool(workers: int, initializer=None, initargs=()):
    # fork: workers share the parent's imports (torch) instead of re-importing them; the parent has not
    # encoded anything, so tokenizers' Rust thread pool is still usable in the children.
    return multiprocessing.get_context("fork").Pool(workers, initializer=initializer, initargs=initargs)


def _index(files: dict[Path, list[Path]], unit_sentences: int, workers: int) -> tuple[list[Unit], np.ndarray, list]:
    """Units, every document's split position, and per source {path, documents, stats, first}."""
    flat = [(str(p), unit_sentences) for paths in files.values() for p in paths]
    if workers > 1:
        with _pool(workers) as pool:
            results = list(tqdm(pool.imap(_index_file, flat), total=len(flat), desc="index", unit="file", disable=None))
    else:
        results = [_index_file(a) for a in tqdm(flat, desc="index", unit="file", disable=None)]
    units, positions, sources = [], [], []
    first = 0
    results_iter = iter(results)
    for d, paths in files.items():
        source_first = first
        for path in paths:
            file_positions, cuts = next(results_iter)
            positions.append(file_positions)
            for offset, count in cuts:
                units.append(Unit(len(units), str(path), offset, first, count))
                first += count
        if first == source_first:
            raise InputError(f"{d}: its part-*.txt files hold no documents")
        stats_path = d / "stats.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else None
        sources.append({"path": str(d), "documents": first - source_first, "stats": stats, "first": source_first})
    return units, np.concatenate(positions), sources


def _assign_splits(positions: np.ndarray, sources: list[dict], sample_probs: list[float], seed: int,
                   dev_fraction: float) -> np.ndarray:  # fmt: skip
    """Per document: 0 train, 1 dev, -1 dropped. Sampling first (by source), then the dev split among the
    kept documents (by text, as before)."""
    keep = np.ones(len(positions), dtype=bool)
    for i, (source, p) in enumerate(zip(sources, sample_probs, strict=True)):
        if p < 1:
            indices = np.arange(source["documents"], dtype=np.uint64)
            keep[source["first"] : source["first"] + source["documents"]] = uniform_draws(seed, i, indices) < p
    split = np.full(len(positions), -1, dtype=np.int8)
    split[keep] = dev_documents(positions[keep], dev_fraction).astype(np.int8)
    return split


def _run_units(jobs: list[UnitJob], total: int, tokenizer_file: str, maker: InstanceMaker, seed: int,
               dupe_factor: int, workers: int) -> None:  # fmt: skip
    """Run the units not yet done, in a pool or in this process; each finished unit is a folder in work/."""
    initargs = (tokenizer_file, maker, seed, dupe_factor)
    with tqdm(total=total, initial=total - len(jobs), desc="shards", unit="unit", disable=None) as bar:
        if workers > 1 and len(jobs) > 1:
            with _pool(workers, _init_worker, initargs) as pool:
                for number, _ in pool.imap_unordered(_run_unit, jobs):
                    bar.update(1)
                    if _after_unit is not None:
                        _after_unit(number)
        else:
            _init_worker(*initargs)
            for job in jobs:
                number, _ = _run_unit(job)
                bar.update(1)
                if _after_unit is not None:
                    _after_unit(number)


def _check_settings(text_dirs, max_seq_len, dev_fraction, masked_lm_prob, max_predictions, short_seq_prob,
                    dupe_factor, instances_per_shard, sample_probs, workers) -> None:  # fmt: skip
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
        (len(sample_probs) == len(text_dirs), f"sample_probs has {len(sample_probs)} values for {len(text_dirs)} "
         "text folders (expected one per folder)"),
        (all(0 < p <= 1 for p in sample_probs), f"sample_probs {sample_probs} are not all in (0, 1]"),
        (workers >= 1, f"workers {workers} is below 1"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise InputError(f"shards: {message}")


def _batches(documents: Iterator, sentences: int) -> Iterator[tuple[int, list]]:
    """(number of the first item, items) of (key, sentences) items holding about `sentences` sentences."""
    batch: list = []
    start = size = 0
    for item in documents:
        batch.append(item)
        size += len(item[1])
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
            for name, dtype in self.manifest["fields"].items():
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
