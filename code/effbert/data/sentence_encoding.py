"""Token ids of every sentence of a batch of documents, a run of a document's sentences encoded as one string.

The shards need each sentence's tokens apart (instances break at sentence boundaries), but one encoding per
sentence is mostly per-encoding overhead in the tokenizer: about 1.4-1.8x the time of encoding the same text
in runs of sentences joined by a space (docs/benchmarks.md). Joining gives the very same ids where the
tokenizer cannot see across a space: a pre-tokenizer that splits at white space and never lets a piece run
over it (BERT's; byte-level BPE with its prefix space, whose pieces take at most the one space before them,
as the sentence encoded alone gets from add_prefix_space) and a normaliser that works character by character.
Any other tokenizer, and any sentence that could behave otherwise (white space at its ends, a special token's
text in it), is encoded alone. A sentence starts at the token that holds the space joining it to the one
before (byte-level BPE), else at the token of its first character (BERT drops the space).
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer

JOIN_SENTENCES = 64  # sentences per joined string: long books stay many strings, for memory and parallelism

_SAFE_NORMALIZERS = {None, "BertNormalizer"}


def joinable(tok: Tokenizer) -> bool:
    """Whether runs of sentences joined by a space encode to the sentences' own ids, by the pipeline's parts."""
    parts = json.loads(tok.to_str())
    normalizer, pre = parts.get("normalizer"), parts.get("pre_tokenizer") or {}
    if (normalizer or {}).get("type") not in _SAFE_NORMALIZERS:
        return False
    if pre.get("type") == "BertPreTokenizer":
        return True
    return pre.get("type") == "ByteLevel" and pre.get("add_prefix_space", False) and pre.get("use_regex", True)


class SentenceEncoder:
    """Token ids of each sentence of a batch of documents (no special tokens added), joined runs where
    joinable(tok). It encodes with a copy of `tok` that has no post-processor: with no special tokens added a
    post-processor changes no id, but RoBERTa's (and ByteLevel's) trims the spaces from the tokens' offsets,
    which would hide the joining space's token from the cut."""

    def __init__(self, tok: Tokenizer):
        self.join = joinable(tok)
        self.tok = Tokenizer.from_str(tok.to_str())
        self.tok.post_processor = None
        self.tok.no_padding()
        self.tok.no_truncation()
        # a sentence holding an added token's text is encoded alone (the token may take the spaces beside it,
        # lstrip/rstrip, which joining would change)
        self.specials = tuple(t.content for t in tok.get_added_tokens_decoder().values())

    def encode(self, documents: list[list[str]]) -> list[list[list[int]]]:
        if not self.join:
            return _grouped(documents, self._alone([s for doc in documents for s in doc]))
        runs = [doc[i : i + JOIN_SENTENCES] for doc in documents for i in range(0, len(doc), JOIN_SENTENCES)]
        joined = [all(_plain(s, self.specials) for s in run) for run in runs]
        encodings = iter(self.tok.encode_batch([" ".join(r) for r, ok in zip(runs, joined, strict=True) if ok],
                                               add_special_tokens=False))  # fmt: skip
        sentences: list[list[int] | None] = []
        for run, ok in zip(runs, joined, strict=True):
            sentences += _split(next(encodings), run) if ok else [None] * len(run)
        lone = iter(self._alone([s for s, ids in zip((s for run in runs for s in run), sentences, strict=True)
                                 if ids is None]))  # fmt: skip
        return _grouped(documents, [ids if ids is not None else next(lone) for ids in sentences])

    def _alone(self, sentences: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(sentences, add_special_tokens=False)]


def _grouped(documents: list[list[str]], flat: list[list[int]]) -> list[list[list[int]]]:
    """The sentences' ids, in order, grouped as `documents` group their sentences."""
    ids = iter(flat)
    return [[next(ids) for _ in doc] for doc in documents]


def _plain(sentence: str, specials: tuple[str, ...]) -> bool:
    return bool(sentence) and sentence == sentence.strip() and not any(s in sentence for s in specials)


def _split(encoding, run: list[str]) -> list[list[int] | None]:
    """The run's encoding cut into its sentences, each from the token that holds the joining space before it
    (byte-level BPE: the space it gets as its prefix, alone or merged) or else its first character (BERT drops
    the space); all None (encode them alone) where a first character belongs to no token (a normaliser
    dropped it) or the cuts would leave a token to no sentence or out of order."""
    starts, position = [], 0
    for sentence in run:
        space = encoding.char_to_token(position - 1) if position else None
        starts.append(space if space is not None else encoding.char_to_token(position))
        position += len(sentence) + 1
    if None in starts or starts[0] != 0 or starts != sorted(starts):  # every token a sentence's, in order
        return [None] * len(run)
    ids = encoding.ids
    bounds = [*starts, len(ids)]
    return [ids[bounds[i] : bounds[i + 1]] for i in range(len(run))]
