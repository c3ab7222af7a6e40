"""Pretraining instances: a document's sentences -> fixed-length MLM + sentence-order-prediction rows.

ALBERT's recipe: pack a document's sentences up to a target length, cut the packed chunk at a sentence
boundary into segments A and B, swap them half of the time (the SOP label), and mask 15% of the tokens
(80% [MASK], 10% a random token, 10% unchanged). Every row is

    CLS A SEP B SEP pad ...      token_type_ids 0 for CLS A SEP, 1 for B SEP, 0 over padding

with the tokenizer's own CLS/SEP/PAD ids (so <s> A </s> B </s> for RoBERTa's specials).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from effbert.constants import IGNORE
from effbert.data.tokenizer import SpecialTokens


@dataclass
class Instance:
    """One row before padding: `tokens` already masked, `labels` IGNORE where nothing is predicted."""

    tokens: np.ndarray
    labels: np.ndarray
    a_length: int  # CLS + A + SEP carry token type 0
    swapped: bool


@dataclass
class InstanceMaker:
    max_seq_len: int
    specials: SpecialTokens
    vocab_size: int
    masked_lm_prob: float = 0.15
    max_predictions: int = 20
    short_seq_prob: float = 0.1
    random_ids: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Replacement tokens come from the ordinary vocabulary only.
        self.random_ids = np.setdiff1d(np.arange(self.vocab_size), sorted(self.specials.ids()))
        self.max_tokens = self.max_seq_len - 3  # room for CLS, SEP, SEP

    def _target_length(self, rng: np.random.Generator) -> int:
        # Mostly full rows; sometimes a shorter one so the model also sees short inputs (as in BERT/ALBERT).
        if rng.random() < self.short_seq_prob:
            return int(rng.integers(2, self.max_tokens + 1))
        return self.max_tokens

    def from_document(self, segments: list[list[int]], rng: np.random.Generator) -> Iterator[Instance]:
        """Pack the document's tokenised sentences into chunks near a target length, one instance each."""
        segments = [s for s in segments if s]
        target = self._target_length(rng)
        chunk: list[list[int]] = []
        length = 0
        for i, segment in enumerate(segments):
            chunk.append(segment)
            length += len(segment)
            if i == len(segments) - 1 or length >= target:
                pair = self._split(chunk, rng)
                if pair is not None:
                    yield self._instance(*pair, rng)
                chunk, length = [], 0
                target = self._target_length(rng)

    @staticmethod
    def _split(chunk: list[list[int]], rng: np.random.Generator) -> tuple[list[int], list[int]] | None:
        """A and B: the chunk cut at a random sentence boundary; a one-sentence chunk is cut in the middle
        of its tokens (so single-sentence documents still teach MLM and SOP); None below two tokens."""
        if len(chunk) >= 2:
            a_end = int(rng.integers(1, len(chunk)))
            return [t for s in chunk[:a_end] for t in s], [t for s in chunk[a_end:] for t in s]
        tokens = chunk[0]
        if len(tokens) < 2:
            return None
        middle = len(tokens) // 2
        return tokens[:middle], tokens[middle:]

    def _instance(self, a: list[int], b: list[int], rng: np.random.Generator) -> Instance:
        swapped = bool(rng.random() < 0.5)
        if swapped:
            a, b = b, a
        a, b = self._truncate(a, b, rng)
        s = self.specials
        tokens = np.array([s.cls, *a, s.sep, *b, s.sep], dtype=np.int32)
        masked, labels = self.mask(tokens, rng)
        return Instance(masked, labels, len(a) + 2, swapped)

    def _truncate(self, a: list[int], b: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """Drop tokens from the longer segment, at its front or back at random, until the pair fits
        (ALBERT's truncate_seq_pair), so neither segment always loses the same end."""
        excess = len(a) + len(b) - self.max_tokens
        if excess <= 0:
            return a, b
        bounds = [[0, len(a)], [0, len(b)]]
        for coin in rng.random(excess):
            longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
            if coin < 0.5:
                longer[0] += 1
            else:
                longer[1] -= 1
        return a[bounds[0][0] : bounds[0][1]], b[bounds[1][0] : bounds[1][1]]

    def mask(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """BERT's masking of one row, CLS A SEP B SEP unpadded: masked_lm_prob of its ordinary tokens (at most
        max_predictions) are predicted; 80% of them become [MASK], 10% a random ordinary token, 10% stay.
        The one rule for the shards' static masks and the loader's dynamic ones (dynamic_masking.py)."""
        # Segments hold no CLS/SEP/PAD/MASK (see _encode), so the ordinary tokens are all but [UNK] and
        # the three placed at the start and at the ends of A and B.
        ordinary = (tokens != self.specials.unk) & (tokens != self.specials.sep)
        ordinary[0] = False
        candidates = np.flatnonzero(ordinary)
        labels = np.full(len(tokens), IGNORE, dtype=np.int32)
        masked = tokens.copy()
        if len(candidates) == 0:
            return masked, labels
        count = min(self.max_predictions, max(1, round(len(candidates) * self.masked_lm_prob)))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        labels[chosen] = tokens[chosen]
        fate = rng.random(count)
        masked[chosen[fate < 0.8]] = self.specials.mask
        replaced = chosen[(fate >= 0.8) & (fate < 0.9)]
        masked[replaced] = rng.choice(self.random_ids, size=len(replaced))
        return masked, labels  # the remaining 10% keep their token but are still predicted
