"""Which files of a Wikipedia dump folder hold article text, and in what order, under Wikimedia's names.

Wikimedia publishes a wiki's articles (https://dumps.wikimedia.org/enwiki/<date>/) as one file, as one
multistream file with an index, and as numbered parts named by the page ids they hold:

    enwiki-20231101-pages-articles.xml.bz2
    enwiki-20231101-pages-articles-multistream.xml.bz2      (+ -multistream-index.txt.bz2)
    enwiki-20231101-pages-articles1.xml-p1p41242.bz2         (part 1: pages 1 to 41242)
    enwiki-20231101-pages-articles-multistream1.xml-p1p41242.bz2

A part is read in page order (by its first page id: part 10 after part 9, not after part 1). The
multistream index files and the dump's other files (checksums, stub and abstract dumps, ...) are passed
over with a note. A folder that holds the same articles twice (the multistream and the plain series of
one dump, or a series whole and in parts) is an error, since every article would count twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from effbert.errors import InputError

# <series><part number>.xml-p<first>p<last>.bz2 (a numbered part) or <series>.xml[.bz2] (a whole file)
_PART = re.compile(r"^(?P<series>.+?)(?P<number>\d+)\.xml-p(?P<first>\d+)p(?P<last>\d+)\.bz2$")
_WHOLE = re.compile(r"^(?P<series>.+)\.xml(?:\.bz2)?$")
_DUMP = re.compile(r"^(?P<wiki>[a-z_-]+wiki)-(?P<date>\d{8}|latest)-(?P<kind>pages-articles(?:-multistream)?)$")


@dataclass(frozen=True)
class WikiFile:
    path: Path
    series: str  # e.g. enwiki-20231101-pages-articles-multistream
    first_page: int | None  # a numbered part's first page id; None for a whole file


def wiki_inputs(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(article files in reading order, files passed over) among the files of a dump folder."""
    found, passed_over = [], []
    for path in files:
        part, whole = _PART.match(path.name), _WHOLE.match(path.name)
        if part:
            found.append(WikiFile(path, part["series"], int(part["first"])))
        elif whole and not whole["series"].endswith("-index"):
            found.append(WikiFile(path, whole["series"], None))
        else:
            passed_over.append(path)
    _refuse_the_same_articles_twice(found)
    found.sort(key=lambda f: (f.series, -1 if f.first_page is None else f.first_page, f.path.name))
    return [f.path for f in found], passed_over


def _refuse_the_same_articles_twice(found: list[WikiFile]) -> None:
    by_series: dict[str, set[bool]] = {}
    for f in found:
        by_series.setdefault(f.series, set()).add(f.first_page is None)
    for series, kinds in by_series.items():
        if len(kinds) == 2:
            raise InputError(f"{series}: both the whole file and numbered parts are here, the same articles twice; "
                             "keep one of the two")
    dumps: dict[tuple[str, str], list[str]] = {}
    for series in by_series:
        dump = _DUMP.match(series)
        if dump:
            dumps.setdefault((dump["wiki"], dump["date"]), []).append(series)
    for (wiki, date), series in dumps.items():
        if len(series) > 1:
            raise InputError(f"{wiki} {date}: both {' and '.join(sorted(series))} are here, the same articles twice; "
                             "keep one of the two (multistream or not)")
