"""The documents stage: dumps and corpora -> one sentence per line, blank line between documents."""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from effbert.cli import main
from effbert.data import sources
from effbert.data.sources import build_documents, split_sentences
from effbert.data.wikidump import checked_pages
from effbert.demo.wiki import DEMO_WIKI_NAME, STUB_EVERY, write_demo_wiki
from effbert.errors import InputError
from effbert.pipeline_config import DocumentsSettings
from helpers import one_line_exit_2

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_DEMO_WIKI = ROOT / "demo" / "data-preprocessing" / "wiki" / DEMO_WIKI_NAME
MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}|''|<ref|</ref|&lt;|&gt;|&amp;|==")

ALPHA = """{{Infobox settlement|name=Alpha Town|river=Blue}}
'''Alpha Town''' is a town in [[Berland|the Berland region]]. \
It lies on the [[Blue River]].<ref>Some source, 1999.</ref> Dr. Smith lived there.

== History ==
It was founded in 1820. The town grew quickly!

[[Category:Towns in Berland]]"""
ALPHA_SENTENCES = [
    "Alpha Town is a town in the Berland region.",
    "It lies on the Blue River.",
    "Dr. Smith lived there.",
    "It was founded in 1820.",
    "The town grew quickly!",
]
BETA = "The '''Beta fox''' is a small [[fox]]. It is red. {{animal-stub}}\n\n[[Category:Foxes]]"
BETA_SENTENCES = ["The Beta fox is a small fox.", "It is red."]

SITEINFO = """  <siteinfo>
    <sitename>Test</sitename>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
"""


KEEP_ALL = DocumentsSettings(min_words=0)  # every document, however short


def _chunked(chunk_bytes: int) -> DocumentsSettings:
    """Every document, the inputs cut into units of about chunk_bytes (chunk_mb counts MB of 2**20 bytes)."""
    return DocumentsSettings(min_words=0, chunk_mb=chunk_bytes / 2**20)


def dump_xml(pages: list[tuple[str, str]], siteinfo: bool = True) -> str:
    body = "".join(
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>0</ns>\n    <id>{i}</id>\n    <revision>\n"
        f"      <id>{100 + i}</id>\n      <timestamp>2001-01-01T00:00:00Z</timestamp>\n"
        f'      <text xml:space="preserve">{escape(text)}</text>\n    </revision>\n  </page>\n'
        for i, (title, text) in enumerate(pages, 1)
    )
    root = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    return root + (SITEINFO if siteinfo else "") + body + "</mediawiki>\n"


def write_dump(path: Path, pages: list[tuple[str, str]], siteinfo: bool = True) -> Path:
    data = dump_xml(pages, siteinfo).encode("utf-8")
    path.write_bytes(bz2.compress(data) if path.name.endswith(".bz2") else data)
    return path


def read_documents(out: Path) -> list[list[str]]:
    documents = []
    for part in sorted(out.glob("part-*.txt")):
        text = part.read_text(encoding="utf-8").strip("\n")
        documents += [block.split("\n") for block in text.split("\n\n")] if text else []
    return documents


def assert_no_output(out: Path) -> None:
    """No output and no temporary left (the writer lock's file, which only names its last holder, stays)."""
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert leftovers in ([], [f".{out.name}.lock"])


