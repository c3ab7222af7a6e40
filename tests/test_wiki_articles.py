"""Wiki pages extracted in the documents worker (data/wiki_articles.py): the same text as wikiextractor's own
command line, the same articles chosen, and a big plain .xml dump cut into work units."""

from __future__ import annotations

import bz2
import json
import random
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from effbert.data import sources, wiki_articles
from effbert.data.sources import build_documents
from effbert.demo.wiki import write_demo_wiki
from effbert.pipeline_config import DocumentsSettings
from test_documents import SITEINFO, dump_xml, read_documents

KEEP_ALL = DocumentsSettings(min_words=0)

# markup that each part of the extractor handles: parser functions and magic words (expanded with no templates
# defined), entities escaped twice, refs, tables, files, external links, math, lists, comments, emphasis
MARKUP_PAGE = """{{Infobox|name=X}}'''Gamma''' (born {{#if: yes | 1901 | 1902}}) wrote on {{PAGENAME}}.&nbsp;It \
was ''odd''.<ref name="a">A source.</ref> See [http://example.com the site] and [[Delta (band)|Delta]].
{| class="wikitable"
| cell || other
|}
[[File:Gamma.jpg|thumb|A caption.]]
* a listed item
The formula <math>x^2</math> holds &amp; more. <!-- hidden --> R&D, a < b > c.

== Later life ==
He died in 1950.<ref>Another, p. 3.</ref>
"""


def _command_line_texts(dump: Path) -> dict[str, str]:
    """{page id: "text"} as wikiextractor's command line writes them with our options (its JSON lines)."""
    out = subprocess.run(
        [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "--output", "-", "--json",
         "--no-templates", "--html-safe", "", "--processes", "1", "--quiet"],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    return {record["id"]: record["text"] for record in map(json.loads, out.splitlines())}


def _our_texts(xml: bytes) -> dict[str, str]:
    wiki_articles.prepare_extractor()  # as read_wiki runs it: its patterns compiled once (_CompiledOnce)
    found = (wiki_articles.article(page) for page in re.findall(rb"<page>.*?</page>", xml, re.S))
    return {a.page_id: wiki_articles.plain_text(a) for a in found if a is not None}


def _assert_same_as_command_line(folder: Path, xml: bytes) -> None:
    """Our text of each article of `xml` is the command line's, run on the same XML written in `folder`."""
    dump = folder / "reference.xml"
    at = xml.index(b"<page>")  # the command line skips every page without a <siteinfo> (single-article exports)
    dump.write_bytes(xml if b"<siteinfo>" in xml[:at] else xml[:at] + SITEINFO.encode() + xml[at:])
    expected = _command_line_texts(dump)
    assert expected and _our_texts(xml) == expected


def test_the_text_is_wikiextractors_command_lines_on_markup(tmp_path):
    xml = dump_xml([("Gamma", MARKUP_PAGE), ("Alpha & Omega", "'''A''' is [[B]].\n\nSecond paragraph.")])
    _assert_same_as_command_line(tmp_path, xml.encode("utf-8"))
    assert "1901" in _our_texts(xml.encode("utf-8"))["1"]  # the parser function was expanded, as there


def test_the_text_is_wikiextractors_command_lines_on_the_demo_dump(tmp_path):
    dump = tmp_path / "demo.xml.bz2"
    write_demo_wiki(dump, pages=60)
    _assert_same_as_command_line(tmp_path, bz2.decompress(dump.read_bytes()))


@pytest.mark.parametrize("name", ["enwiki-table-markup.xml.bz2", "testcorpus.xml.bz2"])
def test_the_text_is_wikiextractors_command_lines_on_real_pages(shared_fixtures, tmp_path, name):
    dump = shared_fixtures / "wikipedia" / name
    if not dump.exists():
        pytest.skip(f"{dump} not present")
    _assert_same_as_command_line(tmp_path, bz2.decompress(dump.read_bytes()))


def _page(page_id: int, title: str, text: str | None, ns: int = 0, redirect: bool = False) -> str:
    body = '      <text bytes="0" />\n' if text is None else f'      <text xml:space="preserve">{escape(text)}</text>\n'
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
            + ('    <redirect title="Target" />\n' if redirect else "")
            + f"    <revision>\n      <id>{900 + page_id}</id>\n{body}    </revision>\n  </page>\n")  # fmt: skip


