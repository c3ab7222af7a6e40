"""A MediaWiki XML dump (*.xml, *.xml.bz2) -> documents, through wikiextractor 3.1.0.

wikiextractor runs with --json --no-templates, plain text rather than HTML-escaped; it drops templates,
tables, lists, refs and categories. Section headings ('== History ==') are removed before it (it would keep
them as a one-line paragraph "History."); the page title is not text.

The dump reaches wikiextractor through a named pipe fed by a thread that decompresses it and checks each
<page> alone with expat, because wikiextractor alone meets bad input with a traceback in its reader and a
hang in its writer. Bad input is reported (through `report`) and the rest kept: a malformed page (bad XML,
invalid UTF-8, not closed before the next one) is left out, reported with its starting line and the error's;
a truncated .bz2 keeps the pages before the cut (not the one cut in two), reported with the compressed
byte offset and the decompressed line; a corrupt stream of a multistream .bz2 is skipped and reading goes
on at the next stream. A big .bz2 is read in compressed byte spans, one work unit each, after the dump's
header: a multistream dump's streams, any other's pages that start in its bzip2 blocks (data/bz2_blocks.py).
The thread also adds a <siteinfo> block when the dump has none (single-article exports often lack it):
wikiextractor reads the Template namespace from it and, without one, skips every page.
"""

from __future__ import annotations

import bz2
import contextlib
import itertools
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

from effbert.data import bz2_blocks
from effbert.data.sentences import Document, paragraphs_to_sentences

Report = Callable[..., None]  # report(kind, error, line=None, byte=None)

_CHUNK = 1 << 20
_SITEINFO_SCAN_LIMIT = 1 << 24
_TEMPLATE_NAMESPACE = b'<namespaces>\n<namespace key="10" case="first-letter">Template</namespace>\n</namespaces>\n'
_MINIMAL_SITEINFO = b"<siteinfo>\n" + _TEMPLATE_NAMESPACE + b"</siteinfo>\n"
# a section heading of the wikitext, '== History ==' (its text is not prose; wikiextractor would keep it): the
# newline before it and the line up to its own newline, which stays to start the next match (a page opens with
# <page>, so a heading always follows a newline). The leading newline lets the search jump from line to line.
_HEADING_LINE = re.compile(rb"\n[ \t]*(={1,6})[^=\n].*?\1[ \t]*\r?(?=\n)")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)")  # what a dropped template leaves: "( )", "(; )"
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.;:!?])")  # after white space is made single spaces
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")
_OPEN, _CLOSE = b"<page>", b"</page>"


def read_wiki(path: Path, report: Report, processes: int = 1, tally: Counter | None = None,
              span: tuple[int, int] | None = None, index_folder: Path | None = None) -> Iterator[Document]:
    """The dump's articles as documents; `processes` is wikiextractor's number of workers. `tally` counts a
    .bz2's streams: read, damaged (skipped), and the pages they held. `span`: compressed bytes of a .bz2, after
    the dump's header: a multistream dump's streams that start in it (bz2_stream_cuts), another's pages that
    start in the blocks that start in it (data/bz2_blocks.py; its block index kept in `index_folder`)."""
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
        reports: list[tuple[tuple, dict]] = []  # kept by the feeder thread, passed on from this one
        feeder = _DumpFeeder(path, pipe, lambda *a, **k: reports.append((a, k)), Counter() if tally is None else tally,
                             span, index_folder)
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
            feeder.join(timeout=60)  # it ends once the pipe has no reader; a bound all the same, never a hang
        for args, kwargs in reports:
            report(*args, **kwargs)
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
    return paragraphs_to_sentences(p for p in paragraphs if p)


def _tidy(paragraph: str) -> str:
    """Drop what wikiextractor leaves of markup: stray tags such as <onlyinclude>, brackets emptied of templates."""
    if "<" in paragraph:
        paragraph = _LEFTOVER_TAG.sub("", paragraph)
    if "(" in paragraph:
        paragraph = _EMPTY_BRACKETS.sub("", paragraph)
    paragraph = " ".join(paragraph.split())  # white space in runs as one space (str.split's is re's \s)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", paragraph)


def _unblock_writer(pipe: Path) -> None:
    """Open and close the read end, so a feeder still waiting to open the pipe goes on (and finds no reader)."""
    try:
        os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pass


class _DumpFeeder(threading.Thread):
    """Writes the checked, decompressed dump into the pipe; keeps an unexpected error for the reader to raise."""

    def __init__(self, dump: Path, pipe: Path, report: Report, tally: Counter, span: tuple[int, int] | None,
                 index_folder: Path | None):
        super().__init__(daemon=True)
        self.dump, self.pipe, self.report, self.tally, self.span = dump, pipe, report, tally, span
        self.index_folder = index_folder
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.pipe, "wb") as out:
                pages = checked_pages(self.dump, self.report, self.tally, self.span, self.index_folder)
                for chunk in _ensure_siteinfo(pages):
                    out.write(chunk)
        except BrokenPipeError:
            pass  # wikiextractor stopped reading: its exit status or the caller says why
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread, which raises it
            self.error = e