# ---- Wikipedia ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "siteinfo"), [("dump.xml.bz2", True), ("dump.xml", False)])
def test_wiki_dump_gives_the_prose_without_markup(tmp_path, name, siteinfo):
    dump = write_dump(tmp_path / name, [("Alpha Town", ALPHA), ("Beta fox", BETA)], siteinfo)
    stats = build_documents("wiki", dump, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [ALPHA_SENTENCES, BETA_SENTENCES]
    text = (tmp_path / "out" / "part-00000.txt").read_text(encoding="utf-8")
    assert text == "\n".join(ALPHA_SENTENCES) + "\n\n" + "\n".join(BETA_SENTENCES) + "\n"
    assert stats == json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["documents"] == 2 and stats["sentences"] == 7 and stats["skipped"] == {}
    assert stats["words"] == sum(len(s.split()) for s in ALPHA_SENTENCES + BETA_SENTENCES) == 38


def test_min_words_filter_counts_what_it_skips(tmp_path):
    pages = [("Alpha Town", ALPHA), ("Beta fox", BETA), ("Gamma", "{{only a template}}")]
    dump = write_dump(tmp_path / "dump.xml.bz2", pages)
    stats = build_documents("wiki", dump, tmp_path / "out", DocumentsSettings(min_words=11))  # Alpha: 28 words, Beta 10
    assert read_documents(tmp_path / "out") == [ALPHA_SENTENCES]
    assert stats["skipped"] == {"too_short": 1, "empty": 1}
    default = build_documents("wiki", dump, tmp_path / "out")  # Wikipedia's default: 128 words
    assert default["min_words"] == 128 and default["documents"] == 0
    assert default["skipped"] == {"too_short": 2, "empty": 1}
    assert (tmp_path / "out" / "part-00000.txt").read_text() == ""


def test_truncated_bz2_keeps_the_pages_before_the_cut_and_reports_it(tmp_path):
    # a multistream dump (as Wikipedia publishes): the first stream whole, the second cut in half
    text = dump_xml([("Alpha Town", ALPHA)] + [("Beta fox", BETA)] * 20).encode()
    split = text.index(b"  <page>", text.index(b"</page>"))
    second = bz2.compress(text[split:])
    dump = tmp_path / "cut.xml.bz2"
    dump.write_bytes(bz2.compress(text[:split]) + second[: len(second) // 2])
    stats = build_documents("wiki", dump, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [ALPHA_SENTENCES]
    assert stats["bad_input_counts"] == {"truncated": 1}
    [bad] = stats["bad_input"]
    assert bad["file"] == str(dump) and "truncated" in bad["error"]
    lines_before_cut = text[:split].count(b"\n")  # the first stream's lines; the cut one gave none
    assert bad["position"] == f"line {lines_before_cut + 1}, byte {dump.stat().st_size}"


def test_malformed_page_is_skipped_and_reported_with_its_line(tmp_path, capsys):
    dump = tmp_path / "bad.xml"
    text = dump_xml([("Alpha Town", ALPHA), ("Broken", BETA), ("Beta fox", BETA)])
    broken = text.index("<title>Broken</title>")
    text = text[:broken] + text[broken:].replace("</title>", "</titel>", 1)
    dump.write_text(text, encoding="utf-8")
    stats = build_documents("wiki", dump, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [ALPHA_SENTENCES, BETA_SENTENCES]
    page_line = text[: text.rindex("<page>", 0, broken)].count("\n") + 1
    assert stats["bad_input"] == [
        {"file": str(dump), "position": f"line {page_line}", "error": stats["bad_input"][0]["error"]}
    ]
    assert "malformed XML" in stats["bad_input"][0]["error"] and stats["bad_input_counts"] == {"malformed_xml": 1}
    assert f"bad.xml: line {page_line}: malformed XML" in capsys.readouterr().err


def test_missing_or_empty_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build_documents("wiki", tmp_path / "nowhere.xml.bz2", tmp_path / "out")
    (tmp_path / "empty.xml").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.xml: input file is empty"):
        build_documents("wiki", tmp_path / "empty.xml", tmp_path / "out")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="no wiki input files"):
        build_documents("wiki", tmp_path / "folder", tmp_path / "out")
    assert_no_output(tmp_path / "out")


def test_a_wiki_input_without_a_single_page_is_refused_in_one_line(tmp_path, capsys):
    """A file that is not a Wikipedia dump (here a jsonl) gives no page at all: exit 2 and one line naming it,
    not an empty output; a dump whose pages are all skipped (a redirect, another namespace) is still a dump."""
    news = tmp_path / "news.jsonl"
    news.write_text(json.dumps({"text": "Not a dump. " * 50}) + "\n", encoding="utf-8")
    argv = ["documents", "--source", "wiki", "--input", str(news), "--out", str(tmp_path / "out")]
    err = one_line_exit_2(argv, capsys)
    assert f"{news}: no <page> element found; expected a Wikipedia XML dump (pages-articles" in err
    assert_no_output(tmp_path / "out")
    assert not (tmp_path / "out.work").exists()  # nothing to resume
    # in a folder with a real dump: the file without a page is named, and nothing is written
    folder = tmp_path / "dumps"
    folder.mkdir()
    write_dump(folder / "a.xml", [("Alpha Town", ALPHA)])
    (folder / "b.xml").write_text("<html><body>a saved web page</body></html>\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.xml: no <page> element found"):
        build_documents("wiki", folder, tmp_path / "out", KEEP_ALL)
    assert_no_output(tmp_path / "out")
    # pages found and skipped, none an article: a dump all the same, read to no documents as before
    redirect = tmp_path / "redirect.xml"
    redirect.write_text(dump_xml([("Alpha", "#REDIRECT [[Alpha Town]]")]).replace(
        "<ns>0</ns>", '<ns>0</ns>\n    <redirect title="Alpha Town" />'), encoding="utf-8")
    stats = build_documents("wiki", redirect, tmp_path / "out", KEEP_ALL)
    assert stats["documents"] == 0 and stats["bad_input_counts"] == {}


def test_a_file_that_is_not_bzip2_under_a_bz2_name_reads_in_plain_words(tmp_path, capsys):
    """Not bzip2 data: the warning gives the compressed byte and the decompressed line, and the run fails
    naming the file (no page was found). A dump cut before its first page is damaged, not another kind of file:
    alone it fails too (nothing was read), beside dumps that give pages it is skipped and reported
    (test_a_damaged_part_is_counted_and_the_other_parts_kept)."""
    fake = tmp_path / "fake.xml.bz2"
    fake.write_bytes(dump_xml([("Alpha Town", ALPHA)]).encode())  # plain XML under a .bz2 name
    reported = []
    assert b"".join(checked_pages(fake, lambda *a, **k: reported.append((a, k)))) == b""
    [((kind, error), where)] = reported
    assert kind == "truncated" and where == {"line": 1, "byte": fake.stat().st_size}
    assert f"(Invalid data stream) before compressed byte {fake.stat().st_size}, at decompressed line 1; " in error
    assert "given" not in error
    with pytest.raises(InputError, match=r"fake\.xml\.bz2: no <page> element found \(not bzip2 data: it does "
                       r"not start with 'BZh'\); expected a Wikipedia XML dump.*reported above \(truncated\)"):
        build_documents("wiki", fake, tmp_path / "out", KEEP_ALL)
    assert "at decompressed line 1;" in capsys.readouterr().err
    assert_no_output(tmp_path / "out")
    cut = write_dump(tmp_path / "cut.xml.bz2", [("Alpha Town", ALPHA)])
    cut.write_bytes(cut.read_bytes()[:40])  # one stream, one block: nothing of it decompresses
    with pytest.raises(InputError, match=r"cut\.xml\.bz2: no <page> element found; .*reported above \(truncated\)"):
        build_documents("wiki", cut, tmp_path / "out", KEEP_ALL)
    assert_no_output(tmp_path / "out")


def test_a_folder_of_dumps_is_read_in_name_order(tmp_path):
    folder = tmp_path / "dumps"
    folder.mkdir()
    write_dump(folder / "b.xml.bz2", [("Alpha Town", ALPHA)])
    write_dump(folder / "a.xml", [("Beta fox", BETA)])
    (folder / "notes.txt").write_text("not a dump")
    stats = build_documents("wiki", folder, tmp_path / "out", KEEP_ALL, processes=2)
    assert read_documents(tmp_path / "out") == [BETA_SENTENCES, ALPHA_SENTENCES]
    assert stats["inputs"] == [str(folder / "a.xml"), str(folder / "b.xml.bz2")]


# ---- other sources --------------------------------------------------------------------------------------


def test_realnews_reads_the_text_field(tmp_path):
    path = tmp_path / "news.jsonl"
    records = [{"title": "T", "text": "First paragraph here. Second sentence.\nNew paragraph."}, {"text": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    stats = build_documents("realnews", path, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [["First paragraph here.", "Second sentence.", "New paragraph."]]
    assert stats["skipped"] == {"empty": 1}
    assert build_documents("realnews", path, tmp_path / "out")["skipped"] == {"empty": 1, "too_short": 1}


@pytest.mark.parametrize(
    ("bad_line", "kind"),
    [('{"text": "cut off', "invalid_json"), ('{"title": "x"}', "not_an_article"), ('["a list"]', "not_an_article")],
)
def test_realnews_bad_line_is_skipped_and_reported(tmp_path, capsys, bad_line, kind):
    path = tmp_path / "news.jsonl"
    good = json.dumps({"text": "Fine."}) + "\n"
    path.write_text(good + bad_line + "\n" + good, encoding="utf-8")
    stats = build_documents("realnews", path, tmp_path / "out", KEEP_ALL)
    assert read_documents(tmp_path / "out") == [["Fine."], ["Fine."]]
    assert stats["bad_input_counts"] == {kind: 1}
    assert [(b["file"], b["position"]) for b in stats["bad_input"]] == [(str(path), f"line 2, byte {len(good)}")]
    assert "news.jsonl: line 2, byte" in capsys.readouterr().err


def test_realnews_truncated_gz_and_bad_utf8_keep_the_rest(tmp_path):
    good = [json.dumps({"text": f"Article {i} here."}) for i in range(2000)]
    whole = gzip.compress(("\n".join(good[:3] + ['{"text": "bad \xff"}']) + "\n").encode("latin-1"))
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "a.jsonl.gz").write_bytes(whole)
    cut = gzip.compress(("\n".join(good) + "\n").encode())
    (tmp_path / "news" / "b.jsonl.gz").write_bytes(cut[: len(cut) // 2])
    stats = build_documents("realnews", tmp_path / "news", tmp_path / "out", KEEP_ALL)
    assert stats["bad_input_counts"] == {"invalid_utf8": 1, "truncated": 1}
    a, b = stats["bad_input"]
    assert a["file"].endswith("a.jsonl.gz") and a["position"].startswith("line 4, byte ")
    assert b["file"].endswith("b.jsonl.gz") and "truncated" in b["error"]
    documents = read_documents(tmp_path / "out")
    kept = len(documents) - 3  # b's lines before the cut, in order
    assert 0 < kept < 2000 and documents[3:] == [[f"Article {i} here."] for i in range(kept)]


def test_bookcorpus_runs_between_blank_lines_are_documents(tmp_path):
    path = tmp_path / "books_large_p1.txt"
    path.write_text("the first book begins .\nit ends here .\n\n\nthe second book .\n", encoding="utf-8")
    build_documents("bookcorpus", path, tmp_path / "out")
    assert read_documents(tmp_path / "out") == [["the first book begins .", "it ends here ."], ["the second book ."]]


def test_bookcorpus_folder_gives_one_document_per_book(tmp_path, monkeypatch):
    books = tmp_path / "books"
    books.mkdir()
    for i in range(5):
        (books / f"book{i}.txt").write_text(f"Book {i} starts. It goes on.\nThe end.\n", encoding="utf-8")
    monkeypatch.setattr(sources, "DOCUMENTS_PER_PART", 2)
    stats = build_documents("bookcorpus", books, tmp_path / "out")
    assert stats["documents"] == 5 and stats["parts"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part-00000.txt", "part-00001.txt", "part-00002.txt", "stats.json"
    ]
    assert read_documents(tmp_path / "out")[3] == ["Book 3 starts.", "It goes on.", "The end."]


def test_stories_one_document_per_file(tmp_path):
    folder = tmp_path / "stories"
    folder.mkdir()
    (folder / "s1.txt").write_text("Once upon a time. A fox lived.\n\nThe fox slept.\n", encoding="utf-8")
    (folder / "s2.txt").write_text('He said "Go home." Then he left.\n', encoding="utf-8")
    stats = build_documents("stories", folder, tmp_path / "out")
    assert read_documents(tmp_path / "out") == [
        ["Once upon a time.", "A fox lived.", "The fox slept."],
        ['He said "Go home."', "Then he left."],
    ]
    assert stats["min_words"] == 0


def test_non_utf8_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "story.txt"
    path.write_bytes(b"Good line.\nBad \xff line.\nLast line.\n")
    stats = build_documents("stories", path, tmp_path / "out")
    assert read_documents(tmp_path / "out") == [["Good line.", "Last line."]]
    assert stats["bad_input"][0]["position"] == "line 2, byte 15"  # the \xff
    assert "not UTF-8" in stats["bad_input"][0]["error"] and stats["bad_input_counts"] == {"invalid_utf8": 1}


def test_split_sentences_keeps_abbreviations_and_initials():
    text = "Dr. J. R. Smith met Mr. Brown in the U.S. in 1820. It rained (a lot). Then? Yes! 3 left."
    assert split_sentences(text) == [
        "Dr. J. R. Smith met Mr. Brown in the U.S. in 1820.",
        "It rained (a lot).",
        "Then?",
        "Yes!",
        "3 left.",
    ]



def test_split_sentences_reads_any_white_space_as_one_space():
    spaced = "It\u00a0rained  (a\tlot).\u2009\u2009Then?\x1c Yes!\u3000\n3 left. "
    assert split_sentences(spaced) == ["It rained (a lot).", "Then?", "Yes!", "3 left."]
    assert split_sentences(spaced) == split_sentences(re.sub(r"\s+", " ", spaced))


def test_section_headings_are_removed_line_by_line(tmp_path):
    page = ("<page><title>T</title><ns>0</ns><id>1</id><revision><text>Intro\n== One ==\n=== Two ===  \r\n"
            "Body\n==\nx == y ==\n= Z =</text></revision></page>")  # fmt: skip
    dump = tmp_path / "dump.xml"
    dump.write_text(f"<mediawiki>\n{page}\n</mediawiki>\n", encoding="utf-8")
    text = b"".join(checked_pages(dump, lambda *a, **k: None)).decode("utf-8")
    # each heading line becomes an empty line; "==" alone, "x == y ==" and the last line (no newline) stay
    assert text == page.replace("== One ==\n=== Two ===  \r\n", "\n\n").join(["<mediawiki>\n", "\n</mediawiki>\n"])

# ---- scale: chunks, processes, resuming, bounded documents -------------------------------------------------

WORDS = "fox town river book story night light stone".split()


def write_news(path: Path, articles: int, seed: int, bad_every: int = 0) -> None:
    """A generated jsonl: articles of 2-6 sentences; with bad_every, every bad_every-th line is broken JSON."""
    lines = []
    for i in range(articles):
        sentences = [
            f"{WORDS[(seed + i + j) % 8].title()} {i} {' '.join(WORDS[: 1 + (i * j) % 8])}." for j in range(2 + i % 5)
        ]
        line = json.dumps({"text": " ".join(sentences[:2]) + "\n" + " ".join(sentences[2:])})
        lines.append(line[:-5] if bad_every and i % bad_every == bad_every - 1 else line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def news_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "news"
    folder.mkdir()
    write_news(folder / "a.jsonl", 300, seed=1, bad_every=50)  # ~30 kB: cut in several ranges
    for k in range(4):  # small files, grouped into units
        write_news(folder / f"b{k}.jsonl", 20, seed=k)
    return folder


def part_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_output_for_any_number_of_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DOCUMENTS_PER_PART", 100)
    folder = news_folder(tmp_path)
    one = build_documents("realnews", folder, tmp_path / "one", _chunked(4000))
    two = build_documents("realnews", folder, tmp_path / "two", _chunked(4000), processes=2)
    assert one["units"] > 8 and one == two and part_bytes(tmp_path / "one") == part_bytes(tmp_path / "two")
    whole = build_documents("realnews", folder, tmp_path / "whole", KEEP_ALL)  # one unit a file
    assert whole["units"] == 1 and read_documents(tmp_path / "whole") == read_documents(tmp_path / "one")
    assert one["documents"] == 300 - 6 + 80 and one["parts"] == 4
    # the broken lines are named by their line in a.jsonl, whichever range they fell in
    assert [b["position"].split(",")[0] for b in one["bad_input"]] == [f"line {50 * k}" for k in range(1, 7)]
    assert one["bad_input_counts"] == {"invalid_json": 6} and whole["bad_input"] == one["bad_input"]
    assert not (tmp_path / "one.work").exists()  # the work folder is removed once the output is in place


def test_chunk_mb_states_any_whole_number_of_bytes_and_the_cli_refuses_less_than_one(tmp_path, capsys):
    """chunk_mb counts MB of 2**20 bytes: a fraction of one states a small unit to the byte."""
    for size in (1, 4000, 4001, 64 << 20, 10**12 + 7):
        assert _chunked(size).chunk_bytes == size
    folder = news_folder(tmp_path)
    assert main(["documents", "--source", "realnews", "--input", str(folder), "--out", str(tmp_path / "out"),
                 "--chunk_mb", str(4000 / 2**20), "--min_words", "0"]) == 0
    assert build_documents("realnews", folder, tmp_path / "direct", _chunked(4000))["units"] > 8
    assert part_bytes(tmp_path / "out") == part_bytes(tmp_path / "direct")
    assert main(["documents", "--source", "realnews", "--input", str(folder), "--out", str(tmp_path / "bad"),
                 "--chunk_mb", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("effbert documents: error: --chunk_mb:")
    assert not (tmp_path / "bad").exists()


def test_an_interrupted_run_resumes_without_redoing_finished_units(tmp_path, monkeypatch):
    folder = news_folder(tmp_path)
    build_documents("realnews", folder, tmp_path / "clean", _chunked(4000))
    read = sources.READERS["realnews"]
    calls: list[tuple[str, int]] = []

    def failing_after_5(context):
        if len(calls) == 5:
            raise KeyboardInterrupt  # the run is killed while the sixth unit is read
        calls.append((str(context.path), context.start))
        yield from read(context)

    monkeypatch.setitem(sources.READERS, "realnews", failing_after_5)
    with pytest.raises(KeyboardInterrupt):
        build_documents("realnews", folder, tmp_path / "out", _chunked(4000))
    assert not (tmp_path / "out").exists() and len(list((tmp_path / "out.work").glob("unit-*.json"))) == 5

    def counting(context):
        calls.append((str(context.path), context.start))
        yield from read(context)

    monkeypatch.setitem(sources.READERS, "realnews", counting)
    stats = build_documents("realnews", folder, tmp_path / "out", _chunked(4000))
    assert part_bytes(tmp_path / "out") == part_bytes(tmp_path / "clean")
    assert len(calls) == stats["units"] and len(set(calls)) == len(calls)  # each range read once over both runs
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    before = len(calls)
    assert build_documents("realnews", folder, tmp_path / "out", _chunked(4000)) == stats
    assert len(calls) == before and mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}


def test_bookcorpus_without_blank_lines_gives_bounded_documents(tmp_path):
    path = tmp_path / "books_large_p1.txt"
    path.write_text("".join(f"sentence number {i} .\n" for i in range(10)), encoding="utf-8")
    build_documents("bookcorpus", path, tmp_path / "out", DocumentsSettings(max_sentences=4))
    assert [len(d) for d in read_documents(tmp_path / "out")] == [4, 4, 2]


def test_bad_input_list_is_capped_and_all_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BAD_INPUT_LIMIT", 3)
    write_news(tmp_path / "news.jsonl", 100, seed=0, bad_every=10)
    stats = build_documents("realnews", tmp_path / "news.jsonl", tmp_path / "out", KEEP_ALL)
    assert stats["bad_input_counts"] == {"invalid_json": 10} and len(stats["bad_input"]) == 3
    assert stats["documents"] == 90


def test_an_empty_file_in_a_folder_is_reported_and_the_rest_kept(tmp_path):
    folder = tmp_path / "stories"
    folder.mkdir()
    (folder / "a.txt").write_text("A story.\n", encoding="utf-8")
    (folder / "b.txt").write_bytes(b"")
    stats = build_documents("stories", folder, tmp_path / "out")
    assert read_documents(tmp_path / "out") == [["A story."]]
    assert stats["bad_input"] == [{"file": str(folder / "b.txt"), "position": "byte 0", "error": "empty file"}]


# ---- the demo dump --------------------------------------------------------------------------------------


def test_demo_wiki_is_a_mediawiki_export_and_the_committed_one_is_current(tmp_path):
    """The demo dump against the MediaWiki export format itself (parsed by the standard library's XML
    parser, not by our reader): one <mediawiki> root in the export namespace, a <siteinfo>, and pages with
    unique ids and titles, namespace 0, and one revision holding wikitext. The committed file must be what
    the generator writes, so the demo never runs on stale data."""
    import xml.etree.ElementTree as ET

    write_demo_wiki(tmp_path / "a.xml.bz2", pages=50)
    root = ET.fromstring(bz2.decompress((tmp_path / "a.xml.bz2").read_bytes()))
    namespace = re.fullmatch(r"\{(http://www\.mediawiki\.org/xml/export-0\.\d+/)\}mediawiki", root.tag)
    assert namespace, root.tag
    ns = {"mw": namespace.group(1)}
    assert root.find("mw:siteinfo", ns) is not None
    pages = root.findall("mw:page", ns)
    assert len(pages) == 50
    assert len({p.findtext("mw:id", namespaces=ns) for p in pages}) == 50
    assert len({p.findtext("mw:title", namespaces=ns) for p in pages}) == 50
    assert {p.findtext("mw:ns", namespaces=ns) for p in pages} == {"0"}
    for page in pages:
        assert page.find("mw:revision/mw:text", ns).text.strip()
    write_demo_wiki(tmp_path / "current.xml.bz2")
    assert COMMITTED_DEMO_WIKI.read_bytes() == (tmp_path / "current.xml.bz2").read_bytes(), (
        "demo/data-preprocessing/wiki is stale: rewrite it with effbert.demo.wiki.write_demo_wiki"
    )


def test_demo_wiki_gives_clean_consistent_prose(tmp_path):
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=120)
    stats = build_documents("wiki", tmp_path / "demo.xml.bz2", tmp_path / "out")
    assert stats["skipped"] == {"too_short": 120 // STUB_EVERY}  # the stubs, and only they
    assert stats["documents"] == 120 - 120 // STUB_EVERY
    documents = read_documents(tmp_path / "out")
    text = "\n".join(sentence for document in documents for sentence in document)
    assert not MARKUP.search(text)
    # a fact stated anywhere agrees with the town's own article
    river = {m[0]: m[1] for m in re.findall(r"^(\w+) is a town in .*\n.* lies on the river (\w+)", text, re.M)}
    born = re.findall(r"was born in \d+ in (\w+), a town on the river (\w+)\.", text)
    assert river and born
    assert all(river[town] == r for town, r in born if town in river)


# ---- conformance on real-format samples -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "pages"), [("testcorpus.xml.bz2", 9), ("enwiki-table-markup.xml.bz2", 5)])
def test_real_dumps(shared_fixtures, tmp_path, name, pages):
    stats = build_documents("wiki", shared_fixtures / "wikipedia" / name, tmp_path / "out", KEEP_ALL)
    documents = read_documents(tmp_path / "out")
    assert stats["documents"] == len(documents) == pages
    assert all(documents) and all(sentence.strip() for document in documents for sentence in document)
    text = "\n".join(sentence for document in documents for sentence in document)
    assert not MARKUP.search(text) and "{|" not in text and "|-" not in text and "<" not in text


def test_real_realnews(shared_fixtures, tmp_path):
    stats = build_documents("realnews", shared_fixtures / "realnews" / "realnews_tiny.jsonl", tmp_path / "out",
                            KEEP_ALL)
    assert stats["documents"] == len(read_documents(tmp_path / "out")) == 5
    assert build_documents("realnews", shared_fixtures / "realnews" / "realnews_tiny.jsonl",
                           tmp_path / "out")["skipped"] == {"too_short": 5}  # all under 1000 words


# ---- Wikimedia's dump file names ----

DUMP = "enwiki-20990101-pages-articles-multistream"


def _wikimedia_parts(folder: Path) -> list[Path]:
    """Three numbered parts (page ranges 1-8, 9-16, 73-80: part 10 must come after part 2, not after part 1),
    each a whole MediaWiki export, plus the multistream index and a checksum file, as Wikimedia names them."""
    folder.mkdir(parents=True)
    parts = []
    for number, (first, last) in ((10, (73, 80)), (1, (1, 8)), (2, (9, 16))):
        part = folder / f"{DUMP}{number}.xml-p{first}p{last}.bz2"
        write_demo_wiki(part, pages=8, seed=number)
        parts.append(part)
    (folder / f"{DUMP}-index1.txt-p1p8.bz2").write_bytes(bz2.compress(b"600:1:Anarchism\n"))
    (folder / "enwiki-20990101-md5sums.txt").write_text("0123 x\n")
    return sorted(parts, key=lambda p: int(re.search(r"-p(\d+)p", p.name).group(1)))


def test_wikimedia_numbered_parts_are_read_in_page_order_and_the_index_is_passed_over(tmp_path, capsys):
    in_page_order = _wikimedia_parts(tmp_path / "dump")
    assert sources.input_files("wiki", tmp_path / "dump") == in_page_order
    noted = capsys.readouterr().err
    assert "passed over 2 file(s)" in noted and f"{DUMP}-index1.txt-p1p8.bz2" in noted
    # the folder gives the parts' documents one part after another, in page order
    build_documents("wiki", tmp_path / "dump", tmp_path / "all", KEEP_ALL)
    one_by_one = []
    for part in in_page_order:
        build_documents("wiki", part, tmp_path / part.name, KEEP_ALL)
        one_by_one += read_documents(tmp_path / part.name)
    assert read_documents(tmp_path / "all") == one_by_one and len(one_by_one) > 20


def test_the_same_articles_twice_in_one_folder_are_refused(tmp_path):
    _wikimedia_parts(tmp_path / "dump")
    write_demo_wiki(tmp_path / "dump" / "enwiki-20990101-pages-articles1.xml-p1p8.bz2", pages=8)
    with pytest.raises(InputError, match="multistream or not"):
        sources.input_files("wiki", tmp_path / "dump")
    (tmp_path / "dump" / "enwiki-20990101-pages-articles1.xml-p1p8.bz2").unlink()
    write_demo_wiki(tmp_path / "dump" / f"{DUMP}.xml.bz2", pages=8)
    with pytest.raises(InputError, match="both the whole file and numbered parts"):
        sources.input_files("wiki", tmp_path / "dump")


def _multistream(path: Path, pages: bytes, per_stream: int, drop: int | None = None) -> list[int]:
    """A multistream dump as Wikimedia writes one: the header in a stream of its own, `per_stream` pages a
    stream, then the footer; stream `drop` (counting the page streams from 0) left out. The page streams'
    compressed offsets."""
    text = bz2.decompress(pages)
    first, last = text.index(b"<page>"), text.rindex(b"</page>") + len(b"</page>\n")
    starts = [m.start() for m in re.finditer(rb"<page>", text)] + [last]
    cuts = starts[:-1:per_stream] + [last]
    groups = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    streams = [text[:first]] + [g for i, g in enumerate(groups) if i != drop] + [text[last:]]
    offsets, data = [], b""
    for stream in streams:
        offsets.append(len(data))
        data += bz2.compress(stream, 9)
    path.write_bytes(data)
    return offsets[1:-1]


def test_a_corrupt_stream_of_a_multistream_dump_loses_only_its_own_pages(tmp_path):
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=60)
    pages = (tmp_path / "demo.xml.bz2").read_bytes()
    (tmp_path / "intact").mkdir()
    _multistream(tmp_path / "intact" / "enwiki-20990101-pages-articles-multistream.xml.bz2", pages, 10, drop=2)
    build_documents("wiki", tmp_path / "intact", tmp_path / "expected", KEEP_ALL)
    (tmp_path / "damaged").mkdir()
    dump = tmp_path / "damaged" / "enwiki-20990101-pages-articles-multistream.xml.bz2"
    offsets = _multistream(dump, pages, 10)
    data = bytearray(dump.read_bytes())
    middle = (offsets[2] + offsets[3]) // 2  # 20 bytes in the middle of the third page stream
    data[middle : middle + 20] = bytes(20)
    dump.write_bytes(bytes(data))
    stats = build_documents("wiki", tmp_path / "damaged", tmp_path / "got", KEEP_ALL)
    assert read_documents(tmp_path / "got") == read_documents(tmp_path / "expected")  # every page of the others
    assert stats["compressed_streams"] == {"read": 7, "damaged": 1, "pages_lost_estimate": 10}
    assert stats["bad_input_counts"]["corrupt_stream"] == 1


def test_a_cut_in_a_later_span_of_a_multistream_dump_names_the_compressed_byte_alone(tmp_path):
    """A span after the first counts its lines from a stream deep in the file: the message gives the compressed
    byte, and no decompressed line that no line of the file would be."""
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=30)
    dump = tmp_path / "enwiki-20990101-pages-articles-multistream.xml.bz2"
    offsets = _multistream(dump, (tmp_path / "demo.xml.bz2").read_bytes(), 10)
    dump.write_bytes(dump.read_bytes()[: (offsets[1] + offsets[2]) // 2])  # the second page stream cut
    reported = []
    pages = b"".join(checked_pages(dump, lambda *a, **k: reported.append(a[1]), span=(offsets[1], offsets[2])))
    assert pages.count(b"<page>") == 0
    [error] = reported
    assert f"before compressed byte {dump.stat().st_size}; the pages before it are kept" in error
    assert "decompressed line" not in error


def test_a_big_multistream_dump_is_cut_into_units_and_read_the_same_by_any_number_of_workers(tmp_path):
    """The documents stage cuts one big multistream .bz2 at its streams, so that one dump uses every worker;
    the documents are those of reading it whole, byte for byte, with one worker or two."""
    write_demo_wiki(tmp_path / "demo.xml.bz2", pages=120)
    dump = tmp_path / "dump" / "enwiki-20990101-pages-articles-multistream.xml.bz2"
    dump.parent.mkdir()
    _multistream(dump, (tmp_path / "demo.xml.bz2").read_bytes(), 10)
    chunk = dump.stat().st_size // 5
    units = sources.plan_units("wiki", [dump], chunk, {})
    assert len(units) >= 4 and all(len(u.ranges) == 1 for u in units)
    build_documents("wiki", dump, tmp_path / "whole", KEEP_ALL)  # one unit: the default chunk is 64 MB
    for processes in (1, 2):
        build_documents("wiki", dump, tmp_path / f"cut-{processes}", _chunked(chunk), processes=processes)
        assert [p.read_bytes() for p in sorted((tmp_path / f"cut-{processes}").glob("part-*.txt"))] == [
            p.read_bytes() for p in sorted((tmp_path / "whole").glob("part-*.txt"))]


def test_the_splitter_splits_the_hand_checked_paragraphs_as_by_hand():
    """bench/sentence_gold.txt: Wikipedia-style paragraphs split by hand (abbreviations, initials, decimals,
    quotes, brackets, units); the splitter must reproduce every boundary."""
    from effbert.bench.sentences import gold

    for sentences in gold():
        assert split_sentences(" ".join(sentences)) == sentences


def test_a_damaged_part_is_counted_and_the_other_parts_kept(tmp_path):
    in_page_order = _wikimedia_parts(tmp_path / "dump")
    damaged = in_page_order[1]
    intact = [p for p in in_page_order if p != damaged]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # cut in the middle
    stats = build_documents("wiki", tmp_path / "dump", tmp_path / "all", KEEP_ALL)
    assert stats["bad_input_counts"] == {"truncated": 1}
    got = read_documents(tmp_path / "all")
    for part in intact:  # every document of the intact parts is there
        build_documents("wiki", part, tmp_path / part.name, KEEP_ALL)
        assert all(document in got for document in read_documents(tmp_path / part.name))


def test_the_benchmarks_dump_is_a_wikimedia_multistream_file(tmp_path):
    """bench/wiki_dump.py's generated dump: the header alone in the first stream, then 100 whole pages a
    stream (as Wikimedia's multistream files), unique titles and ids; and the documents stage reads it."""
    from effbert.bench.wiki_dump import write_dump

    dump = tmp_path / "enwiki-20990101-pages-articles-multistream.xml.bz2"
    xml_bytes = write_dump(dump, 1)
    data, streams = dump.read_bytes(), []
    while data:
        decompressor = bz2.BZ2Decompressor()
        streams.append(decompressor.decompress(data))
        data = decompressor.unused_data
    assert sum(map(len, streams)) == xml_bytes >= 1 << 20
    pages = [s.count(b"<page>") for s in streams]
    assert pages[0] == 0 and all(p == 100 for p in pages[1:-1]) and 0 < pages[-1] <= 100
    assert all(s.count(b"<page>") == s.count(b"</page>") for s in streams)
    text = b"".join(streams)
    titles = re.findall(rb"<title>(.*?)</title>", text)
    assert len(set(titles)) == len(titles) == sum(pages)
    assert build_documents("wiki", dump, tmp_path / "out")["documents"] > 0.9 * len(titles)
