"""A MediaWiki XML dump (*.xml, *.xml.bz2) -> documents, through wikiextractor 3.1.0's extractor.

Each page is extracted in this process (data/wiki_articles.py) as wikiextractor's command line does with
--json --no-templates: plain text rather than HTML-escaped, templates, tables, lists, refs and categories
dropped. Section headings ('== History ==') are removed before it (it would keep them as a one-line paragraph
"History."); the page title is not text.

The dump is decompressed here and each <page> checked alone with expat before the extractor sees it. Bad
input is reported (through `report`) and the rest kept: a malformed page (bad XML, invalid UTF-8, not closed
before the next one) is left out, reported with its title, id, starting line and the error; a page the extractor
fails on is left out, reported with its id; a truncated .bz2 keeps the pages before the cut (not the one cut
in two), reported with the compressed byte offset and the decompressed line; a corrupt stream of a
multistream .bz2 is skipped and reading goes on at the next stream. A big dump is read in byte spans, one
work unit each: a multistream .bz2's streams, any other .bz2's pages that start in its bzip2 blocks
(data/bz2_blocks.py), a plain .xml's pages that start in the span.
"""

from __future__ import annotations

import bz2
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from xml.parsers import expat

from effbert.data import bz2_blocks, wiki_articles
from effbert.data.sentences import Document, paragraphs_to_sentences

Report = Callable[..., None]  # report(kind, error, line=None, byte=None)

_CHUNK = 1 << 20
_SITEINFO_SCAN_LIMIT = 1 << 24
_HEADER_READ = 1 << 14  # bytes read and decompressed at a time while looking for the dump's header
# a section heading of the wikitext, '== History ==' (its text is not prose; wikiextractor would keep it): the
# newline before it and the line up to its own newline, which stays to start the next match (a page opens with
# <page>, so a heading always follows a newline). The leading newline lets the search jump from line to line.
_HEADING_LINE = re.compile(rb"\n[ \t]*(={1,6})[^=\n].*?\1[ \t]*\r?(?=\n)")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)")  # what a dropped template leaves: "( )", "(; )"
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.;:!?])")  # after white space is made single spaces
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")
_OPEN, _CLOSE = b"<page>", b"</page>"
_PAGE_HEAD = 4096  # bytes of a malformed page searched for its title and id


def read_wiki(path: Path, report: Report, tally: Counter | None = None, span: tuple[int, int] | None = None,
              index_folder: Path | None = None, seen: Counter | None = None) -> Iterator[Document]:
    """The dump's articles as documents, each page's text extracted in this process (data/wiki_articles.py).
    `tally` counts a .bz2's streams: read, damaged (skipped), and the pages they held. `span`: compressed
    bytes of a .bz2 after the dump's header (a multistream dump's streams that start in it, bz2_stream_cuts;
    another's pages that start in the blocks that start in it, data/bz2_blocks.py, its block index kept in
    `index_folder`), or bytes of a plain .xml (the pages that start in it). `seen["pages"]` counts the <page>
    elements found, well-formed or not, articles or not (a file without one is not a dump: data/sources.py)."""
    wiki_articles.prepare_extractor()
    seen = Counter() if seen is None else seen

    def counted(kind: str, error: str, line: int | None = None, byte: int | None = None) -> None:
        if kind == "malformed_xml":  # a malformed page is a <page> found all the same
            seen["pages"] += 1
        report(kind, error, line=line, byte=byte)

    last_id = None
    for chunk in checked_pages(path, counted, tally, span, index_folder):
        if not chunk.startswith(_OPEN):
            continue  # the dump's header, the white space between pages
        seen["pages"] += 1
        found = wiki_articles.article(chunk)
        if found is None or found.page_id == last_id:
            continue
        last_id = found.page_id
        try:
            text = wiki_articles.plain_text(found)
        except Exception as e:  # noqa: BLE001 - one page's wikitext the extractor cannot take: that page only
            report("extraction_failed", f"wikiextractor failed on page {found.page_id} ({found.title!r}): "
                   f"{type(e).__name__}: {e}; page skipped")  # fmt: skip
            continue
        yield _wiki_document(text)


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


