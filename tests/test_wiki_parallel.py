"""One big non-multistream .bz2 dump cut into work units at its bzip2 blocks (data/bz2_blocks.py), read the same
as whole by any number of workers."""

from __future__ import annotations

import base64
import bz2
import random
import re
from pathlib import Path

import pytest

from effbert.data import bz2_blocks, sources, wikidump
from effbert.data.sources import build_documents
from effbert.data.wikidump import checked_pages
from effbert.demo.wiki import write_demo_wiki
from effbert.pipeline_config import DocumentsSettings

KEEP_ALL = DocumentsSettings(min_words=0)  # every document, however short


def _chunked(chunk_bytes: int) -> DocumentsSettings:
    """Every document, the inputs cut into units of about chunk_bytes (chunk_mb counts MB of 2**20 bytes)."""
    return DocumentsSettings(min_words=0, chunk_mb=chunk_bytes / 2**20)


def _xml(tmp_path: Path, pages: int) -> bytes:
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=pages)
    return bz2.decompress((tmp_path / "demo.xml.bz2").read_bytes())


def _single_stream(path: Path, xml: bytes) -> Path:
    """One bz2 stream at level 1: blocks of 100 kB of text, so that a small dump has several."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bz2.compress(xml, 1))
    return path


def _pbzip2_style(path: Path, xml: bytes, every: int = 150_000) -> Path:
    """Several streams cut every `every` bytes of text, in the middle of pages (as pbzip2 cuts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(bz2.compress(xml[i : i + every], 1) for i in range(0, len(xml), every)))
    return path


def _pages(chunks) -> list[bytes]:
    return re.findall(rb"<page>.*?</page>", b"".join(chunks), re.S)


def _parts(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(out.glob("part-*.txt"))]


@pytest.mark.parametrize("write", [_single_stream, _pbzip2_style])
def test_the_spans_of_a_dump_partition_its_pages(tmp_path, write):
    """Every page of the file in exactly one span, in order, each after the dump's header; several spans hold
    pages, so several workers share the file."""
    xml = _xml(tmp_path, 400)
    dump = write(tmp_path / "dump" / "enwiki-20990101-pages-articles.xml.bz2", xml)
    chunk = dump.stat().st_size // 4
    units = sources.plan_units("wiki", [dump], chunk, {})
    spans = [(u.ranges[0].start, u.ranges[0].end) for u in units]
    assert len(units) >= 4 and spans[0][0] == 0 and spans[-1][1] == dump.stat().st_size
    header = xml[: xml.index(b"<page>")]
    by_span = []
    for span in spans:
        text = b"".join(checked_pages(dump, _no_report, span=span, index_folder=tmp_path / "work"))
        assert text.startswith(header)
        by_span.append(_pages([text]))
    whole = _pages(checked_pages(dump, _no_report))  # each page as the whole read passes it on (no headings)
    assert sum(by_span, []) == whole and len(whole) == xml.count(b"<page>") and len(by_span[0]) > 0
    assert sum(1 for pages in by_span if pages) >= 3


def _no_report(*args, **kwargs) -> None:
    raise AssertionError(f"nothing to report in an intact dump: {args} {kwargs}")


