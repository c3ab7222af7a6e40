"""Files in and out. Writing: a reader never sees half a file (a temporary name, then rename). Reading text:
one decoding policy for every text input (UTF-8, a byte-order mark allowed; an invalid byte is an error
naming the file, line and byte offset)."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from effbert.errors import InputError


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed.

    `durable`: the file's bytes are on the disk before the rename, and the rename before returning (fsync of
    the file, then of its folder), so that a machine that loses power or crashes leaves the old file or the
    whole new one, never a renamed file of zeros. For what costs GPU-days to remake (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except OSError as e:
        if e.filename is None:  # a failed write (a full disk: EFBIG, ENOSPC) names no file; name the output
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; on success it replaces `path` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(folder: str | Path, of: str = "*") -> list[Path]:
    """Delete the temporaries (files or folders) a killed writer left in `folder`, of every output or of the one
    named `of`; call it holding the writer lock."""
    found = sorted(Path(folder).glob(f".{of}.tmp-*")) if Path(folder).is_dir() else []
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return found


def write_json(path: str | Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: str | Path, *, unique_keys: bool = False):
    """A JSON file as UTF-8 (a byte-order mark accepted): the one reader of every JSON input and result.

    Damage is one InputError naming the file, line and column (an invalid byte: its line and offset). With
    `unique_keys` a key given twice in one object is an error too (json.loads keeps the last silently).
    A missing file raises FileNotFoundError, which callers word for their own context."""
    text = read_text_file(path)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys if unique_keys else None)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    except _RepeatedKey as e:
        raise InputError(f"{path}: the key {e.args[0]!r} is given twice in one object; keep one") from None


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise _RepeatedKey(key)
        found[key] = value
    return found


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decoded(path: Path, lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    offset = 0
    for number, raw in enumerate(lines, 1):
        start = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            line = raw[start:].decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[start + e.start : start + e.start + 4]
            raise InputError(f"{path}: line {number}, byte {offset + start + e.start}: not UTF-8 text "
                             f"({bad!r}); save the file as UTF-8") from None
        offset += len(raw)
        yield number, line.rstrip("\n").removesuffix("\r")


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based number, text without the line end) of each line of a UTF-8 text file, streamed."""
    path = Path(path)
    with open(path, "rb") as f:
        yield from _decoded(path, f)


def read_text_file(path: str | Path) -> str:
    """A whole UTF-8 text file (a byte-order mark dropped); an invalid byte names its line and offset."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        for _ in _decoded(path, io.BytesIO(data)):  # lines cut as text_lines cuts them: finds the line, raises
            pass
        raise
