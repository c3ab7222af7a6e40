"""Building pretraining shards: documents -> fixed-length MLM + SOP instances (effbert.data.instances)
-> the shard set's files (effbert.data.shard_files). The train/dev split is by document, from a hash of
its text, so it never depends on the seed or the tokenizer.

At scale (issue #4) the work streams in three steps, memory bounded by a unit and a shard, not the corpus:
1. index: every part file is read once (in parallel) for each document's split position and cut into
   units of about UNIT_SENTENCES sentences; sampling (sample_probs) and the dev split are decided here;
2. units: each unit is tokenised (data/sentence_encoding.py) and turned into instances by a pool of `workers`
   processes, into <out>.work/<inputs key>/unit-NNNNNN/ (written atomically: a present folder is a done
   unit, so a killed run resumes there; data/work_units.py runs the pending ones);
3. assemble: the units' instances are read in document order into shards of instances_per_shard rows.
Since every (document, pass) has its own Generator and the order is the documents', the bytes never depend
on the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from effbert.data.documents_format import part_files, read_documents
from effbert.data.instances import Instance, InstanceMaker
from effbert.data.sentence_encoding import SentenceEncoder
from effbert.data.shard_files import (
    MANIFEST,
    SPLITS,
    ShardWriter,
    field_dtypes,
    read_manifest,
    save_array,
    shard_file,
)
from effbert.data.tokenizer import copy_tokenizer, load_tokenizer, special_tokens
from effbert.data.work_units import clear_others, pending, run_pending
from effbert.errors import InputError
from effbert.files import atomic_dir, sha256_file
from effbert.locks import locks_output
from effbert.pipeline_config import ShardRecipe, ShardSettings

ENCODE_SENTENCES = 20000  # sentences per encode_batch call (parallel in Rust; books are long, so count lines)


# ---------------------------------------------------------------- documents


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


# ---------------------------------------------------------------- index: documents -> work units


@dataclass(frozen=True)
class Unit:
    """A run of consecutive documents of one part file: the work one process tokenises at a time."""

    number: int
    path: str
    offset: int  # byte offset of the first document's first line
    first: int  # global number of the first document
    count: int


def _index_file(args: tuple[str, int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Positions of a part file's documents and its cuts into units: (byte offset, documents) each,
    cut after about `unit_sentences` sentences. Units depend only on the file, never on the worker count."""
    path, unit_sentences = args
    positions, cuts = [], []
    size = 0
    for offset, sentences in read_documents(path):
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
    s = maker.specials
    _worker.update(encoder=SentenceEncoder(load_tokenizer(Path(tokenizer_path))), maker=maker, seed=seed,
                   dupe_factor=dupe_factor, structural=frozenset({s.pad, s.cls, s.sep, s.mask}))  # fmt: skip


def _run_unit(job: UnitJob) -> tuple[int, int]:
    """Tokenise and instance one unit into job.folder; returns (unit number, documents tokenised)."""
    maker, seed, dupe_factor = _worker["maker"], _worker["seed"], _worker["dupe_factor"]
    unit = job.unit
    collected: dict[str, list[Instance]] = {split: [] for split in SPLITS}
    documents = (
        (number, sentences)
        for number, (_, sentences) in enumerate(read_documents(unit.path, unit.offset, unit.count))
        if job.split[number] >= 0
    )
    kept = 0
    for batch, encoded in _encoded_batches(documents):
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
        save_array(folder / f"{split}.{name}.npy", array)


# ---------------------------------------------------------------- building

UNIT_SENTENCES = 100000  # sentences per work unit (~10 MB of text): the grain of parallelism and of resuming
FORMAT = 2  # bump when the shards' bytes change for the same inputs, so old work and outputs are not reused
_after_unit = None  # test hook: called with the unit number after each unit is done (to simulate a kill)


_DEFAULTS = ShardSettings()  # the settings' one declaration (effbert.pipeline_config)


