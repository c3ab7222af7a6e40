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

import contextlib
import logging
import re
import types
from dataclasses import dataclass
from datetime import datetime

from wikiextractor import extract
from wikiextractor.extract import _DEFAULT_IGNORED_TAG_PATTERNS, Extractor, MagicWords, ignoreTag

# as the command line builds them without --links: its default ignored tags and <a>, whose text stays
_IGNORED_TAGS = [*_DEFAULT_IGNORED_TAG_PATTERNS, ignoreTag("a")]
_FIELD = re.compile(rb"<(title|ns|id|timestamp)>([^<]*)</\1>")
_NO_TIMESTAMP = "1970-01-01T00:00:00Z"  # a revision without one (none in Wikimedia's dumps): a fixed date all the same
# the magic words of the date and the strftime formats of the timestamp's fields they take (Extractor.clean_text's)
_DATE_WORDS = {"currentyear": "%Y", "currentmonth": "%m", "currentday": "%d", "currenthour": "%H",
               "currenttime": "%H:%M:%S"}
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP = re.compile(r"([1-9]\d{3})-(\d\d)-(\d\d)T(\d\d:\d\d:\d\d)Z")  # as the dumps write it
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
    fields = page_fields(head)
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


def page_fields(head: bytes) -> dict[bytes, list[bytes]]:
    """The values of <title>, <ns>, <id> and <timestamp> in `head` (a page up to its <text>), each field's in
    order: the first <id> is the page's, the second its revision's."""
    fields: dict[bytes, list[bytes]] = {}
    for match in _FIELD.finditer(head):
        fields.setdefault(match[1], []).append(match[2])
    return fields


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
        for word, value in _date_words(timestamp).items():
            super().__setitem__(word, value)

    def __setitem__(self, name: str, value: str) -> None:
        if name not in _DATE_WORDS:
            super().__setitem__(name, value)


def _date_words(timestamp: str) -> dict[str, str]:
    """The date's magic words at a dump's timestamp (2020-01-01T00:07:00Z), as strftime gives them. A canonical
    timestamp of a real date gives its own digits (strptime and strftime took 5% of a documents worker); any
    other goes through strptime, and the fixed date stands in for one it cannot read."""
    found = _TIMESTAMP.fullmatch(timestamp)
    if found is not None:
        year, month, day, time = found.groups()
        with contextlib.suppress(ValueError):  # no such date or time: strptime says so below
            datetime(int(year), int(month), int(day), *map(int, time.split(":")))
            return {"currentyear": year, "currentmonth": month, "currentday": day, "currenthour": time[:2],
                    "currenttime": time}  # fmt: skip
    try:
        when = datetime.strptime(timestamp, _TIMESTAMP_FORMAT)
    except ValueError:
        when = datetime.strptime(_NO_TIMESTAMP, _TIMESTAMP_FORMAT)
    return {word: when.strftime(form) for word, form in _DATE_WORDS.items()}


def prepare_extractor() -> None:
    """The command line's --quiet: only the extractor's errors reach stderr (its per-article template notes
    would otherwise come once a page). And its regular expressions each compiled once (_CompiledOnce)."""
    logging.getLogger("wikiextractor").setLevel(logging.ERROR)
    if not isinstance(extract.re, _CompiledOnce):
        extract.re = _CompiledOnce()


class _CompiledOnce(types.SimpleNamespace):
    """The re module as wikiextractor's extractor sees it: the same functions and flags, but a pattern string is
    looked up in a dict of its own compiled patterns. The extractor hands re.sub and re.compile pattern strings
    some 100 times a page (dropNested compiles its delimiters on every call), and the re module's own cache
    lookup, which converts the flag enum to an int through a Python property each time, took 1.15 of 7.4 CPU
    seconds of a documents worker (cProfile, 4000 generated pages). Bounded as re's cache is: patterns built
    from a page's text must not grow it without end over a whole dump."""

    _LIMIT = 2048

    def __init__(self):
        own = set(vars(_CompiledOnce))  # the functions below, which the module's must not shadow
        super().__init__(**{name: getattr(re, name) for name in dir(re) if name[0] != "_" and name not in own})
        self._compiled: dict = {}

    def compile(self, pattern, flags=0):  # noqa: A003 - re's own name
        try:
            return self._compiled[pattern, flags]
        except KeyError:
            if len(self._compiled) >= self._LIMIT:
                self._compiled.clear()
            compiled = self._compiled[pattern, flags] = re.compile(pattern, flags)
            return compiled

    def sub(self, pattern, repl, string, count=0, flags=0):
        return self.compile(pattern, flags).sub(repl, string, count)

    def subn(self, pattern, repl, string, count=0, flags=0):
        return self.compile(pattern, flags).subn(repl, string, count)

    def match(self, pattern, string, flags=0):
        return self.compile(pattern, flags).match(string)

    def fullmatch(self, pattern, string, flags=0):
        return self.compile(pattern, flags).fullmatch(string)

    def search(self, pattern, string, flags=0):
        return self.compile(pattern, flags).search(string)

    def findall(self, pattern, string, flags=0):
        return self.compile(pattern, flags).findall(string)

    def finditer(self, pattern, string, flags=0):
        return self.compile(pattern, flags).finditer(string)

    def split(self, pattern, string, maxsplit=0, flags=0):
        return self.compile(pattern, flags).split(string, maxsplit)
