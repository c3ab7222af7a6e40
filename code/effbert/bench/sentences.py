"""Sentence splitters side by side: our regex splitter (effbert.data.sentences) against blingfire and syntok.

Agreement: exact sentence boundaries on sentence_gold.txt, 31 Wikipedia-style paragraphs written and split by
hand for the cases that trouble splitters (abbreviations, initials, decimals, quotes, brackets, units); and,
where this checkout has ../shared/fixtures, boundary precision and recall on real text: five enwiki articles
and five RealNews records, about 750 boundaries checked by hand (sentence_gold_fixtures.json holds their
offsets and the texts' hashes, not the texts).
Speed: sentences per second on the text of a Wikipedia dump (../shared/fixtures' real export when this
checkout has it, else the demo's generated one), each splitter on the same paragraphs in this process.

    python -m effbert.bench.sentences [--dump FILE.xml.bz2]       (pip install blingfire syntok)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from effbert.data.sentences import split_sentences

GOLD = Path(__file__).with_name("sentence_gold.txt")
FIXTURE_GOLD = Path(__file__).with_name("sentence_gold_fixtures.json")
Splitter = Callable[[str], list[str]]


def splitters() -> dict[str, Splitter]:
    found: dict[str, Splitter] = {"effbert": split_sentences}
    try:
        import blingfire

        found["blingfire"] = lambda text: [s for s in blingfire.text_to_sentences(text).split("\n") if s]
    except ImportError:
        pass
    try:
        import syntok.segmenter as segmenter

        found["syntok"] = lambda text: ["".join(t.spacing + t.value for t in s).strip()
                                        for p in segmenter.process(text) for s in p]
    except ImportError:
        pass
    return found


def gold() -> list[list[str]]:
    """Paragraphs as their hand-split sentences."""
    return [block.split("\n") for block in GOLD.read_text(encoding="utf-8").strip().split("\n\n")]


def agreement(split: Splitter) -> tuple[int, int, int]:
    """(paragraphs split exactly as by hand, sentences found that are in the gold, gold sentences)."""
    exact = hits = total = 0
    for sentences in gold():
        found = split(" ".join(sentences))
        exact += found == sentences
        hits += len(set(found) & set(sentences))
        total += len(sentences)
    return exact, hits, total


def fixture_sample(fixtures: Path) -> list[tuple[str, set[int]]]:
    """The fixtures' texts (whitespace runs as one space) with their hand-checked boundaries (non-space characters
    before each sentence but the first). A ValueError when a text's hash differs from the gold's."""
    gold = _fixture_gold()
    texts: dict[tuple[str, str], str] = {}
    for file in sorted({entry["file"] for entry in gold}):
        path = fixtures / file
        if file.endswith(".jsonl"):
            for r, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                paragraphs = [p for p in json.loads(line)["text"].split("\n") if p.strip()]
                texts.update({(file, f"{r}.{j}"): p for j, p in enumerate(paragraphs)})
        else:
            texts.update({(file, str(i)): p for i, p in enumerate(dump_paragraphs(path))})
    sample = []
    for entry in gold:
        text = re.sub(r"\s+", " ", texts[entry["file"], str(entry["text"])]).strip()
        if hashlib.sha256(text.encode()).hexdigest() != entry["sha256"]:
            raise ValueError(f"{entry['file']} text {entry['text']}: not the text the gold was checked on")
        sample.append((text, set(entry["boundaries"])))
    return sample


def fixture_files() -> list[str]:
    """The fixture files the real-text gold was checked on, relative to ../shared/fixtures."""
    return sorted({entry["file"] for entry in _fixture_gold()})


def _fixture_gold() -> list[dict]:
    return json.loads(FIXTURE_GOLD.read_text(encoding="utf-8"))["texts"]


def boundaries(sentences: list[str]) -> set[int]:
    """Where each sentence after the first starts, in non-space characters: independent of spacing."""
    found, count = set(), 0
    for sentence in sentences[:-1]:
        count += sum(not c.isspace() for c in sentence)
        found.add(count)
    return found


def boundary_scores(split: Splitter, sample: list[tuple[str, set[int]]]) -> tuple[int, float, float]:
    """(texts split exactly as by hand, boundary precision, boundary recall) on the fixture sample."""
    exact = right = found = gold = 0
    for text, truth in sample:
        got = boundaries(split(text))
        exact += got == truth
        right, found, gold = right + len(got & truth), found + len(got), gold + len(truth)
    return exact, right / max(found, 1), right / max(gold, 1)


def dump_paragraphs(dump: Path) -> list[str]:
    from effbert.data.wikidump import read_wiki

    # the documents' sentences joined back into paragraphs: what the splitter sees, near enough
    documents = list(read_wiki(dump, lambda *a, **k: None))
    return [" ".join(document) for document in documents]


def speed(split: Splitter, paragraphs: list[str], seconds: float = 2.0) -> float:
    """Sentences per second over the paragraphs, repeated for about `seconds`."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for paragraph in paragraphs:
            count += len(split(paragraph))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fixture = Path(__file__).resolve().parents[4] / "shared/fixtures/wikipedia/enwiki-table-markup.xml.bz2"
    demo = Path(__file__).resolve().parents[3] / "demo/data-preprocessing/wiki/demowiki-pages-articles.xml.bz2"
    parser.add_argument("--dump", type=Path, default=fixture if fixture.is_file() else demo)
    parser.add_argument("--fixtures", type=Path, default=fixture.parents[1],
                        help="../shared/fixtures: real text with hand-checked boundaries (skipped when absent)")
    a = parser.parse_args()
    paragraphs = dump_paragraphs(a.dump)
    sample = fixture_sample(a.fixtures) if all((a.fixtures / f).is_file() for f in fixture_files()) else []
    print(f"gold: {GOLD.name}; real text: {len(sample)} texts of {a.fixtures}; speed: {a.dump.name}, "
          f"{len(paragraphs)} paragraphs")
    print("| splitter | paragraphs exact | sentences right | real texts exact | precision | recall | sentences/s "
          "| speed vs effbert |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name, split in splitters().items():
        exact, hits, total = agreement(split)
        real = boundary_scores(split, sample) if sample else (0, float("nan"), float("nan"))
        rate = speed(split, paragraphs)
        base = base or rate
        print(f"| {name} | {exact}/{len(gold())} | {hits}/{total} | {real[0]}/{len(sample)} | {real[1]:.3f} "
              f"| {real[2]:.3f} | {rate:,.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