@locks_output("shards build")  # one writer of out_dir at a time
def build_shards(
    text_dirs: list[Path],
    tokenizer_path: Path,
    out_dir: Path,
    *,
    max_seq_len: int,
    recipe: ShardRecipe | None = None,
    sample_probs: list[float] | None = None,
    workers: int = _DEFAULTS.workers,
    max_predictions: int | None = None,
    instances_per_shard: int = 100000,
) -> dict:
    """Write <out_dir>/{train,dev}/shard-NNNNN.<field>.npy and manifest.json; returns the manifest.

    `recipe` (default: ShardRecipe()'s declared defaults) says how documents become instances. Train
    documents are passed over `dupe_factor` times (new chunk cuts, swaps and masks each time); dev
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
    recipe = recipe or ShardRecipe()
    if max_predictions is None:
        max_predictions = round(recipe.masked_lm_prob * max_seq_len)
    if sample_probs is None:
        sample_probs = [1.0] * len(text_dirs)
    sample_probs = [float(p) for p in sample_probs]
    _check_settings(text_dirs, max_seq_len, recipe, max_predictions, instances_per_shard, sample_probs, workers)
    tokenizer_file, maker = _load_maker(tokenizer_path, max_seq_len, recipe, max_predictions)
    # in this order in the inputs key and the manifest (their bytes)
    settings = {
        "max_seq_len": max_seq_len, "seed": recipe.seed, "dev_fraction": recipe.dev_fraction,
        "masked_lm_prob": recipe.masked_lm_prob, "max_predictions": max_predictions,
        "short_seq_prob": recipe.short_seq_prob, "dupe_factor": recipe.dupe_factor,
        "instances_per_shard": instances_per_shard, "sample_probs": sample_probs,
    }  # fmt: skip
    files = {d: part_files(d) for d in text_dirs}
    inputs_key = _inputs_key(files, sha256_file(tokenizer_file), settings)
    done = _finished(out_dir, inputs_key)
    if done is not None:
        return done

    work = Path(f"{out_dir}.work") / f"{inputs_key[:16]}-{UNIT_SENTENCES}"
    clear_others(work)
    units, split, sources = _plan_units(files, workers, sample_probs, recipe)
    jobs = [UnitJob(u, split[u.first : u.first + u.count], work / f"unit-{u.number:06d}") for u in units]
    _run_units(jobs, str(tokenizer_file), maker, recipe, workers)
    manifest = _assemble(out_dir, jobs, text_dirs, tokenizer_file, maker, inputs_key, settings, sources, split)
    shutil.rmtree(work.parent, ignore_errors=True)
    return manifest


def _load_maker(tokenizer_path: Path, max_seq_len: int, recipe: ShardRecipe,
                max_predictions: int) -> tuple[Path, InstanceMaker]:  # fmt: skip
    """The tokenizer's file (tokenizer.json of a folder) and an InstanceMaker for its specials and vocabulary."""
    tokenizer_file = Path(tokenizer_path)
    if tokenizer_file.is_dir():
        tokenizer_file = tokenizer_file / "tokenizer.json"
    tok = load_tokenizer(tokenizer_file)
    specials = special_tokens(tok)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    maker = InstanceMaker(max_seq_len, specials, vocab_size, recipe.masked_lm_prob, max_predictions,
                          recipe.short_seq_prob)  # fmt: skip
    return tokenizer_file, maker


def _plan_units(files: dict[Path, list[Path]], workers: int, sample_probs: list[float],
                recipe: ShardRecipe) -> tuple[list[Unit], np.ndarray, list[dict]]:  # fmt: skip
    """Step 1 of the build: the work units, every document's split (0 train, 1 dev, -1 dropped), and the
    manifest's per-source entries (with how many documents sampling kept and dropped)."""
    units, positions, sources = _index(files, UNIT_SENTENCES, workers)
    split = _assign_splits(positions, sources, sample_probs, recipe.seed, recipe.dev_fraction)
    for i, source in enumerate(sources):
        kept = int((split[source["first"] : source["first"] + source["documents"]] >= 0).sum())
        source.update(sample_prob=sample_probs[i], kept=kept, dropped=source["documents"] - kept)
        del source["first"]
    return units, split, sources


