"""Raw corpora -> documents in BERT's pretraining text format: one sentence per line, a blank line between
documents, in `<out>/part-NNNNN.txt` (10,000 documents a part) plus `<out>/stats.json`.

Sources (`inputs` is one file, or a folder searched recursively for the listed suffixes):
  wiki        MediaWiki XML dumps (*.xml, *.xml.bz2) run through wikiextractor 3.1.0 (--json --no-templates,
              plain text rather than HTML-escaped). Templates, tables, lists, refs and categories are dropped
              by wikiextractor; section headings ('== History ==' lines) are removed from the wikitext before
              it (it would keep them as a one-line paragraph "History."); the page title is not text.
  bookcorpus  plain text (books_large_p1.txt ...): runs of non-blank lines separated by blank lines are
              documents, so a folder of one-book-per-file texts gives one document per book when the books
              hold no blank lines, and a blank-line separated file gives one document per run.
  stories     CC-Stories: *.txt files, one story per file (blank lines inside a story are ignored).
  realnews    jsonl, one article per line in the field "text" (also *.jsonl.gz).
Every non-blank line is split into sentences by a small regex splitter (end punctuation, then space and an
upper-case letter, digit or opening quote; common abbreviations and initials do not end a sentence).

Documents with fewer words (whitespace-separated) than min_words are skipped; the defaults are in
DEFAULT_MIN_WORDS (128 for Wikipedia, as the Nystromformer preprocessing did).

The dump reaches wikiextractor through a named pipe, fed by a thread that decompresses it and checks it on
the way with expat: a truncated or corrupt .bz2 or malformed XML becomes an InputError naming the file
(and line), where wikiextractor alone prints a traceback from its reading process and then hangs, its
writer process waiting for pages that never come. The thread also adds the
<siteinfo> block wikiextractor needs (it reads the Template namespace from it and, without one, skips every
page); the real dumps have it, extracts such as single-article exports often do not.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from xml.parsers import expat

from tqdm import tqdm

from effbert.errors import InputError
from effbert.files import atomic_dir, write_json

DEFAULT_MIN_WORDS = {"wiki": 128, "bookcorpus": 0, "stories": 0, "realnews": 1000}
INPUT_SUFFIXES = {
    "wiki": (".xml", ".xml.bz2"),
    "bookcorpus": (".txt",),
    "stories": (".txt",),
    "realnews": (".jsonl", ".jsonl.gz"),
}
DOCUMENTS_PER_PART = 10_000

Document = list[str]  # its sentences, in order


def build_documents(
    source: str, inputs: Path, out_dir: Path, *, min_words: int | None = None, processes: int = 1
) -> dict:
    """Read `inputs` as `source`, write `out_dir` atomically, and return the stats written to stats.json.

    `processes` is the number of wikiextractor workers (wiki only)."""
    if source not in READERS:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(READERS)}")
    files = input_files(source, Path(inputs))
    min_words = DEFAULT_MIN_WORDS[source] if min_words is None else min_words
    read = READERS[source]
    skipped: Counter[str] = Counter()
    documents = words = sentences = 0
    with atomic_dir(out_dir) as tmp, _PartWriter(tmp) as parts:
        with tqdm(desc=f"documents ({source})", unit=" doc", disable=None) as bar:
            for path in files:
                for document in read(path, processes):
                    bar.update()
                    count = sum(len(sentence.split()) for sentence in document)
                    if count == 0:
                        skipped["empty"] += 1
                    elif count < min_words:
                        skipped["too_short"] += 1
                    else:
                        parts.write(document)
                        documents += 1
                        words += count
                        sentences += len(document)
        parts.close()
        stats = {
            "source": source,
            "inputs": [str(path) for path in files],
            "documents": documents,
            "words": words,
            "sentences": sentences,
            "parts": parts.count,
            "skipped": dict(sorted(skipped.items())),
            "min_words": min_words,
        }
        write_json(tmp / "stats.json", stats)
    return stats


def input_files(source: str, inputs: Path) -> list[Path]:
    """`inputs` itself, or the files under the folder `inputs` with the source's suffixes, sorted."""
    if not inputs.exists():
        raise InputError(f"{inputs}: input path does not exist")
    if inputs.is_dir():
        suffixes = INPUT_SUFFIXES[source]
        files = sorted(p for p in inputs.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise InputError(f"{inputs}: folder holds no {source} input files (expected {', '.join(suffixes)})")
    else:
        files = [inputs]
    for path in files:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: input file is empty")
    return files


class _PartWriter:
    """part-00000.txt, part-00001.txt ...: DOCUMENTS_PER_PART documents each, separated by a blank line."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        self._file: IO[str] | None = None
        self._in_part = 0

    def write(self, document: Document) -> None:
        if self._file is None or self._in_part == DOCUMENTS_PER_PART:
            self._open_next()
        elif self._in_part:
            self._file.write("\n")
        self._file.write("".join(sentence + "\n" for sentence in document))
        self._in_part += 1

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.folder / f"part-{self.count:05d}.txt", "w", encoding="utf-8")
        self.count += 1
        self._in_part = 0

    def close(self) -> None:
        if self.count == 0:
            self._open_next()  # always at least part-00000.txt, so readers find the layout even when empty
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


# ---------------------------------------------------------------------------------------------------------
# Sentences

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc fig no nos vol ch pp approx ca inc ltd co corp mt ft gen col lt sgt "
    "capt cpt rev hon gov sen rep jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# end punctuation (+ closing quotes/brackets), whitespace, then what may open a sentence
_BOUNDARY = re.compile(r"""([.!?]+["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])""")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)")  # what a dropped template leaves: "( )", "(; )"
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")
_SPACES = re.compile(r"\s+")
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")


def split_sentences(text: str) -> list[str]:
    """Split one paragraph into sentences."""
    text = _SPACES.sub(" ", text).strip()
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        words = text[start : m.start(1) + 1].split()
        if not words or _is_abbreviation(words[-1]):
            continue
        sentences.append(text[start : m.end(1)])
        start = m.end()
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _is_abbreviation(token: str) -> bool:
    """'Dr.', 'U.S.', 'e.g.' or an initial 'J.': a full stop that does not end the sentence."""
    if not token.endswith("."):
        return False
    core = token.rstrip(".").lstrip("\"'(\u201c\u2018[").lower()
    return core in _ABBREVIATIONS or (len(core) == 1 and core.isalpha()) or "." in core


def _paragraphs_to_sentences(paragraphs: Iterator[str] | list[str]) -> Document:
    return [sentence for paragraph in paragraphs if paragraph.strip() for sentence in split_sentences(paragraph)]


# ---------------------------------------------------------------------------------------------------------
# Plain text: bookcorpus, stories


def _text_lines(path: Path) -> Iterator[str]:
    """Decoded lines, each decoded alone so that bad UTF-8 is reported with its line number."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: line {number}: not UTF-8 text ({e.reason})") from None


def _read_bookcorpus(path: Path, processes: int) -> Iterator[Document]:
    run: list[str] = []
    for line in _text_lines(path):
        if line.strip():
            run.append(line)
        elif run:
            yield _paragraphs_to_sentences(run)
            run = []
    if run:
        yield _paragraphs_to_sentences(run)


def _read_story(path: Path, processes: int) -> Iterator[Document]:
    yield _paragraphs_to_sentences(_text_lines(path))


# ---------------------------------------------------------------------------------------------------------
# RealNews


def _read_realnews(path: Path, processes: int) -> Iterator[Document]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                raise InputError(f"{path}: line {number}: not valid JSON ({e})") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise InputError(f'{path}: line {number}: expected a JSON object with a string field "text"')
            yield _paragraphs_to_sentences(text.split("\n"))


# ---------------------------------------------------------------------------------------------------------
# Wikipedia


def _read_wiki(path: Path, processes: int) -> Iterator[Document]:
    with tempfile.TemporaryDirectory(prefix="effbert-wiki-") as tmp:
        pipe = Path(tmp) / "dump.xml"  # the .xml name tells wikiextractor to read it as plain text
        os.mkfifo(pipe)
        log_path = Path(tmp) / "wikiextractor.log"
        command = [
            sys.executable, "-m", "wikiextractor.WikiExtractor", str(pipe), "--output", "-", "--json",
            "--no-templates", "--html-safe", "", "--processes", str(max(1, processes)), "--quiet",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            # its own process group, so that stopping early also stops its worker and writer processes
            extractor = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, encoding="utf-8", start_new_session=True
            )
        feeder = _DumpFeeder(path, pipe)
        feeder.start()
        threading.Thread(target=_stop_group_on_failure, args=(extractor,), daemon=True).start()
        try:
            for line in extractor.stdout:
                yield _wiki_document(json.loads(line)["text"])
        finally:
            if extractor.poll() is None:  # stopped early: the caller failed or closed us
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(extractor.pid, signal.SIGKILL)
            extractor.stdout.close()
            extractor.wait()
            _unblock_writer(pipe)
            feeder.join()
        if feeder.error is not None:
            raise feeder.error
        if extractor.returncode != 0:
            log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"wikiextractor failed on {path} (exit {extractor.returncode}):\n{log_tail}")


def _stop_group_on_failure(extractor: subprocess.Popen) -> None:
    """When wikiextractor's main process fails, its writer process would wait for work forever, holding the
    output open: stop the whole group so the reading loop sees the end of the output."""
    if extractor.wait() != 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(extractor.pid, signal.SIGKILL)


def _wiki_document(text: str) -> Document:
    paragraphs = (_tidy(line) for line in text.split("\n"))
    return _paragraphs_to_sentences(p for p in paragraphs if p)


def _tidy(paragraph: str) -> str:
    """Drop what wikiextractor leaves of markup: stray tags such as <onlyinclude>, brackets emptied of templates."""
    paragraph = _EMPTY_BRACKETS.sub("", _LEFTOVER_TAG.sub("", paragraph))
    paragraph = _SPACES.sub(" ", paragraph).strip()
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", paragraph)


def _unblock_writer(pipe: Path) -> None:
    """Open and close the read end, so a feeder still waiting to open the pipe goes on (and finds no reader)."""
    try:
        os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pass


_CHUNK = 1 << 20
_SITEINFO_SCAN_LIMIT = 1 << 24
_TEMPLATE_NAMESPACE = b'<namespaces>\n<namespace key="10" case="first-letter">Template</namespace>\n</namespaces>\n'
_MINIMAL_SITEINFO = b"<siteinfo>\n" + _TEMPLATE_NAMESPACE + b"</siteinfo>\n"
# a section heading of the wikitext, '== History ==' (its text is not prose; wikiextractor would keep it)
_HEADING_LINE = re.compile(rb"^[ \t]*(={1,6})[^=\n].*?\1[ \t]*\r?\n", re.MULTILINE)


class _DumpFeeder(threading.Thread):
    """Writes the checked, decompressed dump into the pipe; keeps the InputError for the reader to raise."""

    def __init__(self, dump: Path, pipe: Path):
        super().__init__(daemon=True)
        self.dump, self.pipe = dump, pipe
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.pipe, "wb") as out:
                for chunk in _checked_dump(self.dump):
                    out.write(chunk)
        except BrokenPipeError:
            pass  # wikiextractor stopped reading: its exit status or the caller says why
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread, which raises it
            self.error = e


def _checked_dump(dump: Path) -> Iterator[bytes]:
    """The dump's bytes, decompressed, checked as XML, with a usable <siteinfo> and without section headings."""
    for chunk in _ensure_siteinfo(_line_aligned(_validated_chunks(dump))):
        yield _HEADING_LINE.sub(b"\n", chunk)  # an empty line keeps the paragraphs on either side apart


def _validated_chunks(dump: Path) -> Iterator[bytes]:
    opener: Callable[..., IO[bytes]] = bz2.open if dump.name.endswith(".bz2") else open
    parser = expat.ParserCreate()
    try:
        with opener(dump, "rb") as f:
            while chunk := f.read(_CHUNK):
                parser.Parse(chunk, False)
                yield chunk
            parser.Parse(b"", True)
    except (EOFError, OSError) as e:
        raise InputError(f"{dump}: truncated or corrupt compressed dump ({e})") from None
    except expat.ExpatError as e:
        raise InputError(f"{dump}: line {e.lineno}: malformed XML ({expat.ErrorString(e.code)})") from None


def _line_aligned(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Chunks cut after a newline, so that line patterns never straddle two chunks."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
    if carry:
        yield carry


def _ensure_siteinfo(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Declare the Template namespace before the first page, adding a <siteinfo> block where there is none."""
    head = b""
    for chunk in chunks:
        if head is None:
            yield chunk
            continue
        head += chunk
        end, page = head.find(b"</siteinfo>"), head.find(b"<page")
        if end != -1 and (page == -1 or end < page):
            yield head if b'key="10"' in head[:end] else head[:end] + _TEMPLATE_NAMESPACE + head[end:]
        elif page != -1:
            yield head[:page] + _MINIMAL_SITEINFO + head[page:]
        elif len(head) > _SITEINFO_SCAN_LIMIT:
            yield head
        else:
            continue
        head = None
    if head:
        yield head


READERS: dict[str, Callable[[Path, int], Iterator[Document]]] = {
    "wiki": _read_wiki,
    "bookcorpus": _read_bookcorpus,
    "stories": _read_story,
    "realnews": _read_realnews,
}
