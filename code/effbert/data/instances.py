"""Pretraining instances: a document's sentences -> fixed-length MLM + sentence-order-prediction rows.

ALBERT's recipe: pack a document's sentences up to a target length, cut the packed chunk at a sentence
boundary into segments A and B, swap them half of the time (the SOP label), and mask 15% of the tokens
(80% [MASK], 10% a random token, 10% unchanged). Every row is

    CLS A SEP B SEP pad ...      token_type_ids 0 for CLS A SEP, 1 for B SEP, 0 over padding

with the tokenizer's own CLS/SEP/PAD ids (so <s> A </s> B </s> for RoBERTa's specials).
"""

from __future__ import annotations

import itertools
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
        """Pack the document's tokenised sentences into chunks near a target length, one instance each.
        The sentences are held as one flat array and their ends, so a chunk, its halves and their truncation
        are slices, never a Python loop over tokens; the draws are the same, in the same order, as packing
        lists of tokens would make."""
        lengths = [len(s) for s in segments if s]
        ids = np.fromiter(itertools.chain.from_iterable(segments), dtype=np.int32, count=sum(lengths))
        ends = list(itertools.accumulate(lengths, initial=0))  # sentence i is ids[ends[i]:ends[i + 1]]
        target = self._target_length(rng)
        first, length = 0, 0  # the chunk: sentences first..i
        for i, n in enumerate(lengths):
            length += n
            if i == len(lengths) - 1 or length >= target:
                pair = self._split(ids, ends[first : i + 2], rng)
                if pair is not None:
                    yield self._instance(*pair, rng)
                first, length = i + 1, 0
                target = self._target_length(rng)

    @staticmethod
    def _split(ids: np.ndarray, ends: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """A and B: the chunk (the sentences that end at ends[1:]) cut at a random sentence boundary; a
        one-sentence chunk is cut in the middle of its tokens (so single-sentence documents still teach MLM
        and SOP); None below two tokens."""
        if len(ends) >= 3:
            cut = ends[int(rng.integers(1, len(ends) - 1))]
            return ids[ends[0] : cut], ids[cut : ends[-1]]
        if ends[1] - ends[0] < 2:
            return None
        middle = ends[0] + (ends[1] - ends[0]) // 2
        return ids[ends[0] : middle], ids[middle : ends[1]]

    def _instance(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> Instance:
        swapped = bool(rng.random() < 0.5)
        if swapped:
            a, b = b, a
        a, b = self._truncate(a, b, rng)
        s = self.specials
        tokens = np.empty(len(a) + len(b) + 3, dtype=np.int32)  # CLS A SEP B SEP
        tokens[0], tokens[len(a) + 1], tokens[-1] = s.cls, s.sep, s.sep
        tokens[1 : len(a) + 1], tokens[len(a) + 2 : -1] = a, b
        masked, labels = self.mask(tokens, rng)
        return Instance(masked, labels, len(a) + 2, swapped)

    def _truncate(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Drop tokens from the longer segment (B on a tie), one at a time, at its front or back by a coin
        each (ALBERT's truncate_seq_pair), until the pair fits, so neither segment always loses the same end.
        Which segment loses each token follows from the lengths alone: the longer one until they are even,
        then B, A, B, ... in turn; so the coins are counted per segment at once."""
        excess = len(a) + len(b) - self.max_tokens
        if excess <= 0:
            return a, b
        coins = rng.random(excess)
        gap = abs(len(a) - len(b))
        from_a = np.arange(excess) % 2 == 1  # after the gap: B, A, B, ...
        from_a = np.concatenate([np.full(min(gap, excess), len(a) > len(b)), from_a[: max(0, excess - gap)]])
        front = coins < 0.5
        a_front, b_front = int((front & from_a).sum()), int((front & ~from_a).sum())
        a_back, b_back = int(from_a.sum()) - a_front, excess - int(from_a.sum()) - b_front
        return a[a_front : len(a) - a_back], b[b_front : len(b) - b_back]

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
        # rng.choice over indices and integers over random_ids draw exactly what rng.choice over the arrays
        # themselves would, without its per-call checks of the array (a third of this function's time)
        chosen = np.sort(candidates[rng.choice(len(candidates), size=count, replace=False)])
        labels[chosen] = tokens[chosen]
        fate = rng.random(count)
        masked[chosen[fate < 0.8]] = self.specials.mask
        replaced = chosen[(fate >= 0.8) & (fate < 0.9)]
        masked[replaced] = self.random_ids[rng.integers(0, len(self.random_ids), size=len(replaced))]
        return masked, labels  # the remaining 10% keep their token but are still predicted
