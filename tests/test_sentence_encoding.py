"""Runs of sentences encoded as one string give each sentence exactly the ids it gets encoded alone (the
definition of a sentence's tokens), for every tokenizer the shards take, on text chosen to meet the pre-
tokenizers' edge cases; a tokenizer that could see across the joining space is not joined."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from effbert.data.documents_format import iter_documents
from effbert.data.sentence_encoding import JOIN_SENTENCES, SentenceEncoder, joinable
from effbert.data.sources import build_documents
from effbert.data.tokenizer import import_tokenizer, load_tokenizer, train_tokenizer
from effbert.pipeline_config import DocumentsSettings
from helpers import minilm_model_dir

TRICKY = [
    "'s a contraction that opens a sentence.",
    "'ll do, 're fine, 've seen, 'm here, 'd go.",
    "1990 was a year; 2,000.5 is a number.",
    "— a dash first, then words.",
    "Naïve café résumé, ÉCOLE Ångström.",
    "東京は日本の首都です。",
    "Mixed 東京 and Kyoto.",
    "An emoji 😀 and a flag 🇳🇴 here.",
    "Two  spaces  inside and a\ttab.",
    "word\x00with a control character",
    "\x01starts with a control character",
    "\u0301a combining accent first",
    "İstanbul ﬁnds ß.",
    "x" * 150 + " a very long word.",
    "...",
    "?!",
    "Ends without a full stop",
]
ALONE = [" a leading space", "a trailing space ", "", "A literal [CLS] and [SEP] and <mask> in the text.",
         "<s> opens and </s> closes"]  # sentences encoded alone, and the rest of their run with them


def _documents(seed: int) -> list[list[str]]:
    """Documents of TRICKY and random sentences, some longer than JOIN_SENTENCES."""
    rng = random.Random(seed)
    pool = "abcdefghij éüß東京😀'.,;-—0123456789 "
    documents = []
    for d in range(12):
        count = JOIN_SENTENCES * 2 + 5 if d == 3 else rng.randint(1, 20)
        sentences = []
        for _ in range(count):
            draw = rng.random()
            if draw < 0.02:
                sentences.append(rng.choice(ALONE))
            elif draw < 0.4:
                sentences.append(rng.choice(TRICKY))
            else:
                sentences.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))).strip() or "a")
        documents.append(sentences)
    return documents


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tricky")
    lines = "\n\n".join("\n".join(s for s in doc if s.strip()) for doc in _documents(1))
    (folder / "part-00000.txt").write_text(lines + "\n", encoding="utf-8")
    return folder


def _trained(text: Path, tmp: Path, kind: str, lowercase: bool) -> Tokenizer:
    train_tokenizer(kind, 400, [text], tmp / "tok", lowercase=lowercase)
    return load_tokenizer(tmp / "tok")


def _alone(tok: Tokenizer, documents: list[list[str]]) -> list[list[list[int]]]:
    return [[tok.encode(s, add_special_tokens=False).ids for s in doc] for doc in documents]


@pytest.mark.parametrize(("kind", "lowercase"), [("bpe", False), ("wordpiece", False), ("wordpiece", True)])
def test_joined_runs_give_each_sentence_its_own_ids(text, tmp_path, kind, lowercase):
    tok = _trained(text, tmp_path, kind, lowercase)
    assert joinable(tok)
    for seed in range(3):
        documents = _documents(seed)
        assert SentenceEncoder(tok).encode(documents) == _alone(tok, documents)


def test_joined_runs_with_real_bert_and_roberta_style_vocabularies(tmp_path):
    """BERT's own uncased vocabulary (the MiniLM test package), and a vocab.json/merges.txt pair imported as
    RoBERTa's files are (a small one written here)."""
    documents = _documents(7)
    folder = minilm_model_dir()
    if folder is not None:
        bert = Tokenizer.from_file(str(folder / "tokenizer.json"))
        bert.no_padding()
        bert.no_truncation()
        assert joinable(bert)
        assert SentenceEncoder(bert).encode(documents) == _alone(bert, documents)
    trained = _trained_bpe_files(tmp_path)
    import_tokenizer(trained / "vocab.json", tmp_path / "imported", merges=trained / "merges.txt")
    roberta = load_tokenizer(tmp_path / "imported")
    assert joinable(roberta)
    assert SentenceEncoder(roberta).encode(documents) == _alone(roberta, documents)


def _trained_bpe_files(tmp_path: Path) -> Path:
    """vocab.json and merges.txt of a byte-level BPE trained on the tricky text, in RoBERTa's release format."""
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "part-00000.txt").write_text("\n".join(TRICKY + ALONE[3:]) + "\n", encoding="utf-8")
    tok = _trained(folder, tmp_path, "bpe", False)
    out = tmp_path / "files"
    out.mkdir()
    tok.model.save(str(out))
    return out


@pytest.mark.parametrize("post", [None, processors.ByteLevel(trim_offsets=True),
                                  processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)])
def test_a_post_processor_that_trims_offsets_does_not_move_the_cut(post):
    """RoBERTa's tokenizer.json trims the spaces from its tokens' offsets, so a lone "Ġ" (a space the vocabulary
    does not merge with what follows) would show an empty span; the encoder leaves the post-processor out."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    tok.train_from_iterator(TRICKY, trainer)  # a small vocabulary: many a space stays a token of its own
    tok.post_processor = post
    documents = _documents(0)
    assert SentenceEncoder(tok).encode(documents) == _alone(tok, documents)


@pytest.mark.parametrize("pre", [pre_tokenizers.Whitespace(), pre_tokenizers.Metaspace(),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])  # fmt: skip
def test_a_pipeline_that_can_see_across_the_space_is_encoded_sentence_by_sentence(pre):
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "▁a": 2, "Ġa": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    assert not joinable(tok)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert not joinable(tok)


def test_joined_runs_on_real_text(shared_fixtures, tmp_path):
    """The shared fixtures' real Wikipedia pages and RealNews articles, as the documents stage writes them,
    through BERT's real vocabulary (where the test package is installed) and a byte-level BPE trained on them."""
    documents = []
    for source, path in (("wiki", shared_fixtures / "wikipedia" / "enwiki-table-markup.xml.bz2"),
                         ("realnews", shared_fixtures / "realnews" / "realnews_tiny.jsonl")):  # fmt: skip
        build_documents(source, path, tmp_path / source, DocumentsSettings(min_words=0))
        documents += list(iter_documents(tmp_path / source))
    assert sum(map(len, documents)) > 100
    train_tokenizer("bpe", 500, [tmp_path / "wiki", tmp_path / "realnews"], tmp_path / "bpe")
    tokenizers = [load_tokenizer(tmp_path / "bpe")]
    if (folder := minilm_model_dir()) is not None:
        tokenizers.append(Tokenizer.from_file(str(folder / "tokenizer.json")))
    for tok in tokenizers:
        tok.no_padding()
        tok.no_truncation()
        encoder = SentenceEncoder(tok)
        assert encoder.join and encoder.encode(documents) == _alone(tok, documents)
