"""A small regex sentence splitter: end punctuation, then space and an upper-case letter, digit or opening
quote; common abbreviations and initials do not end a sentence."""

from __future__ import annotations

import re
from collections.abc import Iterable

Document = list[str]  # its sentences, in order

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc fig no nos vol ch pp approx ca inc ltd co corp mt ft gen col lt sgt "
    "capt cpt rev hon gov sen rep jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# end punctuation (+ closing quotes/brackets), whitespace, then what may open a sentence
_BOUNDARY = re.compile(r"""([.!?]+["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])""")
_SPACES = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split one paragraph into sentences."""
    text = _SPACES.sub(" ", text).strip()
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        words = text[start : m.start(1) + 1].split()
        if not words or _is_abbreviation(words[-1]):
            continue
        sentences.append(text[start : m.end(1)])
        start = m.end()
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _is_abbreviation(token: str) -> bool:
    """'Dr.', 'U.S.', 'e.g.' or an initial 'J.': a full stop that does not end the sentence."""
    if not token.endswith("."):
        return False
    core = token.rstrip(".").lstrip("\"'(\u201c\u2018[").lower()
    return core in _ABBREVIATIONS or (len(core) == 1 and core.isalpha()) or "." in core


def paragraphs_to_sentences(paragraphs: Iterable[str]) -> Document:
    return [sentence for paragraph in paragraphs if paragraph.strip() for sentence in split_sentences(paragraph)]
