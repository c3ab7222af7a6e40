"""Sentence splitters side by side: our regex splitter (effbert.data.sentences) against blingfire and syntok.

Agreement: exact sentence boundaries on sentence_gold.txt, 31 Wikipedia-style paragraphs written and split by
hand for the cases that trouble splitters (abbreviations, initials, decimals, quotes, brackets, units).
Speed: sentences per second on the text of a Wikipedia dump (../shared/fixtures' real export when this
checkout has it, else the demo's generated one), each splitter on the same paragraphs in this process.

    python -m effbert.bench.sentences [--dump FILE.xml.bz2]       (pip install blingfire syntok)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from effbert.data.sentences import split_sentences

GOLD = Path(__file__).with_name("sentence_gold.txt")
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
    a = parser.parse_args()
    paragraphs = dump_paragraphs(a.dump)
    print(f"gold: {GOLD.name}; speed: {a.dump.name}, {len(paragraphs)} paragraphs")
    print("| splitter | paragraphs exact | sentences right | sentences/s | speed vs effbert |")
    print("|---|---|---|---|---|")
    base = None
    for name, split in splitters().items():
        exact, hits, total = agreement(split)
        rate = speed(split, paragraphs)
        base = base or rate
        print(f"| {name} | {exact}/{len(gold())} | {hits}/{total} | {rate:,.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