def checked_pages(dump: Path, report: Report, tally: Counter | None = None,
                  span: tuple[int, int] | None = None, index_folder: Path | None = None) -> Iterator[bytes]:
    """The decompressed dump: what lies between pages as it is, each well-formed page without its section
    headings, malformed pages and a truncated tail left out and reported. Memory: one page and one chunk.

    A corrupt stream of a multistream .bz2 loses only itself: reading goes on at the next stream (its pages
    are whole pages, as Wikimedia cuts them), and the page cut in two is left out as malformed. A span of
    another .bz2 short of the whole file is read from its blocks (_block_span_pages)."""
    tally = Counter() if tally is None else tally
    start, end = span or (0, None)
    if end is not None and dump.name.endswith(".bz2") and not cut_at_streams(dump) and (
            start > 0 or end < dump.stat().st_size):
        yield from _block_span_pages(dump, report, tally, (start, end), index_folder)
        return
    with open(dump, "rb") as raw:
        if start > 0:  # a later span of a multistream dump: the dump's header (root, siteinfo) first
            yield _header(raw)
            raw.seek(start)

        def skipped(error: Exception, start: int, resume: int) -> None:
            report("corrupt_stream", f"corrupt compressed stream ({error}) from compressed byte {start}: skipped, "
                   f"reading goes on at the next stream (byte {resume})", byte=start)  # fmt: skip

        chunks = (_bz2_chunks(raw, tally, skipped, end) if dump.name.endswith(".bz2")
                  else iter(lambda: raw.read(_CHUNK), b""))  # fmt: skip
        buffer, line = b"", 1  # line: the line number of buffer[0]
        try:
            for chunk in chunks:
                buffer += chunk
                position, line = yield from _split_pages(buffer, line, report, final=False)
                buffer = buffer[position:]
        except (EOFError, OSError) as e:
            report(
                "truncated",
                f"truncated or corrupt compressed dump ({e}) before compressed byte {raw.tell()}, at decompressed "
                "line given; the pages before it are kept",
                line=line + buffer.count(b"\n"),
                byte=raw.tell(),
            )
            return
        yield from _split_pages(buffer, line, report, final=True)


def _block_span_pages(dump: Path, report: Report, tally: Counter, span: tuple[int, int],
                      index_folder: Path | None) -> Iterator[bytes]:
    """The dump's header, then the pages that start in the blocks that start in the compressed bytes `span`,
    the last one read on past the span to its end. Without a block index (the file cannot be read to its end)
    the span at byte 0 reads the file whole, reporting as checked_pages does, and the others read nothing.
    tally: the streams that start in the span (every stream of the file is counted once over its spans)."""
    index = bz2_blocks.block_index(dump, index_folder)
    if index is None:
        if span[0] == 0:
            yield from checked_pages(dump, report, tally)
        return
    first, last = bz2_blocks.decompressed_span(index, *span)
    with open(dump, "rb") as raw:
        yield _header(raw)
        tally["streams"] += sum(1 for _ in itertools.takewhile(lambda at: at < span[1], _stream_starts(raw, span[0])))
    base, buffer, line, begun = first, b"", 1, False  # base: the decompressed offset of buffer[0]
    for chunk in bz2_blocks.decompressed_from(dump, index, first):
        buffer += chunk
        if not begun:  # what lies before the first page that starts here: the header, or the previous span's
            at = buffer.find(_OPEN)
            cut = at if at != -1 else max(0, len(buffer) - len(_OPEN) + 1)
            line, base, buffer, begun = line + buffer.count(b"\n", 0, cut), base + cut, buffer[cut:], at != -1
            if not begun:
                continue
        position, line = yield from _split_pages(buffer, line, report, final=False, stop=last - base)
        if position is None:
            return
        base, buffer = base + position, buffer[position:]
    if begun:
        yield from _split_pages(buffer, line, report, final=True, stop=last - base)


