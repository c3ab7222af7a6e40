"""The documents format, written by `effbert documents` and read by the tokenizer and shards stages:
<dir>/part-NNNNN.txt, one sentence per line, a blank line between documents (BERT's pretraining text
format). Lines end at "\\n" and are stripped. This module is its one reader; workfolder.py writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from effbert.errors import InputError


def part_name(number: int) -> str:
    return f"part-{number:05d}.txt"


def part_files(text_dir: Path) -> list[Path]:
    """The part files of one documents folder, in name order; InputError when there are none."""
    files = sorted(Path(text_dir).glob("part-*.txt"))
    if not files:
        raise InputError(f"{text_dir}: no part-*.txt files (expected the output of `effbert documents`)")
    return files


def read_documents(path: str | Path, offset: int = 0, count: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(byte offset, sentences) of the documents of one part file from `offset`, `count` of them at most.
    Read as bytes, so that a reader can seek to a document's offset (the shards stage's work units)."""
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


def iter_documents(text_dir: Path) -> Iterator[list[str]]:
    """Every document of one folder, as its list of sentences, in part-file order."""
    for path in part_files(text_dir):
        for _, sentences in read_documents(path):
            yield sentences


def iter_sentences(text_dirs: list[Path]) -> Iterator[str]:
    """Every sentence of the folders, in order (what a tokenizer trains on)."""
    for text_dir in text_dirs:
        for document in iter_documents(text_dir):
            yield from document
