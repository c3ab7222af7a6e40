"""A small regex sentence splitter: end punctuation, then space and an upper-case letter, digit or opening
quote; common abbreviations and initials do not end a sentence, nor does the number opening a list item."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

Document = list[str]  # its sentences, in order

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc fig no nos vol ch pp par para approx ca inc ltd co corp mt ft gen col lt "
    "sgt capt cpt rev hon gov sen rep jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_DOTTED = re.compile(r"[a-z]{1,3}(?:\.[a-z]{1,3})+")  # U.S, e.g, Ph.D: letters between the dots (not 0.1%)
_ITEM_NUMBER = re.compile(r"\d{1,3}\.")  # "2." opening a numbered item: "... of its Members. 2. The motion ..."
# end punctuation (+ closing quotes/brackets), whitespace, then what may open a sentence
_BOUNDARY = re.compile(r"""([.!?]+["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
    """Split one paragraph into sentences."""
    text = " ".join(text.split())  # runs of white space as one space: str.split's white space is re's \s
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.start(1) + 1  # the word before the boundary ends with its first mark, after a space or at start
        space = text.rfind(" ", start, end)
        word = text[max(start, space + 1) : end]
        if _is_abbreviation(word) or (space < 0 and _ITEM_NUMBER.fullmatch(word)):  # alone: an item's number
            continue
        sentences.append(text[start : m.end(1)])
        start = m.end()
    if start < len(text):
        sentences.append(text[start:])
    return sentences


@functools.lru_cache(maxsize=1 << 16)  # words recur; bounded, so memory stays flat on any corpus
def _is_abbreviation(token: str) -> bool:
    """'Dr.', 'U.S.', 'e.g.' or an initial 'J.': a full stop that does not end the sentence."""
    if not token.endswith("."):
        return False
    core = token.rstrip(".").lstrip("\"'(\u201c\u2018[").lower()
    return core in _ABBREVIATIONS or (len(core) == 1 and core.isalpha()) or _DOTTED.fullmatch(core) is not None


def paragraphs_to_sentences(paragraphs: Iterable[str]) -> Document:
    return [sentence for paragraph in paragraphs if paragraph.strip() for sentence in split_sentences(paragraph)]