def _bz2_chunks(raw: IO[bytes], tally: Counter, skipped: Callable[[Exception, int, int], None],
                end: int | None = None) -> Iterator[bytes]:
    """Decompressed chunks of a (multistream) .bz2, each as soon as its block is whole: bz2.BZ2File would drop
    the blocks decompressed within the read that meets the cut. EOFError at a cut. Corrupt data (a block's
    CRC fails) skips to the next stream, found by its header, and calls `skipped`; OSError when none follows.
    tally: streams (read whole), page_streams (those holding pages), pages (seen), damaged_streams. `end`: stop
    before the first stream that starts at or after this compressed byte."""
    decompressor, data, fed, start, pages = bz2.BZ2Decompressor(), b"", False, raw.tell(), 0
    while True:
        if decompressor.eof:  # the next stream, if any, starts in unused_data
            tally["streams"] += 1
            tally["page_streams"] += pages > 0
            start = raw.tell() - len(decompressor.unused_data)
            if end is not None and start >= end:
                return
            data, decompressor, fed, pages = decompressor.unused_data, bz2.BZ2Decompressor(), False, 0
        if not data and decompressor.needs_input:
            data = raw.read(_CHUNK)
            if not data:
                if fed:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                return
        try:
            out = decompressor.decompress(data, max_length=_CHUNK)
        except OSError as error:
            resume = next(_stream_starts(raw, start + 1), None)
            if resume is None:
                raise
            skipped(error, start, resume)
            tally["damaged_streams"] += 1
            if end is not None and resume >= end:
                return
            raw.seek(resume)
            data, decompressor, fed, start, pages = b"", bz2.BZ2Decompressor(), False, resume, 0
            continue
        fed, data = fed or bool(data), b""
        if out:
            found = out.count(_OPEN)
            pages += found
            tally["pages"] += found
            yield out


def _header(raw: IO[bytes]) -> bytes:
    """What a multistream dump's first stream holds before its first page: the root element and <siteinfo>."""
    raw.seek(0)
    decompressor, head = bz2.BZ2Decompressor(), b""
    while not decompressor.eof and _OPEN not in head and len(head) < _SITEINFO_SCAN_LIMIT:
        data = raw.read(_CHUNK)
        if not data:
            break
        head += decompressor.decompress(data)
    return head.split(_OPEN, 1)[0]


def cut_at_streams(path: Path) -> bool:
    """Whether a big .bz2 is cut into work units at its streams: each stream of Wikimedia's multistream files
    holds whole pages (100), so cuts there never split a page. Another .bz2 (one stream, or pbzip2's streams,
    which may cut a page) is cut at its blocks (_block_span_pages)."""
    return "multistream" in path.name and path.name.endswith(".bz2")


def bz2_stream_cuts(path: Path, chunk_bytes: int) -> list[int]:
    """Offsets [0, ..., size] that cut a .bz2 into spans of about chunk_bytes, each cut at a stream's start: a
    multistream dump (100 pages a stream) into work units that decompress on their own; a single-stream file
    stays whole. One pass over the compressed bytes."""
    cuts = [0]
    with open(path, "rb") as raw:
        for at in _stream_starts(raw, 0):
            if at >= cuts[-1] + chunk_bytes:
                cuts.append(at)
    return cuts + [path.stat().st_size]


# a bz2 stream's header: "BZh", the block size, then the first block's magic (byte-aligned at a stream's start)
_STREAM_HEADER = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")


def _stream_starts(raw: IO[bytes], offset: int) -> Iterator[int]:
    """The offsets of the bz2 stream headers at or after `offset`, in order, reading from there on."""
    raw.seek(offset)
    tail = b""  # a header cut by a block boundary is found whole in the next window (tail: 9 of its 10 bytes)
    while block := raw.read(_CHUNK):
        window = tail + block
        for found in _STREAM_HEADER.finditer(window):
            yield offset - len(tail) + found.start()
        offset += len(block)
        tail = window[-9:]


def _split_pages(buffer: bytes, line: int, report: Report, final: bool, stop: int | None = None):
    """Yield the complete pages (and what lies between them) of `buffer`; return where the rest starts and
    its line number. A page that starts at index `stop` or later is another span's: (None, line) there."""
    position = 0
    while True:
        start = buffer.find(_OPEN, position)
        if start != -1 and stop is not None and start >= stop:
            return None, line
        if start == -1:  # keep a tail that could be the start of "<page>"
            keep = len(buffer) if final else max(position, len(buffer) - len(_OPEN) + 1)
            yield buffer[position:keep]
            return keep, line + buffer.count(b"\n", position, keep)
        yield buffer[position:start]
        line += buffer.count(b"\n", position, start)
        close = buffer.find(_CLOSE, start)
        following = buffer.find(_OPEN, start + len(_OPEN))
        if following != -1 and (close == -1 or following < close):
            report("malformed_xml", "malformed XML (page not closed before the next <page>); page skipped", line=line)
            end = following
        elif close == -1:
            if final:
                report("malformed_xml", "malformed XML (page not closed at the end of the file); page skipped",
                       line=line)  # fmt: skip
                return len(buffer), line + buffer.count(b"\n", start)
            return start, line
        else:
            end = close + len(_CLOSE)
            page = buffer[start:end]
            parser = expat.ParserCreate()
            try:
                parser.Parse(page, True)
                yield _HEADING_LINE.sub(b"\n", page)  # an empty line keeps the paragraphs either side apart
            except expat.ExpatError as e:
                report("malformed_xml", f"malformed XML at line {line + e.lineno - 1} "
                       f"({expat.ErrorString(e.code)}); page skipped", line=line)  # fmt: skip
        line += buffer.count(b"\n", start, end)
        position = end


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