def test_a_big_single_stream_dump_is_read_the_same_whole_and_cut_by_any_number_of_workers(tmp_path):
    dump = _single_stream(tmp_path / "dump" / "enwiki-20990101-pages-articles.xml.bz2", _xml(tmp_path, 150))
    chunk = -(-dump.stat().st_size // 3)  # three spans
    whole = build_documents("wiki", dump, tmp_path / "whole", KEEP_ALL)  # one unit: the default chunk is 64 MB
    assert whole["units"] == 1 and whole["documents"] == 150  # every page a document
    for processes in (1, 2):
        cut = build_documents("wiki", dump, tmp_path / f"cut-{processes}", _chunked(chunk), processes=processes)
        assert cut["units"] == 3 and _parts(tmp_path / f"cut-{processes}") == _parts(tmp_path / "whole")
        assert cut["compressed_streams"] == whole["compressed_streams"] == {"read": 1, "damaged": 0,
                                                                            "pages_lost_estimate": 0}
        assert cut["documents"] == whole["documents"] and cut["bad_input_counts"] == {}


def test_a_truncated_single_stream_dump_cut_in_units_reads_as_whole(tmp_path):
    """indexed_bzip2 cannot index a truncated file: its first unit reads it whole, keeping the pages before the
    cut and reporting it at the same place, and the other units read nothing."""
    xml = _xml(tmp_path, 150)
    data = bz2.compress(xml, 1)
    dump = tmp_path / "cut.xml.bz2"
    dump.write_bytes(data[: len(data) * 2 // 3])
    whole = build_documents("wiki", dump, tmp_path / "whole", KEEP_ALL)
    cut = build_documents("wiki", dump, tmp_path / "cut", _chunked(-(-dump.stat().st_size // 3)), processes=2)
    assert whole["units"] == 1 and cut["units"] == 3
    assert _parts(tmp_path / "cut") == _parts(tmp_path / "whole")
    assert 0 < cut["documents"] == whole["documents"] < 150
    assert cut["bad_input"] == whole["bad_input"] and cut["bad_input_counts"] == {"truncated": 1}
    assert whole["bad_input"][0]["position"].endswith(f"byte {dump.stat().st_size}")


def test_a_block_index_reads_from_every_block_and_is_rebuilt_for_a_changed_file(tmp_path):
    xml = _xml(tmp_path, 150)
    dump = _single_stream(tmp_path / "a.xml.bz2", xml)
    index = bz2_blocks.block_index(dump, tmp_path / "work")
    assert index[0] == (32, 0) and len(index) >= 3  # the first block follows the 4-byte stream header
    for _, byte in index:
        assert b"".join(bz2_blocks.decompressed_from(dump, index, byte)) == xml[byte:]
    _single_stream(dump, xml[::-1])  # another file at the same path: the stored index is not used
    changed = bz2_blocks.block_index(dump, tmp_path / "work")
    assert b"".join(bz2_blocks.decompressed_from(dump, changed, changed[1][1])) == xml[::-1][changed[1][1] :]
    dump.write_bytes(dump.read_bytes() + b"extra")  # bytes after the last stream: read whole (and reported)
    assert bz2_blocks.block_index(dump, tmp_path / "work") is None


def _with_broken_page(xml: bytes, at: float) -> tuple[bytes, bytes, int, int]:
    """xml with an unclosed <b> in the text of the page at fraction `at` of the dump: the new xml, that page's
    title, the line of the file its <page> is on, and the line of the page where the error falls."""
    start = xml.index(b"<page>", int(len(xml) * at))
    text = xml.index(b">", xml.index(b"<text", start)) + 1
    broken = xml[:text] + b"<b>" + xml[text:]  # expat: mismatched tag at </text>
    title = re.search(rb"<title>([^<]*)</title>", xml[start:]).group(1)
    close = broken.index(b"</text>", text)
    return broken, title, xml[:start].count(b"\n") + 1, broken[start:close].count(b"\n") + 1


@pytest.mark.parametrize("write", [_single_stream, _pbzip2_style])
def test_a_malformed_page_deep_in_a_big_bz2_is_named_by_its_title(tmp_path, write):
    """A span after the first counts lines from a block or stream boundary that no line of the file names: the
    cut run gives no line for it (stats.json and the warning alike) where the whole run gives the file's line,
    and both name the page."""
    xml, title, page_line, error_line = _with_broken_page(_xml(tmp_path, 150), at=0.8)
    dump = write(tmp_path / "dump" / "enwiki-20990101-pages-articles.xml.bz2", xml)
    whole = build_documents("wiki", dump, tmp_path / "whole", KEEP_ALL)
    cut = build_documents("wiki", dump, tmp_path / "cut", _chunked(-(-dump.stat().st_size // 3)), processes=2)
    assert cut["units"] == 3 and _parts(tmp_path / "cut") == _parts(tmp_path / "whole")
    assert whole["documents"] == cut["documents"] == 149
    [w], [c] = whole["bad_input"], cut["bad_input"]
    assert w["position"] == f"line {page_line}" and c["position"].startswith("compressed bytes ")
    assert w["error"] == c["error"]
    assert f"in page '{title.decode()}'" in c["error"] and f"at the page's line {error_line} " in c["error"]


def test_a_malformed_page_in_a_later_span_of_a_plain_dump_reports_lines_of_the_file(tmp_path):
    xml, title, page_line, error_line = _with_broken_page(_xml(tmp_path, 150), at=0.8)
    dump = tmp_path / "dump.xml"
    dump.write_bytes(xml)
    cut = build_documents("wiki", dump, tmp_path / "cut", _chunked(len(xml) // 3))
    assert cut["units"] >= 3 and cut["documents"] == 149
    [bad] = cut["bad_input"]
    assert bad["position"] == f"line {page_line}"
    assert f"in page '{title.decode()}'" in bad["error"] and f"at the page's line {error_line} " in bad["error"]


def test_a_spans_header_decompresses_only_the_start_of_the_file(tmp_path):
    """Each later span of a single-stream dump reads the dump's header first: only the first block or so of the
    file, not the first MB of compressed data whole (for a small file: the whole of it, once per span)."""
    xml = _xml(tmp_path, 20)
    noise = base64.b64encode(random.Random(0).randbytes(3 << 20))  # text that compresses 1.3:1, not 13:1
    at = xml.index(b"</text>")
    dump = _single_stream(tmp_path / "a.xml.bz2", xml[:at] + noise + xml[at:])
    assert dump.stat().st_size > 2 << 20
    with open(dump, "rb") as raw:
        header = wikidump._header(raw)
        read = raw.tell()
    assert header == xml[: xml.index(b"<page>")]
    assert read <= 200 << 10  # the first block (100 kB of text at level 1) and a little more, not the first MB