def test_the_articles_are_the_command_lines_but_for_titles_that_start_with_template(tmp_path):
    """Namespace 0 only, no redirects, no repeat of the page before, as the command line chooses; an article
    whose title merely starts with "Template" is kept (the command line drops it)."""
    text = "It is a thing. It has a name."
    pages = [_page(1, "Kept", text), _page(2, "Talk page", text, ns=1), _page(3, "Moved", text, redirect=True),
             _page(3, "Moved", text), _page(4, "Template matching", text), _page(4, "Template matching", text),
             _page(5, "Empty", None), _page(6, "Template:Box", text, ns=10)]  # fmt: skip
    root = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
    xml = root + SITEINFO + "".join(pages) + "</mediawiki>\n"
    dump = tmp_path / "dump.xml"
    dump.write_text(xml, encoding="utf-8")
    expected = _command_line_texts(dump)
    assert set(expected) == {"1", "3", "5"}  # its choice: 4 dropped for its title (and 3's redirect skipped)
    build_documents("wiki", dump, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [["It is a thing.", "It has a name."]] * 3  # 1, 3, 4 (5 is empty)


def test_a_page_the_extractor_fails_on_is_reported_and_the_rest_kept(tmp_path, monkeypatch, capsys):
    dump = tmp_path / "dump.xml"
    dump.write_text(dump_xml([("One", "First article."), ("Two", "Second article."), ("Three", "Third.")]),
                    encoding="utf-8")  # fmt: skip
    real = wiki_articles.plain_text

    def failing_on_two(found: wiki_articles.Article) -> str:
        if found.title == "Two":
            raise RecursionError("maximum recursion depth exceeded")
        return real(found)

    monkeypatch.setattr(wiki_articles, "plain_text", failing_on_two)
    stats = build_documents("wiki", dump, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [["First article."], ["Third."]]
    assert stats["bad_input_counts"] == {"extraction_failed": 1}
    assert "page 2 ('Two')" in stats["bad_input"][0]["error"]
    assert f"documents (wiki): {dump}: wikiextractor failed on page 2" in capsys.readouterr().err


def test_a_big_plain_dump_is_cut_into_units_read_as_whole_by_any_number_of_workers(tmp_path, monkeypatch):
    """A plain .xml over chunk_mb is cut into byte spans, each holding the pages that start in it: the same
    documents as read whole, for 1 and 2 workers; a malformed page in a later span is reported with its line
    in the file."""
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=200)
    text = bz2.decompress((tmp_path / "demo.xml.bz2").read_bytes()).decode("utf-8")
    titles = re.findall(r"<title>(.*?)</title>", text)
    broken = text.index(f"<title>{titles[150]}</title>")
    text = text[:broken] + text[broken:].replace("</title>", "</titel>", 1)
    dump = tmp_path / "dump" / "enwiki-20990101-pages-articles.xml"
    dump.parent.mkdir()
    dump.write_text(text, encoding="utf-8")
    chunk = dump.stat().st_size // 5 + 1
    assert len(sources.plan_units("wiki", [dump], chunk, {})) == 5
    whole = build_documents("wiki", dump, tmp_path / "whole", KEEP_ALL)
    chunked = DocumentsSettings(min_words=0, chunk_mb=chunk / 2**20)
    for processes in (1, 2):
        stats = build_documents("wiki", dump, tmp_path / f"cut{processes}", chunked, processes=processes)
        assert stats["units"] == 5 and whole["units"] == 1
        assert [p.read_bytes() for p in sorted((tmp_path / f"cut{processes}").glob("part-*"))] == [
            p.read_bytes() for p in sorted((tmp_path / "whole").glob("part-*"))]  # fmt: skip
        page_line = text[: text.rindex("<page>", 0, broken)].count("\n") + 1
        assert [b["position"] for b in stats["bad_input"]] == [f"line {page_line}"]
        assert stats["documents"] == whole["documents"] > 150


def test_the_date_magic_words_give_the_revisions_timestamp_not_the_day_it_runs(tmp_path):
    """{{CURRENTYEAR}} and its kin: the command line writes the day it runs; here the page's revision timestamp
    (dump_xml's 2001-01-01T00:00:00Z), so the documents are the same whatever day they are rebuilt."""
    text = "Written in {{CURRENTYEAR}}-{{CURRENTMONTH}}-{{CURRENTDAY}} at {{CURRENTTIME}} for {{PAGENAME}}."
    xml = dump_xml([("Dated", text)])
    (tmp_path / "reference.xml").write_text(xml, encoding="utf-8")
    before = time.strftime("%Y-%m-%d")
    there = _command_line_texts(tmp_path / "reference.xml")["1"]
    assert there.split(" at ")[0] in {f"Written in {day}" for day in (before, time.strftime("%Y-%m-%d"))}  # the clock's
    assert _our_texts(xml.encode("utf-8")) == {"1": "Written in 2001-01-01 at 00:00:00 for Dated."}


def test_the_date_words_are_strftimes_of_the_timestamp():
    """The fast path (a canonical timestamp's own digits) against strptime + strftime, the command line's way
    (strftime writes year 999 as "999")."""
    rng = random.Random(0)
    stamps = ["2020-01-01T00:07:00Z", "2021-02-29T00:00:00Z", "2020-1-1T0:7:0Z", "junk", "", "2020-13-01T00:00:00Z",
              "2020-02-29T24:00:00Z", "2020-02-29T23:59:60Z", " 2020-01-01T00:00:00Z", "0999-05-05T05:05:05Z"]
    stamps += [f"{rng.randint(1, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T{rng.randint(0, 25):02d}:"
               f"{rng.randint(0, 60):02d}:{rng.randint(0, 61):02d}Z" for _ in range(2000)]  # fmt: skip
    formats = {"currentyear": "%Y", "currentmonth": "%m", "currentday": "%d", "currenthour": "%H",
               "currenttime": "%H:%M:%S"}  # fmt: skip
    for stamp in stamps:
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            when = datetime(1970, 1, 1)
        assert wiki_articles._date_words(stamp) == {w: when.strftime(f) for w, f in formats.items()}, stamp


def test_the_extractors_patterns_compiled_once_match_as_res_own():
    fast = wiki_articles._CompiledOnce()
    text = "A <b>Bold</b> and <B>bold</B>\nline two"
    assert fast.sub(r"<b>(.*?)</b>", r"\1", text, flags=re.IGNORECASE) == re.sub(r"<b>(.*?)</b>", r"\1", text,
                                                                                flags=re.IGNORECASE)
    assert fast.compile(r"b.*?/", re.I | re.S) is fast.compile(r"b.*?/", re.I | re.S)  # compiled once
    assert fast.match(r"a\s", text) is None and fast.match(r"a\s", text, re.I).group() == "A "
    assert fast.search(r"line (\w+)", text).group(1) == "two" and fast.fullmatch(r"(?s).*two", text) is not None
    assert [m.span() for m in fast.finditer("(?i)bold", text)] == [m.span() for m in re.finditer("(?i)bold", text)]
    assert fast.split(r"\n", text) == re.split(r"\n", text) and fast.escape("a.b") == re.escape("a.b")
    assert fast.IGNORECASE is re.IGNORECASE and fast.DOTALL is re.DOTALL
    for n in range(fast._LIMIT + 50):  # patterns made from page text: the cache stays bounded
        fast.compile(f"page{n}")
    assert len(fast._compiled) <= fast._LIMIT
