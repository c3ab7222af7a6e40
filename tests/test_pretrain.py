"""Pretraining end to end on a tiny patterned corpus: MLM loss falls, checkpoints explain themselves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from effbert.data.shards import build_shards
from effbert.data.tokenizer import train_tokenizer
from effbert.errors import InputError
from effbert.train.checkpoints import find_checkpoint, list_checkpoints, read_checkpoint
from effbert.train.loop import warmup_linear_decay
from effbert.train.pretrain import pretrain

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


def model_folder(root: Path, **pretraining) -> Path:
    folder = root / "tiny"
    folder.mkdir(exist_ok=True)
    cfg = {
        "model": {"max_seq_len": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "ffn_size": 64,
                  "dropout": 0.0, "attention_dropout": 0.0},
        "pretraining": {"tokenizer": "t", "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "steps": 150,
                        "log_every": 10, "eval_every": 50, "eval_batches": 4, "checkpoint_every": 75,
                        **pretraining},
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    patterned_corpus(root / "text")
    tokenizer = train_tokenizer("wordpiece", 120, [root / "text"], root / "tok", lowercase=True)
    out = root / "64-t"
    build_shards([root / "text"], tokenizer, out, max_seq_len=64, dev_fraction=0.1, dupe_factor=2)
    return out


def test_warmup_then_linear_decay():
    factor = warmup_linear_decay(warmup_steps=4, total_steps=12)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(8) == 0.5 and factor(12) == 0.0


def test_mlm_loss_falls_and_checkpoints_explain_themselves(tmp_path, shards):
    folder = model_folder(tmp_path)
    summary = pretrain(folder, shards, device="cpu", threads=1)
    records = [json.loads(line) for line in (folder / "pretrain.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    dev = [r for r in records if r["split"] == "dev"]
    assert [r["step"] for r in dev] == [50, 100, 150]
    # from ~ln(120) = 4.8 at the start; the colour after "is" is predictable from the animal
    assert train[0]["mlm_loss"] > 3.5
    assert dev[-1]["mlm_loss"] < train[0]["mlm_loss"] - 1.5
    assert summary["mlm_accuracy"] == dev[-1]["mlm_accuracy"] > 30
    assert 0 <= summary["sop_accuracy"] <= 100

    assert [p.name for p in list_checkpoints(folder)] == ["cp-0075.pt", "cp-0150.pt"]
    assert find_checkpoint(folder, "last").name == "cp-0150.pt" and find_checkpoint(folder, 75).name == "cp-0075.pt"
    state = read_checkpoint(find_checkpoint(folder))
    assert state["step"] == 150 and state["config"]["model"]["hidden_size"] == 32
    tokenizer_file = shards.parent / "tok" / "tokenizer.json"
    assert state["tokenizer"] == tokenizer_file.read_text(encoding="utf-8")
    assert set(state["optimizer"]) == {"state", "param_groups"}


def test_same_seed_same_run(tmp_path, shards):
    losses = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        folder = model_folder(tmp_path / run, steps=20, eval_every=20, checkpoint_every=20)
        pretrain(folder, shards, device="cpu", threads=1)
        losses.append([json.loads(x)["loss"] for x in (folder / "pretrain.jsonl").read_text().splitlines()
                       if '"train"' in x])
    assert losses[0] == losses[1]


def test_shards_of_another_length_are_refused(tmp_path, shards):
    folder = model_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["max_seq_len"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="shards are 64 tokens long but model.max_seq_len is 128"):
        pretrain(folder, shards, device="cpu")
    assert not (folder / "pretrain.json").exists()


def test_checkpoint_loading_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "cp-0001.pt"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(InputError, match="not a readable effbert checkpoint"):
        read_checkpoint(path)
