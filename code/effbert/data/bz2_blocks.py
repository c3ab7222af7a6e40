"""Reading one .bz2 from any of its blocks: the block index of indexed_bzip2, kept in the work folder.

A bzip2 stream is a run of blocks (900 kB of text each at level 9) that start at bit offsets, not bytes, so
Python's bz2 cannot start in the middle of a single-stream file. indexed_bzip2 (a C++ reader with Python
bindings) finds the blocks and decodes them, verifying each block's CRC, in parallel threads; its block
index maps each block's compressed bit offset to its decompressed byte offset, and a reader given the index
seeks to any block at once. The documents stage cuts a big non-multistream dump into compressed byte spans;
a span owns the blocks that start in it, that is the decompressed bytes from its first block's start to the
next span's (`decompressed_span`). The index takes one pass over the whole file, so it is built once, by the
first unit that needs it (the others wait on its lock), and kept as JSON in the work folder, named by the
file and checked against its size and mtime.

A file that indexed_bzip2 cannot read to its end (truncated, corrupt, trailing bytes after the last stream)
has no index (None): the caller reads it whole, as Python's bz2 reads it, with its reporting.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import indexed_bzip2

from effbert.files import read_json, write_json

Index = list[tuple[int, int]]  # (compressed bit offset, decompressed byte offset), sorted
_CHUNK = 1 << 20
_END_OF_STREAM = 0x177245385090  # bzip2's 48-bit end-of-stream magic; its 32-bit CRC and 0-7 bits of padding follow


def block_index(path: Path, folder: Path | None) -> Index | None:
    """`path`'s block index, read from `folder` or built there (None: the file cannot be read to its end)."""
    if folder is None:
        return _build(path)
    folder.mkdir(parents=True, exist_ok=True)
    stat = path.stat()
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    cached, identity = folder / f"bz2-index-{name}.json", {"file": str(path), "size": stat.st_size,
                                                          "mtime_ns": stat.st_mtime_ns}  # fmt: skip
    with _locked(folder / f"bz2-index-{name}.lock"):
        with contextlib.suppress(OSError, ValueError):
            found = read_json(cached)
            if {k: found.get(k) for k in identity} == identity:
                return None if found["blocks"] is None else [(int(b), int(d)) for b, d in found["blocks"]]
        index = _build(path)
        write_json(cached, {**identity, "blocks": index})
    return index


def decompressed_span(index: Index, start: int, end: int) -> tuple[int, int]:
    """The decompressed bytes [first, last) of the blocks that start in the compressed bytes [start, end)."""
    total = index[-1][1]
    first = next((byte for bit, byte in index if bit >= 8 * start), total)
    last = next((byte for bit, byte in index if bit >= 8 * end), total)
    return first, last


def decompressed_from(path: Path, index: Index, start: int) -> Iterator[bytes]:
    """The decompressed bytes of `path` from byte `start` to its end, in chunks, decoded in this thread."""
    with indexed_bzip2.open(str(path), parallelization=1) as reader:
        reader.set_block_offsets(dict(index))
        reader.seek(start)
        while chunk := reader.read(_CHUNK):
            yield chunk


def _build(path: Path) -> Index | None:
    if not _ends_with_end_of_stream(path):
        return None
    try:
        with indexed_bzip2.open(str(path), parallelization=_threads()) as reader:
            reader.seek(0, io.SEEK_END)  # decodes every block: the index is complete, every CRC checked
            return sorted(reader.block_offsets().items())
    except (RuntimeError, ValueError, OSError):  # truncated or corrupt: indexed_bzip2's exceptions vary
        return None


def _ends_with_end_of_stream(path: Path) -> bool:
    """Whether the file's last bits are an end-of-stream marker (indexed_bzip2 passes over bytes after it,
    where Python's bz2, reading the file whole, reports them)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 11))
        tail = int.from_bytes(f.read(), "big")
    return any((tail >> (32 + pad)) & (1 << 48) - 1 == _END_OF_STREAM for pad in range(8))


def _threads() -> int:
    """Every CPU this process may use: the other units wait for the index anyway."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, waited for (the unit that holds it is building the index the waiting ones need)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
