"""The shard set's files: one .npy per field and shard, a manifest.json, and the reader over them.

    <out>/manifest.json                      counts, length, tokenizer, sources, seed, masking, fields' dtypes
    <out>/{train,dev}/shard-NNNNN.<field>.npy one array per field (FIELDS), rows shuffled within the shard

Token ids are uint16 when the vocabulary fits (labels int16 up to 32768), else int32 (field_dtypes).
Files are read memory-mapped with allow_pickle=False: nothing is loaded until a batch asks for it.

Before a model trains on a shard set, verify_shards checks every file against the manifest (sha256) and
its token ids against the vocabulary; what it has verified is recorded in <out>/verified.json by each
file's size and mtime, so the full pass runs once per shard set and again only for a file that changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from effbert.constants import IGNORE
from effbert.errors import InputError
from effbert.files import read_json, sha256_file, write_json

if TYPE_CHECKING:
    import torch

# The widest dtype of each field; field_dtypes narrows the ids for vocabularies that fit (the manifest says).
FIELDS = {
    "input_ids": np.int32,  # (B, L) masked input, pad id beyond the length
    "mlm_labels": np.int32,  # (B, L) original id where a prediction is asked, IGNORE elsewhere
    "token_type_ids": np.int8,  # (B, L)
    "sop_labels": np.int8,  # (B,) 0 = A before B as in the document, 1 = swapped
    "lengths": np.int32,  # (B,) real tokens including CLS and the two SEPs
}
SPLITS = ("train", "dev")
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
RECORD_EVERY_S = 60.0  # how often a long check of a shard set records its progress in VERIFIED
_TOKEN_FIELDS = ("input_ids", "mlm_labels")  # hold token ids (labels: IGNORE where nothing is predicted)


def field_dtypes(vocab_size: int) -> dict[str, np.dtype]:
    """On-disk dtype of every field: token ids in uint16 while the vocabulary fits (BERT 30522, RoBERTa
    50265), labels (ids or IGNORE = -100) in int16 while it fits there (BERT yes, RoBERTa no)."""
    dtypes = dict(FIELDS)
    if vocab_size <= 1 << 16:
        dtypes["input_ids"] = np.uint16
    if vocab_size <= 1 << 15:
        dtypes["mlm_labels"] = np.int16
    return {name: np.dtype(d) for name, d in dtypes.items()}


def shard_file(split_dir: Path, shard: str, field: str) -> Path:
    """<out>/<split>/shard-NNNNN.<field>.npy: one field of one shard."""
    return Path(split_dir) / f"{shard}.{field}.npy"


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save without pickles; a failed write names the file (numpy's "N requested and M written" does not)."""
    try:
        np.save(path, array, allow_pickle=False)
    except OSError as e:
        message = f"could not write {path.name} ({e}); is the disk full?"
        raise OSError(e.errno or errno.EIO, message, str(path)) from None


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
            path = shard_file(self.folder, name, field_name)
            save_array(path, array[: self.filled][order])
            digests[field_name] = sha256_file(path)
        self.shards.append({"name": name, "instances": self.filled, "sha256": digests})
        self.tokens += int(self.arrays["lengths"][: self.filled].sum())
        self._new()

    def summary(self) -> dict:
        return {"instances": sum(s["instances"] for s in self.shards), "tokens": self.tokens, "shards": self.shards}


