"""Token ids of every sentence of a batch of documents, a run of a document's sentences encoded as one string.

The shards need each sentence's tokens apart (instances break at sentence boundaries), but one encoding per
sentence is mostly per-encoding overhead in the tokenizer: about 1.4-1.8x the time of encoding the same text
in runs of sentences joined by a space (docs/benchmarks.md). Joining gives the very same ids where the
tokenizer cannot see across a space: a pre-tokenizer that splits at white space and never lets a piece run
over it (BERT's; byte-level BPE with its prefix space, whose pieces take at most the one space before them,
as the sentence encoded alone gets from add_prefix_space) and a normaliser that works character by character.
Any other tokenizer, and any sentence that could behave otherwise (white space at its ends, a special token's
text in it), is encoded alone. Each sentence's first token is found from its first character's offset.
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


def special_texts(tok: Tokenizer) -> tuple[str, ...]:
    """The added tokens' texts: a sentence holding one is encoded alone (an added token may take the spaces
    beside it, lstrip/rstrip, which joining would change)."""
    return tuple(t.content for t in tok.get_added_tokens_decoder().values())


def encode_sentences(tok: Tokenizer, documents: list[list[str]], join: bool,
                     specials: tuple[str, ...] = ()) -> list[list[list[int]]]:
    """Each document's sentences' token ids (no special tokens added). `join`: joinable(tok)."""
    if not join:
        flat = [s for doc in documents for s in doc]
        ids = iter(e.ids for e in tok.encode_batch(flat, add_special_tokens=False))
        return [[next(ids) for _ in doc] for doc in documents]
    runs = [doc[i : i + JOIN_SENTENCES] for doc in documents for i in range(0, len(doc), JOIN_SENTENCES)]
    joined = [run if all(_plain(s, specials) for s in run) else None for run in runs]
    encodings = iter(tok.encode_batch([" ".join(r) for r in joined if r is not None], add_special_tokens=False))
    sentences: list[list[int] | None] = []
    for run, ok in zip(runs, joined, strict=True):
        sentences += _split(next(encodings), run) if ok is not None else [None] * len(run)
    alone = [s for s, ids in zip((s for run in runs for s in run), sentences, strict=True) if ids is None]
    lone = iter(e.ids for e in tok.encode_batch(alone, add_special_tokens=False))
    flat = iter([ids if ids is not None else next(lone) for ids in sentences])
    return [[next(flat) for _ in doc] for doc in documents]


def _plain(sentence: str, specials: tuple[str, ...]) -> bool:
    return bool(sentence) and sentence == sentence.strip() and not any(s in sentence for s in specials)


def _split(encoding, run: list[str]) -> list[list[int] | None]:
    """The run's encoding cut into its sentences, each from the token that holds the joining space before it
    (byte-level BPE: the space it gets as its prefix, alone or merged) or else its first character (BERT drops
    the space); all None (encode them alone) where a first character belongs to no token (a normaliser
    dropped it)."""
    starts, position = [], 0
    for sentence in run:
        space = encoding.char_to_token(position - 1) if position else None
        starts.append(space if space is not None else encoding.char_to_token(position))
        position += len(sentence) + 1
    if None in starts:
        return [None] * len(run)
    ids = encoding.ids
    bounds = [*starts, len(ids)]
    return [ids[bounds[i] : bounds[i + 1]] for i in range(len(run))]
