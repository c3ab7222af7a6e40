"""A resumable work folder for a stage that turns input byte ranges into documents.

The inputs are cut into work units (a large file into line-aligned byte ranges, small files grouped into one
unit). Each unit writes `<out>.work/unit-<key>.txt` (its documents, each ending in a blank line) and then,
last and atomically, the done-marker `unit-<key>.json` (its counts). The key hashes what the unit's output
depends on: each range's path, size, mtime_ns and byte range, and the stage's settings. A rerun skips the
units whose marker exists (data/work_units.py runs the others), so a killed run goes on where it stopped; the
final folder is assembled from the units in input order, so it does not depend on how many processes made them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from effbert.data.documents_format import part_name
from effbert.files import atomic_path, write_json

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Range:
    """Bytes [start, end) of one input file (a compressed file is always whole: start 0, end its size)."""

    path: str
    start: int
    end: int


@dataclass(frozen=True)
class Unit:
    ranges: tuple[Range, ...]
    key: str

    @property
    def size(self) -> int:
        return sum(r.end - r.start for r in self.ranges)


def make_unit(ranges: Iterable[Range], settings: object) -> Unit:
    """The unit with its key: sha256 of the ranges (with each file's size and mtime) and the settings."""
    ranges = tuple(ranges)
    identity = []
    for r in ranges:
        st = os.stat(r.path)
        identity.append([r.path, st.st_size, st.st_mtime_ns, r.start, r.end])
    blob = json.dumps([identity, settings], sort_keys=True).encode("utf-8")
    return Unit(ranges, hashlib.sha256(blob).hexdigest()[:32])


def line_aligned_cuts(path: Path, chunk_bytes: int, blank_line_window: int = 0) -> list[int]:
    """Offsets [0, ..., size] cutting the file into ranges of about chunk_bytes, each cut just after a newline.

    With blank_line_window > 0 a cut moves on to just after the next blank line when one follows within that
    many bytes, so that runs of lines (documents) are not cut in two where they can be kept whole."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for nominal in range(chunk_bytes, size, chunk_bytes):
            if nominal <= cuts[-1]:
                continue
            f.seek(nominal - 1)
            f.readline()  # to the end of the line holding byte nominal - 1
            cut = position = f.tell()
            while blank_line_window and position - cut < blank_line_window:
                line = f.readline()
                if not line:
                    break
                position += len(line)
                if not line.strip():
                    cut = position
                    break
            if cut >= size:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
    return cuts + [size]


def unit_paths(work: Path, unit: Unit) -> tuple[Path, Path]:
    return work / f"unit-{unit.key}.txt", work / f"unit-{unit.key}.json"


def unit_done(work: Path, unit: Unit) -> bool:
    """The unit's done-marker (work_units.py's rule): its marker, written last, is there (and its text)."""
    text_path, marker_path = unit_paths(work, unit)
    return marker_path.is_file() and text_path.is_file()


def load_marker(work: Path, unit: Unit) -> dict:
    """A done unit's counts, from its marker."""
    return json.loads(unit_paths(work, unit)[1].read_text(encoding="utf-8"))


def write_unit(work: Path, unit: Unit, documents: Iterable[list[str]], counts: dict) -> None:
    """Write the unit's documents, then its marker (last, atomically). `counts` is filled while the documents
    are consumed, so the marker holds the final values."""
    text_path, marker_path = unit_paths(work, unit)
    with atomic_path(text_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for document in documents:
            f.write("".join(sentence + "\n" for sentence in document) + "\n")
    write_json(marker_path, counts)


class PartWriter:
    """part-00000.txt, part-00001.txt ...: `per_part` documents each, a blank line between documents."""

    def __init__(self, folder: Path, per_part: int):
        self.folder, self.per_part = folder, per_part
        self.count = 0
        self._file: IO[bytes] | None = None
        self._in_part = 0

    def copy_unit(self, text_path: Path) -> None:
        """Append a unit file's documents (each ending "\\n\\n"; sentences are never empty lines), in blocks."""
        carry = b""
        with open(text_path, "rb") as f:
            while block := f.read(_BLOCK):
                data = carry + block
                cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
                self._write_documents(data[:cut])
                carry = data[cut:]
        if carry:
            raise ValueError(f"{text_path}: unit file does not end with a blank line")

    def _write_documents(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self._file is None or self._in_part == self.per_part:
                self._open_next()
            room = self.per_part - self._in_part
            end, taken = position, 0
            while taken < room and end < len(data):
                end = data.index(b"\n\n", end) + 2
                taken += 1
            if self._in_part:
                self._file.write(b"\n")
            self._file.write(data[position : end - 1])  # the last blank line waits for a following document
            self._in_part += taken
            position = end

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.folder / part_name(self.count), "wb")
        self.count += 1
        self._in_part = 0

    def close(self) -> None:
        if self.count == 0:
            self._open_next()  # always at least part-00000.txt, so readers find the layout even when empty
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