def read_manifest(out_dir: Path) -> dict:
    """The manifest.json of a shards folder, checked for the keys readers rely on."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: not found (expected the output of `effbert shards`)")
    manifest = read_json(path)
    for key in ("max_seq_len", "tokenizer", "splits", "fields"):
        if key not in manifest:
            raise InputError(f"{path}: key {key!r} missing")
    return manifest


def shard_set_digest(manifest: dict, manifest_path: str | Path) -> str:
    """sha256 of what a shard set is to a model trained on it: every file's sha256 and instance count, the
    fields, length, tokenizer (by its sha256) and the settings that made them; not where it was built from
    (inputs_key holds the input files' mtimes, so a touched input makes a rebuild that is byte for byte the same
    set; the paths move with the data). A manifest without per-file sha256s (format 1): its own file's sha256."""
    if not all("sha256" in shard for info in manifest["splits"].values() for shard in info["shards"]):
        return sha256_file(manifest_path)
    content = {key: value for key, value in manifest.items() if key not in ("inputs_key", "sources")}
    content["tokenizer"] = {key: value for key, value in manifest["tokenizer"].items() if key != "path"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:  # a truncated or foreign file
        raise InputError(f"{path}: not a readable shard file ({e}); rebuild the shard set") from None


def _shard_files(out_dir: Path, manifest: dict) -> list[tuple[Path, str | None]]:
    """Every shard file the manifest lists, with its recorded sha256 (None in manifests without one)."""
    found = []
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            for name in manifest["fields"]:
                found.append((shard_file(out_dir / split, shard["name"], name), shard.get("sha256", {}).get(name)))
    return found


def _verify_file(path: Path, sha256: str | None) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: shard file missing (listed in {MANIFEST}); rebuild the shard set")
    stat = path.stat()
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise InputError(f"{path}: its sha256 differs from {MANIFEST}'s: the file is damaged or was replaced; "
                         "rebuild the shard set")
    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    if path.name.split(".")[-2] in _TOKEN_FIELDS:
        array = _load(path)
        entry["min"], entry["max"] = (int(array.min()), int(array.max())) if array.size else (0, -1)
    return entry


def verify_shards(out_dir: str | Path, vocab_size: int) -> None:
    """Check every shard file of the set against the manifest and its token ids against `vocab_size`; files
    verified before (same size and mtime) are not read again. A mismatch is an InputError naming the file."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    for split, info in manifest["splits"].items():
        listed = sum(shard["instances"] for shard in info["shards"])
        if info.get("instances", listed) != listed:
            raise InputError(f"{out_dir / MANIFEST}: {split} counts {info['instances']} instances, its shards "
                             f"{listed}")
    try:
        known = json.loads((out_dir / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    verified = {}
    recorded = time.monotonic()
    files = _shard_files(out_dir, manifest)
    for path, sha256 in tqdm(files, desc=f"verify {out_dir.name}", unit="file", disable=None, leave=False):
        if time.monotonic() - recorded > RECORD_EVERY_S:  # a check cut short (a kill, a timeout) resumes near here
            _record_verified(out_dir, {**known, **verified})
            recorded = time.monotonic()
        key = str(path.relative_to(out_dir))
        seen = known.get(key)
        stat = path.stat() if path.is_file() else None
        if not (seen and stat and seen["size"] == stat.st_size and seen["mtime_ns"] == stat.st_mtime_ns
                and (sha256 is None or seen["sha256"] == sha256)):
            seen = _verify_file(path, sha256)
        if "max" in seen and (seen["max"] >= vocab_size or seen["min"] < min(0, IGNORE)):
            raise InputError(f"{path}: token ids {seen['min']}..{seen['max']} outside the vocabulary of "
                             f"{vocab_size}; rebuild the shard set with this model's tokenizer")
        verified[key] = seen
    if verified != known:
        _record_verified(out_dir, verified)


def _record_verified(out_dir: Path, verified: dict) -> None:
    try:
        write_json(out_dir / VERIFIED, verified)
    except OSError:  # a read-only shard set: verified again next time
        print(f"warning: {out_dir}: cannot record the verification in {VERIFIED}", file=sys.stderr)


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
                path = shard_file(self.out_dir / self.split, shard["name"], name)
                if not path.is_file():
                    raise InputError(f"{path}: shard file missing (listed in {MANIFEST})")
                array = _load(path)
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
        import torch  # here, not at the top: the shards stage writes shards without torch (seconds of import)
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
