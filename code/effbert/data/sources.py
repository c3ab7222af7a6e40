"""Raw corpora -> documents in BERT's pretraining text format: one sentence per line, a blank line between
documents, in `<out>/part-NNNNN.txt` (10,000 documents a part) plus `<out>/stats.json`.

Sources (`inputs`: one file, or a folder searched recursively for the listed suffixes):
  wiki        MediaWiki XML dumps (*.xml, *.xml.bz2; Wikimedia's numbered parts *.xml-p<first>p<last>.bz2
              in page order, data/wiki_files.py) through wikiextractor (data/wikidump.py).
  bookcorpus  plain text (books_large_p1.txt ...): a run of non-blank lines is a document (one book per
              file gives one document per book if the books hold no blank lines).
  stories     CC-Stories: *.txt, one story per file (blank lines inside a story are ignored).
  realnews    jsonl (also *.jsonl.gz), one article per line in the field "text".
Lines are split into sentences (data/sentences.py); documents under min_words whitespace-separated words
are skipped (DEFAULT_MIN_WORDS: 128 for Wikipedia). bookcorpus and stories also end a document at the
line that reaches max_sentences (books_large_p1.txt has no blank lines at all).

Scale: the work is cut into units (data/workfolder.py): text/jsonl files over chunk_bytes (the setting chunk_mb,
in bytes) into line-aligned byte ranges (a cut moves to just after a blank line within BLANK_LINE_WINDOW bytes,
and starts a new document), smaller files grouped, a Wikimedia multistream .bz2 over chunk_bytes at its streams
(each holds whole pages; data/wikidump.py bz2_stream_cuts), any other .bz2 dump over chunk_bytes every
chunk_bytes (a span holds the pages that start in its bzip2 blocks, read through their index:
data/bz2_blocks.py), a plain .xml dump over chunk_bytes every chunk_bytes (a span holds the pages that start
in it), any other dump or .gz whole. Units run on `processes` worker processes (a wiki page's text is extracted
in the worker itself: data/wiki_articles.py), each into `<out>.work/` with a done-marker, so a killed run
resumes; `<out>` is assembled in input order, the same for any `processes`. A rerun with the same inputs_key
(input paths, sizes, mtimes, settings) in stats.json does nothing. Memory: one document per worker.

Bad input is skipped, counted and reported (stats.json "bad_input": up to BAD_INPUT_LIMIT {"file", "position",
"error"}; "bad_input_counts" by kind; a warning on stderr each): truncated (.bz2/.gz cut or corrupt; what came
before is kept), corrupt_stream (a multistream .bz2: that stream skipped, the next ones read;
"compressed_streams" counts streams and estimates the pages lost), malformed_xml (a wiki page),
extraction_failed (a wiki page wikiextractor's extractor raised on), invalid_utf8 (a text line, the rest of its
document kept; or a jsonl record), invalid_json and not_an_article (a jsonl line), empty_file (in a folder).
A missing input, an empty input file given alone, or a folder without input files: InputError. So is a wiki
input in which not one <page> element is found (a jsonl, an HTML page, a file that is not bzip2 data under a
.bz2 name): it is not a Wikipedia dump, and reading it would give nothing; pages that are found and skipped
(redirects, other namespaces, malformed) are the dump's own and change nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from effbert.data import workfolder
from effbert.data.sentences import Document, paragraphs_to_sentences, split_sentences
from effbert.data.wiki_files import wiki_inputs
from effbert.data.wikidump import bz2_stream_cuts, cut_at_streams, read_wiki
from effbert.data.work_units import pending, run_pending
from effbert.data.workfolder import Range, Unit
from effbert.errors import InputError
from effbert.files import atomic_dir, write_json
from effbert.locks import locks_output
from effbert.pipeline_config import DocumentsSettings

__all__ = ["build_documents", "input_files", "split_sentences"]

DEFAULT_MIN_WORDS = {"wiki": 128, "bookcorpus": 0, "stories": 0, "realnews": 1000}
INPUT_SUFFIXES = {
    "wiki": (".xml", ".xml.bz2"),
    "bookcorpus": (".txt",),
    "stories": (".txt",),
    "realnews": (".jsonl", ".jsonl.gz"),
}
DOCUMENTS_PER_PART = 10_000
BLANK_LINE_WINDOW = 1 << 20
BAD_INPUT_LIMIT = 100  # listed in stats.json (all are counted)
# each source's reader version, in every unit's key: bump one when a change to that reader changes what a unit
# writes, so that a resumed run redoes that source's units and no other's (wiki 2: pages extracted in the worker,
# the date's magic words at the revision's timestamp)
READER_VERSIONS = {"wiki": 2, "bookcorpus": 1, "stories": 1, "realnews": 1}


@locks_output("documents build")  # one writer of out_dir at a time
def build_documents(source: str, inputs: Path, out_dir: Path, settings: DocumentsSettings | None = None, *,
                    processes: int = 1) -> dict:  # fmt: skip
    """Read `inputs` as `source`, write `out_dir` atomically, and return the stats written to stats.json.

    `settings` (default: DocumentsSettings()'s declared defaults, their bounds checked there) say how; the
    output is the same for any number of `processes`."""
    if source not in READERS:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(READERS)}")
    settings = settings or DocumentsSettings()
    out_dir = Path(out_dir)
    files = input_files(source, Path(inputs))
    min_words = DEFAULT_MIN_WORDS[source] if settings.min_words is None else settings.min_words
    reading = {"version": READER_VERSIONS[source], "source": source, "min_words": min_words}  # in each unit's key
    if source in ("bookcorpus", "stories"):
        reading["max_sentences"] = settings.max_sentences
    bad_files = [f for f in files if f.stat().st_size == 0]  # of a folder: reported (alone: an InputError)
    units = plan_units(source, [f for f in files if f.stat().st_size], settings.chunk_bytes, reading)
    if not units:
        raise InputError(f"{inputs}: every {source} input file is empty")
    inputs_key = hashlib.sha256(json.dumps([[u.key for u in units], DOCUMENTS_PER_PART]).encode()).hexdigest()
    previous = _read_stats(out_dir)
    if previous is not None and previous.get("inputs_key") == inputs_key:
        print(f"documents ({source}): {out_dir} is up to date", file=sys.stderr)
        return previous

    work = out_dir.with_name(out_dir.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    markers = _run_units(source, units, work, reading, processes)
    if source == "wiki":
        _refuse_inputs_without_pages(units, markers, work)
    stats = {
        "source": source,
        "inputs": [str(path) for path in files],
        "min_words": min_words,
        **({"max_sentences": settings.max_sentences} if "max_sentences" in reading else {}),
        "inputs_key": inputs_key,
        "units": len(units),
    }
    with atomic_dir(out_dir) as tmp, workfolder.PartWriter(tmp, DOCUMENTS_PER_PART) as parts:
        for unit in tqdm(units, desc=f"assembling ({source})", unit=" unit", disable=None):
            parts.copy_unit(workfolder.unit_paths(work, unit)[0])
        parts.close()
        stats.update(_totals(source, units, markers, bad_files))
        stats["parts"] = parts.count
        write_json(tmp / "stats.json", stats)
    shutil.rmtree(work, ignore_errors=True)  # the output is in place: the units are no longer needed
    if stats["bad_input_counts"]:
        print(f"documents ({source}): {sum(stats['bad_input_counts'].values())} bad inputs skipped "
              f"{stats['bad_input_counts']}; see {out_dir / 'stats.json'}", file=sys.stderr)  # fmt: skip
    return stats


def input_files(source: str, inputs: Path) -> list[Path]:
    """`inputs` itself, or the files under the folder `inputs` with the source's suffixes, sorted."""
    if not inputs.exists():
        raise InputError(f"{inputs}: input path does not exist")
    if inputs.is_dir():
        suffixes = INPUT_SUFFIXES[source]
        if source == "wiki":
            return _wiki_files(inputs)
        files = sorted(p for p in inputs.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise InputError(f"{inputs}: folder holds no {source} input files (expected {', '.join(suffixes)})")
        return files
    if inputs.stat().st_size == 0:
        raise InputError(f"{inputs}: input file is empty")
    return [inputs]


def _wiki_files(folder: Path) -> list[Path]:
    """The article files of a dump folder under Wikimedia's names, in page order (data/wiki_files.py)."""
    files, passed_over = wiki_inputs(sorted(p for p in folder.rglob("*") if p.is_file()))
    if passed_over:
        names = ", ".join(p.name for p in passed_over[:5]) + (", ..." if len(passed_over) > 5 else "")
        print(f"documents (wiki): {folder}: passed over {len(passed_over)} file(s) that hold no article text "
              f"(multistream index, checksums, other dumps): {names}", file=sys.stderr)
    if not files:
        raise InputError(f"{folder}: folder holds no wiki input files (expected *.xml, *.xml.bz2, or Wikimedia's "
                         "numbered parts such as enwiki-<date>-pages-articles1.xml-p1p41242.bz2)")
    return files


def plan_units(source: str, files: list[Path], chunk_bytes: int, settings: dict) -> list[Unit]:
    """Work units in input order: big splittable files in line-aligned ranges, small files grouped."""
    units: list[Unit] = []
    group: list[Range] = []

    def flush() -> None:
        if group:
            units.append(workfolder.make_unit(group, settings))
            group.clear()

    for path in files:
        size = path.stat().st_size
        whole = source == "wiki" or path.name.endswith((".gz", ".bz2"))
        if whole or size > chunk_bytes:
            flush()
            # a big dump: Wikimedia's multistream .bz2 at its streams (each holds whole pages), any other .bz2 about
            # every chunk_bytes, a span then holding the pages of its bzip2 blocks (wikidump.py, data/bz2_blocks.py),
            # a plain .xml every chunk_bytes, a span then holding the pages that start in it
            if source == "wiki" and size > chunk_bytes and path.name.endswith((".bz2", ".xml")):
                cuts = (bz2_stream_cuts(path, chunk_bytes) if cut_at_streams(path)
                        else [*range(0, size, chunk_bytes), size])  # fmt: skip
                spans = zip(cuts[:-1], cuts[1:], strict=True)
                units += [workfolder.make_unit([Range(str(path), a, b)], settings) for a, b in spans]
                continue
            if whole:
                units.append(workfolder.make_unit([Range(str(path), 0, size)], settings))
                continue
            window = BLANK_LINE_WINDOW if source in ("bookcorpus", "stories") else 0
            cuts = workfolder.line_aligned_cuts(path, chunk_bytes, window)
            units += [
                workfolder.make_unit([Range(str(path), a, b)], settings)
                for a, b in zip(cuts[:-1], cuts[1:], strict=True)
            ]
        else:
            if sum(r.end - r.start for r in group) + size > chunk_bytes:
                flush()
            group.append(Range(str(path), 0, size))
    flush()
    return units


def _refuse_inputs_without_pages(units: list[Unit], markers: list[dict], work: Path) -> None:
    """InputError for a wiki input in which no <page> element was found, over all its units: it is not a dump.
    A .bz2 dump cut or corrupt before its first page (reported "truncated" or "corrupt_stream") is a damaged
    dump, skipped and reported as before, while another input gives pages; a file under a .bz2 name that is not
    bzip2 data at all is no dump. A marker written before pages were counted has no "pages": its file is not
    judged. When no input holds a page the work folder goes too (there is nothing to resume)."""
    pages: dict[str, int | None] = {}
    problems: dict[str, list[dict]] = {}
    for unit, marker in zip(units, markers, strict=True):
        found = marker.get("pages")
        for index, r in enumerate(unit.ranges):
            known = pages.get(r.path, 0)
            pages[r.path] = None if known is None or found is None else known + found[index]
        for bad in marker["bad_input"]:
            problems.setdefault(bad["file"], []).append(bad)
    empty = [path for path, count in pages.items() if count == 0]
    damaged = {path for path in empty if not _not_bzip2(path) and any(
        bad["kind"] in ("truncated", "corrupt_stream") for bad in problems.get(path, []))}
    refused = [path for path in empty if path not in damaged]
    if not refused and (not empty or any(pages.values())):
        return
    if len(empty) == len(pages):
        shutil.rmtree(work, ignore_errors=True)
    path = (refused or empty)[0]
    also = f" (and {len(refused or empty) - 1} more such input(s))" if len(refused or empty) > 1 else ""
    why = " (not bzip2 data: it does not start with 'BZh')" if _not_bzip2(path) else ""
    kinds = ", ".join(sorted({bad["kind"] for bad in problems.get(path, [])}))
    cause = f"; bad input in it was reported above ({kinds})" if kinds else ""
    raise InputError(f"{path}: no <page> element found{why}; expected a Wikipedia XML dump (pages-articles: "
                     f"*.xml or *.xml.bz2 of <mediawiki> with <page> elements){also}{cause}")


def _not_bzip2(path: str) -> bool:
    """A file under a .bz2 name that does not start as bzip2 data does ('BZh' and the block size)."""
    if not path.endswith(".bz2"):
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0")


def _read_stats(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Running the units


def _run_units(source: str, units: list[Unit], work: Path, settings: dict, processes: int) -> list[dict]:
    """Each unit's marker, running the units without one (in worker processes when processes > 1)."""
    todo = pending(units, lambda unit: workfolder.unit_done(work, unit))
    if len(todo) < len(units):
        print(f"documents ({source}): {len(units) - len(todo)} of {len(units)} units already done in {work}",
              file=sys.stderr)  # fmt: skip
    workers = max(1, min(processes, len(todo)))
    total = sum(u.size for u in units)
    with tqdm(total=total, initial=total - sum(u.size for u in todo), desc=f"documents ({source})", unit="B",
              unit_scale=True, disable=None) as bar:  # fmt: skip

        def finished(unit: Unit, marker: dict) -> None:
            for bad in marker["bad_input"]:  # the lines of the file before a later range are not known here
                where = ": ".join(filter(None, [bad["file"], _where(source, unit.ranges[bad["range"]], bad, None)]))
                print(f"warning: documents ({source}): {where}: {bad['error']}", file=sys.stderr)
            bar.update(unit.size)

        show_documents = workers == 1  # in this process, a unit (a whole dump) shows its documents as they come
        run_pending(todo, run_unit=_run_unit, workers=workers, start_method="spawn", on_done=finished,
                    job=lambda unit: (source, unit, work, settings, show_documents))  # fmt: skip
    return [workfolder.load_marker(work, unit) for unit in units]


def _run_unit(job: tuple) -> dict:
    """Read one unit and write its documents and marker; the marker's counts."""
    source, unit, work, settings, show_documents = job
    min_words = settings["min_words"]
    counts: dict = {"documents": 0, "words": 0, "sentences": 0, "skipped": Counter(), "bad_input": [],
                    "bad_input_counts": Counter(), "lines": [0] * len(unit.ranges), "streams": Counter(),
                    "pages": [0] * len(unit.ranges)}  # fmt: skip

    def kept_documents() -> Iterator[Document]:
        for index, r in enumerate(unit.ranges):
            context = _ReadContext(r, index, counts, settings.get("max_sentences", 0), work)
            for document in READERS[source](context):
                count = sum(len(sentence.split()) for sentence in document)
                if count == 0:
                    counts["skipped"]["empty"] += 1
                elif count < min_words:
                    counts["skipped"]["too_short"] += 1
                else:
                    counts["documents"] += 1
                    counts["words"] += count
                    counts["sentences"] += len(document)
                    yield document

    # closing: on a failed write (a full disk) the readers stop now, while their threads can still end, not
    # at interpreter exit, where a reader waiting for its feeder thread would wait forever
    with (tqdm(desc="documents", unit=" doc", leave=False, disable=None if show_documents else True) as bar,
          contextlib.closing(kept_documents()) as documents):
        workfolder.write_unit(work, unit, _counted(documents, bar), counts)
    return json.loads(json.dumps(counts))


def _counted(documents: Iterator[Document], bar: tqdm) -> Iterator[Document]:
    for document in documents:
        bar.update()
        yield document


def _where(source: str, r: Range, bad: dict, lines_before: int | None) -> str:
    """Where in its file a bad input was found: 'line L, byte B' as far as they are known. A reader counts lines
    from the start of its range, and `lines_before` (None: not known) are the file's lines in its earlier ranges.
    A plain .xml dump's spans count from the file's start already (data/wikidump.py). A .bz2 dump's later spans
    count from a block or stream boundary deep in the decompressed text, which no line of the file names: they
    give the span's compressed bytes instead (and the error names the page)."""
    plain_dump = source == "wiki" and bad["file"].endswith(".xml")
    if source == "wiki" and r.start > 0 and not plain_dump:
        return _position(None, bad["byte"]) if bad["byte"] is not None else f"compressed bytes {r.start}-{r.end}"
    line = bad["line"]
    if line is not None and not plain_dump:
        before = 0 if r.start == 0 else lines_before
        line = None if before is None else line + before
    return _position(line, bad["byte"])


def _position(line: int | None, byte: int | None) -> str:
    return ", ".join(([f"line {line}"] if line is not None else []) + ([f"byte {byte}"] if byte is not None else []))


def _totals(source: str, units: list[Unit], markers: list[dict], bad_files: list[Path]) -> dict:
    """Sum the units' counts; turn each bad input's line within its range into the line of its file."""
    documents = words = sentences = 0
    skipped: Counter[str] = Counter()
    streams: Counter[str] = Counter()  # a .bz2's compressed streams (wiki)
    bad_counts: Counter[str] = Counter({"empty_file": len(bad_files)} if bad_files else {})
    bad_input = [{"file": str(f), "position": "byte 0", "error": "empty file"} for f in bad_files]
    lines_before: Counter[str] = Counter()  # lines of a file in the ranges before this one
    for unit, marker in zip(units, markers, strict=True):
        documents, words, sentences = (documents + marker["documents"], words + marker["words"],
                                       sentences + marker["sentences"])  # fmt: skip
        skipped.update(marker["skipped"])
        streams.update(marker.get("streams", {}))  # absent from the markers of units done before it was counted
        bad_counts.update(marker["bad_input_counts"])
        bases = []
        for r, lines in zip(unit.ranges, marker["lines"], strict=True):
            bases.append(lines_before[r.path])
            lines_before[r.path] += lines
        for bad in marker["bad_input"]:
            where = _where(source, unit.ranges[bad["range"]], bad, bases[bad["range"]])
            bad_input.append({"file": bad["file"], "position": where, "error": bad["error"]})
    return {
        "documents": documents,
        "words": words,
        "sentences": sentences,
        "skipped": dict(sorted(skipped.items())),
        "bad_input_counts": dict(sorted(bad_counts.items())),
        "bad_input": bad_input[:BAD_INPUT_LIMIT],
        **({"compressed_streams": _stream_counts(streams)} if streams else {}),
    }


def _stream_counts(streams: Counter) -> dict:
    """stats.json's account of a multistream dump: streams read, streams skipped as corrupt, and the pages
    those held, estimated from the intact streams' mean (Wikimedia puts 100 pages in each)."""
    per_stream = streams["pages"] / max(1, streams["page_streams"])
    return {"read": streams["streams"], "damaged": streams["damaged_streams"],
            "pages_lost_estimate": round(streams["damaged_streams"] * per_stream)}


class _ReadContext:
    """What a reader needs: its byte range, where to report bad input, and settings."""

    def __init__(self, r: Range, index: int, counts: dict, max_sentences: int, work: Path):
        self.path, self.start, self.end = Path(r.path), r.start, r.end
        self.max_sentences = max_sentences
        self.work = work  # the work folder: a big .bz2's block index is kept there (data/bz2_blocks.py)
        self._index, self._counts = index, counts
        self.streams: Counter = counts["streams"]

    def report(self, kind: str, error: str, line: int | None = None, byte: int | None = None) -> None:
        """Count one bad input (`line` counts from the start of the range, `byte` from the file's start)."""
        self._counts["bad_input_counts"][kind] += 1
        if len(self._counts["bad_input"]) < BAD_INPUT_LIMIT:
            self._counts["bad_input"].append(
                {"range": self._index, "file": str(self.path), "line": line, "byte": byte, "kind": kind, "error": error}
            )

    def found_pages(self, count: int) -> None:
        """The <page> elements a wiki reader found in the range (data/wikidump.py read_wiki)."""
        self._counts["pages"][self._index] = count

    def raw_lines(self) -> Iterator[tuple[int, int, bytes]]:
        """(line number within the range, byte offset in the file, bytes) of each line of the range; a .gz file
        whole, a truncated one up to its cut (reported)."""
        number = 0
        position = self.start
        try:
            with (gzip.open if self.path.name.endswith(".gz") else open)(self.path, "rb") as f:
                if self.start:
                    f.seek(self.start)
                for raw in f:
                    if position >= self.end and not self.path.name.endswith(".gz"):
                        break
                    number += 1
                    self._counts["lines"][self._index] = number
                    yield number, position, raw
                    position += len(raw)
        except (EOFError, OSError) as e:
            self.report("truncated", f"truncated or corrupt compressed file ({e}); the lines before it are kept",
                        line=number + 1, byte=None)  # fmt: skip

    def text_lines(self) -> Iterator[str]:
        """Decoded lines; a line that is not UTF-8 is reported and skipped."""
        for number, position, raw in self.raw_lines():
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self.report("invalid_utf8", f"not UTF-8 text ({e.reason}); line skipped", line=number,
                            byte=position + e.start)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Readers: a _ReadContext -> documents


def _capped_runs(context: _ReadContext, blank_line_ends: bool) -> Iterator[Document]:
    """Documents of at most about max_sentences sentences; with blank_line_ends, a blank line ends one too."""
    document: Document = []
    for line in context.text_lines():
        if line.strip():
            document += split_sentences(line)
            if len(document) >= context.max_sentences:
                yield document
                document = []
        elif blank_line_ends and document:
            yield document
            document = []
    if document:
        yield document


def _read_bookcorpus(context: _ReadContext) -> Iterator[Document]:
    yield from _capped_runs(context, blank_line_ends=True)


def _read_story(context: _ReadContext) -> Iterator[Document]:
    any_document = False
    for document in _capped_runs(context, blank_line_ends=False):
        any_document = True
        yield document
    if not any_document:
        yield []  # counted as an empty document


def _read_realnews(context: _ReadContext) -> Iterator[Document]:
    for number, position, raw in context.raw_lines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            context.report("invalid_utf8", f"not UTF-8 text ({e.reason}); record skipped", line=number,
                           byte=position + e.start)  # fmt: skip
            continue
        except ValueError as e:
            context.report("invalid_json", f"not valid JSON ({e}); record skipped", line=number, byte=position)
            continue
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            context.report("not_an_article", 'expected a JSON object with a string field "text"; record skipped',
                           line=number, byte=position)  # fmt: skip
            continue
        yield paragraphs_to_sentences(text.split("\n"))


def _read_wiki(context: _ReadContext) -> Iterator[Document]:
    seen: Counter = Counter()
    yield from read_wiki(context.path, context.report, context.streams,
                         (context.start, context.end), context.work, seen)
    context.found_pages(seen["pages"])


READERS: dict[str, Callable[[_ReadContext], Iterator[Document]]] = {
    "wiki": _read_wiki,
    "bookcorpus": _read_bookcorpus,
    "stories": _read_story,
    "realnews": _read_realnews,
}
