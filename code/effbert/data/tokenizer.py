"""Tokenizers: train one on the documents (byte-level BPE or WordPiece), or import a given one, and save it
as tokenizer.json + meta.json. Pretraining and fine-tuning read only tokenizer.json, so a model's vocabulary
travels as one file."""

from __future__ import annotations

import json
import shutil
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from effbert.data.documents_format import iter_sentences, part_files
from effbert.errors import InputError
from effbert.files import atomic_dir, read_json, sha256_file

Kind = Literal["bpe", "wordpiece"]

# The two conventions we recognise, in the order (pad, cls, sep, mask, unk). Training puts them first in
# the vocabulary in exactly this order of the BERT / RoBERTa releases, so ids 0.. are the specials.
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the pipeline places itself."""

    pad: int
    cls: int
    sep: int
    mask: int
    unk: int

    def ids(self) -> set[int]:
        return {self.pad, self.cls, self.sep, self.mask, self.unk}


def _new_bpe() -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.BPE())
    # add_prefix_space: every sentence is encoded on its own, so its first word gets the same tokens
    # as it would mid-text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        special_tokens=list(ROBERTA_SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def _new_wordpiece(lowercase: bool, text_dirs: list[Path]) -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.WordPiece(unk_token=BERT_SPECIALS["unk"]))
    _bert_pipeline(tok, lowercase)
    # The trainer gives "##x" pieces ids in hash-map order, which differs between processes and, through
    # tie-breaking on ids, changes the learned vocabulary. Registering every "##x" up front (sorted) fixes
    # their ids; `_rebuild_wordpiece` then drops them from the added tokens again.
    continuations = [f"##{c}" for c in _word_inner_alphabet(text_dirs, tok.normalizer)]
    trainer = trainers.WordPieceTrainer(
        special_tokens=list(BERT_SPECIALS.values()) + continuations, show_progress=False
    )
    return tok, trainer


def _word_inner_alphabet(text_dirs: list[Path], normalizer: normalizers.Normalizer) -> list[str]:
    """Sorted characters that can occur inside a word after normalisation (not space, not punctuation)."""
    raw: set[str] = set()
    for text_dir in text_dirs:
        for path in part_files(text_dir):
            with open(path, encoding="utf-8") as f:
                for block in iter(lambda: f.read(1 << 24), ""):
                    raw.update(block)
    chars = {c for r in raw for c in normalizer.normalize_str(r)}
    return sorted(c for c in chars if not c.isspace() and not _is_punctuation(c))


def _is_punctuation(c: str) -> bool:
    # BertPreTokenizer's definition: ASCII symbols and every Unicode P* category split words apart.
    return (
        33 <= ord(c) <= 47
        or 58 <= ord(c) <= 64
        or 91 <= ord(c) <= 96
        or 123 <= ord(c) <= 126
        or unicodedata.category(c).startswith("P")
    )


def _rebuild_wordpiece(trained: Tokenizer, lowercase: bool) -> Tokenizer:
    """The trained vocabulary in a fresh tokenizer whose only added tokens are the five specials."""
    vocab = dict(sorted(trained.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1]))
    tok = Tokenizer(models.WordPiece(vocab, unk_token=BERT_SPECIALS["unk"], max_input_chars_per_word=100))
    _bert_pipeline(tok, lowercase)
    tok.add_special_tokens(list(BERT_SPECIALS.values()))
    return tok


def _bert_pipeline(tok: Tokenizer, lowercase: bool) -> None:
    # strip_accents=None follows `lowercase`, as BERT's uncased models do.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")


def _add_post_processor(tok: Tokenizer) -> None:
    """`encode(a, b)` -> CLS a SEP b SEP with type ids 0 for CLS a SEP and 1 for b SEP.

    One layout for both conventions (<s> a </s> b </s> for RoBERTa's specials, not RoBERTa's
    <s> a </s></s> b </s> without type ids), because it is the layout the shards pretrain on: fine-tuning
    then sees pairs exactly as pretraining did.
    """
    ids = special_tokens(tok)
    cls, sep = tok.id_to_token(ids.cls), tok.id_to_token(ids.sep)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, ids.cls), (sep, ids.sep)],
    )


def train_tokenizer(
    kind: Kind, vocab_size: int, text_dirs: list[Path], out_dir: Path, *, lowercase: bool = False
) -> Path:
    """Train a tokenizer on the sentences of `text_dirs` and save it in `out_dir`; returns tokenizer.json.

    "bpe": byte-level BPE with RoBERTa's specials (never an unknown token; case kept).
    "wordpiece": BERT's normaliser and pre-tokeniser, [PAD] [UNK] [CLS] [SEP] [MASK]; `lowercase` for uncased.
    Training is deterministic: the same sentences give the same tokenizer.json bytes.
    """
    text_dirs = [Path(d) for d in text_dirs]
    if kind not in ("bpe", "wordpiece"):
        raise InputError(f"tokenizer: kind {kind!r} is not one of 'bpe', 'wordpiece'")
    if kind == "bpe" and lowercase:
        raise InputError("tokenizer: lowercase is only supported for kind 'wordpiece'")
    smallest = 256 + len(ROBERTA_SPECIALS) if kind == "bpe" else len(BERT_SPECIALS) + 1
    if vocab_size <= smallest:
        raise InputError(f"tokenizer: vocab_size {vocab_size} is too small for {kind} (need > {smallest})")
    for d in text_dirs:
        if next(iter_sentences([d]), None) is None:
            raise InputError(f"{d}: no sentences in its part-*.txt files")
    tok, trainer = _new_bpe() if kind == "bpe" else _new_wordpiece(lowercase, text_dirs)
    trainer.vocab_size = vocab_size
    tok.train_from_iterator(iter_sentences(text_dirs), trainer=trainer)
    if kind == "wordpiece":
        tok = _rebuild_wordpiece(tok, lowercase)
    _add_post_processor(tok)
    return _save(tok, out_dir, kind, {"lowercase": lowercase, "trained_on": [str(d) for d in text_dirs]})


def import_tokenizer(path: Path, out_dir: Path, *, lowercase: bool | None = None, merges: Path | None = None) -> Path:
    """Save a given tokenizer in `out_dir`: a tokenizer.json (e.g. RoBERTa's or BERT's release), a BERT
    vocab.txt turned into a WordPiece tokenizer, or a RoBERTa/GPT-2 vocab.json + merges.txt pair turned into
    a byte-level BPE (`merges` defaults to merges.txt beside vocab.json).

    For vocab.txt, `lowercase=None` guesses it from the vocabulary: uncased when no ordinary token has
    a letter that lowercasing changes (BERT's uncased vocabularies have none; cased ones have thousands).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    if path.suffix == ".json" and _json_kind(path) == "vocab":
        return _import_bpe_pair(path, Path(merges) if merges else path.parent / "merges.txt", out_dir)
    if path.suffix == ".json":
        tok = load_tokenizer(path)
        # Releases often pad and truncate to a fixed length (MiniLM's: 128); our stages pad themselves.
        tok.no_padding()
        tok.no_truncation()
        _add_post_processor(tok)  # pairs as the shards lay them out, whatever the file had
        return _save(tok, out_dir, _kind_of(tok), {"imported_from": str(path)})
    vocab = _read_vocab(path)
    if lowercase is None:
        # A token lowercasing changes ("The"), not any isupper() one: uncased BERT keeps "ℝ", which has no
        # lowercase form.
        lowercase = not any(t != t.lower() for t in vocab if not _bracketed(t))
    tok = Tokenizer(models.WordPiece(vocab, unk_token=BERT_SPECIALS["unk"], max_input_chars_per_word=100))
    _bert_pipeline(tok, lowercase)
    _check_specials(tok, path)
    _add_post_processor(tok)
    return _save(tok, out_dir, "wordpiece", {"lowercase": lowercase, "imported_from": str(path)})


def _json_kind(path: Path) -> Literal["tokenizer", "vocab"]:
    """"tokenizer" for a tokenizer.json (an object with a "model" key), "vocab" for a vocab.json (a flat
    object of token -> id whose ids are 0..n-1, each once: the rows of the model's embedding table); anything
    else is one InputError saying the file is neither."""
    data = read_json(path)
    if isinstance(data, dict) and "model" in data:
        return "tokenizer"
    if not isinstance(data, dict):
        held = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
        why = f"it holds {held.get(type(data), 'a number')}, not an object"
    elif not data:
        why = "it holds an empty object"
    elif bad := next(((t, i) for t, i in data.items() if type(i) is not int), None):
        why = f'no "model" key, and {bad[0]!r} maps to {bad[1]!r}, not an integer id'
    elif sorted(data.values()) != list(range(len(data))):
        missing = min(set(range(len(data))) - set(data.values()))
        why = f'no "model" key, and its ids are not 0..{len(data) - 1}, each once (no token has id {missing})'
    else:
        return "vocab"
    raise InputError(f"{path}: neither a tokenizer.json (an object with a \"model\" key) nor a vocab.json (token -> "
                     f"id, ids 0..n-1): {why}")


def _import_bpe_pair(vocab_path: Path, merges_path: Path, out_dir: Path) -> Path:
    """RoBERTa's release format: byte-level BPE. Sentences get a prefix space as in `_new_bpe` (each is
    encoded on its own), so a sentence's first word gets its mid-text "Ġword" tokens."""
    if not merges_path.is_file():
        raise InputError(f"{merges_path}: merges file not found (expected beside {vocab_path.name})")
    vocab = read_json(vocab_path)  # its shape checked by _json_kind
    merges = []
    with open(merges_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or line.startswith("#version"):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise InputError(f"{merges_path}:{number}: expected two tokens separated by one space, got {line!r}")
            merges.append((pair[0], pair[1]))
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    # Matched whole in text, never split by BPE; <mask> takes the space before it, as in RoBERTa's release.
    specials = [AddedToken(t, lstrip=t == ROBERTA_SPECIALS["mask"], special=True) for t in ROBERTA_SPECIALS.values()]
    tok.add_special_tokens([t for t in specials if t.content in vocab])
    _check_specials(tok, vocab_path)
    _add_post_processor(tok)
    return _save(tok, out_dir, "bpe", {"imported_from": str(vocab_path), "merges": str(merges_path)})


def _bracketed(token: str) -> bool:
    return token.startswith("[") and token.endswith("]")


def _read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            token = line.rstrip("\r\n")
            if not token:
                raise InputError(f"{path}:{number}: empty line (expected one token per line)")
            if token in vocab:
                raise InputError(f"{path}:{number}: token {token!r} repeats line {vocab[token] + 1}")
            vocab[token] = len(vocab)
    if not vocab:
        raise InputError(f"{path}: empty vocabulary")
    return vocab


def _kind_of(tok: Tokenizer) -> str:
    model = json.loads(tok.to_str())["model"]["type"]
    return {"BPE": "bpe", "WordPiece": "wordpiece"}.get(model, model.lower())


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer folder (with tokenizer.json) or a tokenizer.json file; checks its special tokens."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a tokenizers tokenizer.json ({error})") from error
    _check_specials(tok, path)
    return tok


def _check_specials(tok: Tokenizer, path: Path) -> None:
    try:
        special_tokens(tok)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def special_tokens(tok: Tokenizer) -> SpecialTokens:
    """The ids of pad, cls, sep, mask and unk under the BERT or the RoBERTa convention."""
    missing = {}
    for convention in (BERT_SPECIALS, ROBERTA_SPECIALS):
        ids = {name: tok.token_to_id(token) for name, token in convention.items()}
        if all(i is not None for i in ids.values()):
            return SpecialTokens(**ids)
        missing[convention["cls"]] = [convention[n] for n, i in ids.items() if i is None]
    raise InputError(
        "tokenizer lacks special tokens: expected BERT's [PAD] [UNK] [CLS] [SEP] [MASK] (missing "
        f"{' '.join(missing['[CLS]'])}) or RoBERTa's <s> <pad> </s> <unk> <mask> (missing {' '.join(missing['<s>'])})"
    )


def special_tokens_meta(tok: Tokenizer) -> dict[str, dict]:
    """{name: {"token", "id"}} for meta.json and manifests."""
    return {name: {"token": tok.id_to_token(i), "id": i} for name, i in asdict(special_tokens(tok)).items()}


def _save(tok: Tokenizer, out_dir: Path, kind: str, extra: dict) -> Path:
    out_dir = Path(out_dir)
    text = tok.to_str(pretty=True)
    with atomic_dir(out_dir) as tmp:
        (tmp / "tokenizer.json").write_text(text, encoding="utf-8")
        meta = {
            "kind": kind,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "specials": special_tokens_meta(tok),
            "sha256": sha256_file(tmp / "tokenizer.json"),
            **extra,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir / "tokenizer.json"


def copy_tokenizer(path: Path, dest: Path) -> None:
    """Copy a tokenizer.json byte for byte (shards keep one beside them so they explain themselves)."""
    src = Path(path)
    shutil.copyfile(src / "tokenizer.json" if src.is_dir() else src, dest)