def _assemble(out_dir: Path, jobs: list[UnitJob], text_dirs: list[Path], tokenizer_file: Path,
              maker: InstanceMaker, inputs_key: str, settings: dict, sources: list[dict],
              split: np.ndarray) -> dict:  # fmt: skip
    """Step 3 of the build: the finished units' instances, in document order, into out_dir's shards, the
    tokenizer's copy and manifest.json (all written atomically); returns the manifest."""
    specials, vocab_size = maker.specials, maker.vocab_size
    max_seq_len, seed, instances_per_shard = settings["max_seq_len"], settings["seed"], settings["instances_per_shard"]
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
            if not all(shard_file(out_dir / name, shard["name"], f).is_file() for f in manifest["fields"]):
                return None
    return manifest


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


def _run_units(jobs: list[UnitJob], tokenizer_file: str, maker: InstanceMaker, recipe: ShardRecipe,
               workers: int) -> None:  # fmt: skip
    """Run the units not yet done, in a pool or in this process; a unit's finished folder is its done-marker."""
    todo = pending(jobs, lambda job: job.folder.is_dir())
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="shards", unit="unit", disable=None) as bar:

        def finished(job: UnitJob, _: tuple[int, int]) -> None:
            bar.update(1)
            if _after_unit is not None:
                _after_unit(job.unit.number)

        # fork: workers share the parent's imports (torch) instead of re-importing them; the parent has not
        # encoded anything, so tokenizers' Rust thread pool is still usable in the children
        run_pending(todo, run_unit=_run_unit, workers=workers, start_method="fork", initializer=_init_worker,
                    initargs=(tokenizer_file, maker, recipe.seed, recipe.dupe_factor), on_done=finished)


def _check_settings(text_dirs: list[Path], max_seq_len: int, recipe: ShardRecipe, max_predictions: int,
                    instances_per_shard: int, sample_probs: list[float], workers: int) -> None:  # fmt: skip
    """Every value, each bad one named in one line (the CLI passes the recipe unvalidated)."""
    if not text_dirs:
        raise InputError("shards: no text folders given")
    checks = [
        (max_seq_len >= 8, f"max_seq_len {max_seq_len} is below 8"),
        (0 <= recipe.dev_fraction < 1, f"dev_fraction {recipe.dev_fraction} is not in [0, 1)"),
        (0 < recipe.masked_lm_prob < 1, f"masked_lm_prob {recipe.masked_lm_prob} is not in (0, 1)"),
        (max_predictions >= 1, f"max_predictions {max_predictions} is below 1"),
        (0 <= recipe.short_seq_prob <= 1, f"short_seq_prob {recipe.short_seq_prob} is not in [0, 1]"),
        (recipe.dupe_factor >= 1, f"dupe_factor {recipe.dupe_factor} is below 1"),
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


def _encoded_batches(documents: Iterator) -> Iterator[tuple[list, list]]:
    """(batch, its token ids) for batches of about ENCODE_SENTENCES sentences of the (key, sentences) items, in
    order; the next batch is tokenised in a thread (the Rust encoder releases the GIL) while the caller turns
    this one into instances, so the two overlap on a machine with cores to spare."""
    with concurrent.futures.ThreadPoolExecutor(1) as encoder:
        ahead = None
        for _, batch in _batches(documents, ENCODE_SENTENCES):
            encoding = encoder.submit(_encode, [sentences for _, sentences in batch])
            if ahead is not None:
                yield ahead[0], ahead[1].result()
            ahead = batch, encoding
        if ahead is not None:
            yield ahead[0], ahead[1].result()


def _encode(documents: list[list[str]]) -> list[list[list[int]]]:
    """Token ids of every sentence, grouped by document (data/sentence_encoding.py). CLS/SEP/PAD/MASK ids that
    literal strings in the text turned into are dropped, so a row's only structural tokens are the ones placed
    here."""
    structural = _worker["structural"]
    encoded = _worker["encoder"].encode(documents)
    return [[ids if structural.isdisjoint(ids) else [t for t in ids if t not in structural] for ids in doc]
            for doc in encoded]  # fmt: skip