def checked_pages(dump: Path, report: Report, tally: Counter | None = None,
                  span: tuple[int, int] | None = None, index_folder: Path | None = None) -> Iterator[bytes]:
    """The decompressed dump: what lies between pages as it is, each well-formed page without its section
    headings, malformed pages and a truncated tail left out and reported. Memory: one page and one chunk.

    A corrupt stream of a multistream .bz2 loses only itself: reading goes on at the next stream (its pages
    are whole pages, as Wikimedia cuts them), and the page cut in two is left out as malformed. A span of
    another .bz2 short of the whole file is read from its blocks (_block_span_pages)."""
    tally = Counter() if tally is None else tally
    start, end = span or (0, None)
    part = end is not None and (start > 0 or end < dump.stat().st_size)
    if part and not dump.name.endswith(".bz2"):
        yield from _plain_span_pages(dump, report, (start, end))
        return
    if part and not cut_at_streams(dump):
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
            at_line = line + buffer.count(b"\n")  # of the file only when reading from its start
            report("truncated", f"truncated or corrupt compressed dump ({e}) "
                   f"{_cut_position(raw.tell(), at_line if start == 0 else None)}; the pages before it are kept",
                   line=at_line, byte=raw.tell())  # fmt: skip
            return
        yield from _split_pages(buffer, line, report, final=True)


def _cut_position(byte: int | None, line: int | None) -> str:
    """'before compressed byte B, at decompressed line L', each part only when it is known."""
    parts = ([f"before compressed byte {byte}"] if byte is not None else []) + (
        [f"at decompressed line {line}"] if line is not None else [])
    return ", ".join(parts) or "at an unknown position"


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
    yield from _pages_from(bz2_blocks.decompressed_from(dump, index, first), first, last, 1, report)


def _plain_span_pages(dump: Path, report: Report, span: tuple[int, int]) -> Iterator[bytes]:
    """The pages of a plain .xml that start in the bytes `span`, the last one read on past the span to its
    end. A reported line counts from the file's start: the lines before the span are counted only then, so
    that no unit reads the whole file before its span."""
    before: list[int] = []

    def from_file_start(kind: str, error: str, line: int | None = None, byte: int | None = None) -> None:
        if line is not None:
            if not before:
                with open(dump, "rb") as raw:
                    before.append(sum(block.count(b"\n") for block in _blocks(raw, span[0])))
            line += before[0]
        report(kind, error, line=line, byte=byte)

    with open(dump, "rb") as raw:
        raw.seek(span[0])
        yield from _pages_from(iter(lambda: raw.read(_CHUNK), b""), span[0], span[1], 1, from_file_start)


def _blocks(raw: IO[bytes], size: int) -> Iterator[bytes]:
    """The first `size` bytes of `raw`, a chunk at a time."""
    while size > 0 and (block := raw.read(min(_CHUNK, size))):
        size -= len(block)
        yield block


def _pages_from(chunks: Iterator[bytes], base: int, last: int, line: int, report: Report) -> Iterator[bytes]:
    """The pages that start in the bytes [base, last) of a dump whose bytes from `base` on are `chunks`
    (`line`: the line number at `base`), each checked, the last read on to its end."""
    buffer, begun = b"", False  # base: the offset of buffer[0]
    for chunk in chunks:
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
        # a bounded output: a single-stream dump's first chunk would otherwise be decompressed whole, for every
        # span of the file (a whole small file per span; about 4.5 MB of XML per span of a real one)
        data = raw.read(_HEADER_READ) if decompressor.needs_input else b""
        if not data and decompressor.needs_input:
            break
        head += decompressor.decompress(data, max_length=_HEADER_READ)
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


def _page_name(page: bytes) -> str:
    """' in page 'Title' (id 12)', as far as the page's start gives them: a span deep in a .bz2 dump has no line
    number of its file to report (data/sources.py), so its errors name the page."""
    fields = wiki_articles.page_fields(page[:_PAGE_HEAD].split(b"<text", 1)[0])
    titles, ids = fields.get(b"title"), fields.get(b"id")
    name = f" {titles[0].decode('utf-8', 'replace')!r}" if titles else ""
    page_id = f" (id {ids[0].decode('utf-8', 'replace')})" if ids else ""
    return f" in page{name}{page_id}" if name or page_id else ""


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
            report("malformed_xml", f"malformed XML{_page_name(buffer[start:following])} (page not closed before "
                   "the next <page>); page skipped", line=line)  # fmt: skip
            end = following
        elif close == -1:
            if final:
                report("malformed_xml", f"malformed XML{_page_name(buffer[start:])} (page not closed at the end of "
                       "the file); page skipped", line=line)  # fmt: skip
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
                report("malformed_xml", f"malformed XML{_page_name(page)} at the page's line {e.lineno} "
                       f"({expat.ErrorString(e.code)}); page skipped", line=line)  # fmt: skip
        line += buffer.count(b"\n", start, end)
        position = end
