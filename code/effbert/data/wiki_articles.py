"""One checked page of a MediaWiki dump -> its article's plain text, through wikiextractor 3.1.0's Extractor.

The extractor runs in the calling process, page by page, as wikiextractor's command line runs it with
`--json --no-templates --html-safe ""`: no template definitions, plain text rather than HTML-escaped, links
reduced to their shown text. Which pages are articles follows that command line too: namespace 0, not a
redirect, not a repeat of the page just before (the same id). The wikitext reaches the extractor as the dump
holds it (XML-escaped: the extractor unescapes it itself), the bytes between <text> and </text>, as the
command line's line reader passes it on. Called this way there is no reader process, no page and output
queues, no reordering writer, no named pipe and no JSON round trip: a quarter of the extractor's CPU time
(docs/benchmarks.md), and one documents worker is one process. Two differences: the command line also drops
articles whose title merely starts with the template namespace's name ("Template matching"), which are kept;
and its magic words of the date ({{CURRENTYEAR}} ...) give the day it runs, where here they give the page's
revision timestamp, so that the documents are the same whatever day they are rebuilt.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from wikiextractor.extract import _DEFAULT_IGNORED_TAG_PATTERNS, Extractor, MagicWords, ignoreTag

# as the command line builds them without --links: its default ignored tags and <a>, whose text stays
_IGNORED_TAGS = [*_DEFAULT_IGNORED_TAG_PATTERNS, ignoreTag("a")]
_FIELD = re.compile(rb"<(title|ns|id|timestamp)>([^<]*)</\1>")
_NO_TIMESTAMP = "1970-01-01T00:00:00Z"  # a revision without one (none in Wikimedia's dumps): a fixed date all the same
# the magic words of the date and the strftime formats of the timestamp's fields they take (Extractor.clean_text's)
_DATE_WORDS = {"currentyear": "%Y", "currentmonth": "%m", "currentday": "%d", "currenthour": "%H",
               "currenttime": "%H:%M:%S"}
_TEXT_OPEN = re.compile(rb"<text\b[^>]*?(/?)>")
_TEXT_CLOSE = b"</text>"
_REDIRECT = b"<redirect"


@dataclass(frozen=True)
class Article:
    """What the extractor needs of a page: its ids, title and revision timestamp as the dump writes them, and
    its wikitext."""

    page_id: str
    revision_id: str
    title: str
    wikitext: str
    timestamp: str = _NO_TIMESTAMP


def article(page: bytes) -> Article | None:
    """The article a checked page (<page> ... </page>, well-formed) holds; None for a page of another
    namespace, a redirect or a page without an id. A page without text (<text/>) is an article with no
    wikitext, as the command line passes it on."""
    opening = _TEXT_OPEN.search(page)
    head = page if opening is None else page[: opening.start()]
    fields: dict[bytes, list[bytes]] = {}
    for match in _FIELD.finditer(head):
        fields.setdefault(match[1], []).append(match[2])
    if fields.get(b"ns", [b""])[0].strip() != b"0" or _REDIRECT in head or b"id" not in fields:
        return None
    if opening is None or opening[1]:  # no <text>, or <text .../>: a revision without content
        wikitext = b""
    else:
        close = page.find(_TEXT_CLOSE, opening.end())
        wikitext = page[opening.end() : close if close != -1 else len(page)]
    if b"\r" in wikitext:  # line ends as the command line reads them, in text mode: \r\n and \r as \n
        wikitext = wikitext.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    ids, timestamp = fields[b"id"], fields.get(b"timestamp", [_NO_TIMESTAMP.encode()])[0]
    return Article(ids[0].decode("utf-8"), ids[1].decode("utf-8") if len(ids) > 1 else "",
                   fields.get(b"title", [b""])[0].decode("utf-8"), wikitext.decode("utf-8"),
                   timestamp.decode("utf-8").strip())  # fmt: skip


def plain_text(found: Article) -> str:
    """The article's text as the command line's JSON "text": its paragraphs, one a line."""
    extractor = Extractor(found.page_id, found.revision_id, "", found.title, [found.wikitext],
                          templatePrefix="Template:", ignored_tag_patterns=_IGNORED_TAGS)  # fmt: skip
    extractor.magicWords = _DatedMagicWords(found.timestamp)
    return "\n".join(extractor.clean_text(found.wikitext, html_safe=False))


class _DatedMagicWords(MagicWords):
    """The extractor's magic words with the date ones at the revision's timestamp: clean_text sets them from the
    clock, and those settings are let pass."""

    def __init__(self, timestamp: str):
        super().__init__()
        try:
            when = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            when = datetime.strptime(_NO_TIMESTAMP, "%Y-%m-%dT%H:%M:%SZ")
        for word, form in _DATE_WORDS.items():
            super().__setitem__(word, when.strftime(form))

    def __setitem__(self, name: str, value: str) -> None:
        if name not in _DATE_WORDS:
            super().__setitem__(name, value)


def quiet_extractor() -> None:
    """The command line's --quiet: only the extractor's errors reach stderr (its per-article template notes
    would otherwise come once a page)."""
    logging.getLogger("wikiextractor").setLevel(logging.ERROR)
