"""LRA training (effbert.train.lra): heads, masks, seeds and their gather, self-pretraining, the protocol table."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import ROOT
from effbert.config import ModelConfig, parse_config
from effbert.constants import IGNORE
from effbert.data.lra.listops import generate_listops
from effbert.data.lra.split import make_split
from effbert.errors import InputError
from effbert.model.encoder import Encoder
from effbert.model.task_models import LraClassifier, dual_features
from effbert.pipeline_config import ListopsSettings
from effbert.train import lra
from effbert.train.lra import (
    gather_lra,
    make_batch,
    mask_tokens,
    run_lra,
    self_pretrain,
    train_lra,
)
from effbert.train.lra_protocol import PROTOCOLS, resolve_protocol

TINY = {"hidden_size": 32, "ffn_size": 64, "num_heads": 2, "num_layers": 1}


def tiny_cfg(attention: str = "softmax") -> ModelConfig:
    return ModelConfig.model_validate({"vocab_size": 300, "max_seq_len": 64, "type_vocab_size": 1, "norm": "pre",
                                       "hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64,
                                       "dropout": 0.0, "attention_dropout": 0.0, "attention": {"type": attention}})


def write_model(root: Path, lra_section: dict, attention: dict | None = None) -> Path:
    folder = root / "models" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"lra": lra_section}
    if attention:
        config["model"] = {"attention": attention}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---- masks, pooling and heads ----


def test_pixel_value_zero_is_a_real_token():
    # image/pathfinder ids are pixel values 0..255 and PAD_ID may be 0: the mask comes from the lengths only
    split = make_split([[[0, 0, 0, 0], [0, 7]]], [1, 0])
    batch = make_batch(split, [0, 1], pad_id=0)
    assert batch["input_ids"].tolist() == [[0, 0, 0, 0], [0, 7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[True, True, True, True], [True, True, False, False]]
    # and the zeros change the prediction: an all-black image is not an empty one
    torch.manual_seed(0)
    model = LraClassifier(tiny_cfg(), 300, 2, 16).eval()
    with torch.no_grad():
        four_zeros = model(torch.tensor([[0, 0, 0, 0]]), torch.ones(1, 4, dtype=torch.bool))
        one_zero = model(torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.bool))
    assert not torch.allclose(four_zeros, one_zero)


@pytest.mark.parametrize("attention", ["softmax", "nystrom"])
def test_padding_does_not_change_the_prediction(attention: str):
    torch.manual_seed(0)
    model = LraClassifier(tiny_cfg(attention), 300, 3, 16).eval()
    rows = [np.arange(1, 30) % 256, np.array([5, 0, 9]), np.zeros(17, dtype=np.int64)]
    split = make_split([rows], [0, 1, 2])
    batch = make_batch(split, [0, 1, 2], pad_id=0)
    with torch.no_grad():
        together = model(batch["input_ids"], batch["attention_mask"])
        alone = torch.cat([model(torch.as_tensor(r)[None], torch.ones(1, len(r), dtype=torch.bool)) for r in rows])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_over_real_tokens_only():
    torch.manual_seed(0)
    model = LraClassifier(tiny_cfg(), 300, 2, 16).eval()
    ids = torch.tensor([[4, 8, 15, 16]])
    mask = torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        hidden = model.encoder(ids, mask)
        expected = hidden[0, :2].mean(0)  # the hand computation: the two real positions
        torch.testing.assert_close(model.pooled(ids, mask)[0], expected)


def test_dual_features_by_hand():
    x0 = torch.tensor([[1.0, 2.0]])
    x1 = torch.tensor([[3.0, -1.0]])
    assert dual_features(x0, x1).tolist() == [[1.0, 2.0, 3.0, -1.0, 3.0, -2.0, -2.0, 3.0]]


def test_retrieval_head_is_one_shared_encoder_over_both_documents():
    torch.manual_seed(0)
    model = LraClassifier(tiny_cfg(), 300, 2, 16, inputs=2).eval()
    single = LraClassifier(tiny_cfg(), 300, 2, 16, inputs=1)
    # one encoder: the dual model has exactly the single model's encoder parameters, and a 4H-wide head
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    assert encoder_params == sum(p.numel() for p in single.encoder.parameters())
    assert model.head[0].in_features == 4 * 32
    a, b = torch.tensor([[3, 1, 4, 1, 5]]), torch.tensor([[9, 2, 6]])
    ma, mb = torch.ones_like(a, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)
    with torch.no_grad():
        got = model(a, ma, b, mb)
        h0 = model.encoder(a, ma).mean(1)
        h1 = model.encoder(b, mb).mean(1)
        expected = model.head(torch.cat([h0, h1, h0 * h1, h0 - h1], -1))
        swapped = model(b, mb, a, ma)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, swapped)  # x0 - x1 makes the order matter
    with pytest.raises(ValueError, match="input_ids_1"):
        model(a, ma)


# ---- self-pretraining ----


def test_mask_tokens_masks_real_tokens_only_in_bert_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (400, 250), generator=g)
    real = torch.arange(250)[None, :] < torch.randint(50, 251, (400, 1), generator=g)
    inputs, labels = mask_tokens(ids, real, mask_id=10, data_vocab=10, mask_prob=0.15, generator=g)
    chosen = labels != IGNORE
    assert not (chosen & ~real).any()  # padding is never a target
    assert (labels[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()  # only chosen positions change
    assert chosen.sum() / real.sum() == pytest.approx(0.15, abs=0.01)
    masked = (inputs[chosen] == 10).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02)
    changed = ((inputs[chosen] != 10) & (inputs[chosen] != ids[chosen])).float().mean()
    assert changed == pytest.approx(0.1 * 0.9, abs=0.02)  # a random token equals the old one 1 time in 10


def test_self_pretraining_changes_the_starting_weights_and_learns():
    torch.manual_seed(0)
    encoder = Encoder(tiny_cfg(), 11)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    # a learnable language: every sequence counts up mod 10 from a random start
    rng = np.random.default_rng(0)
    rows = [(rng.integers(0, 10) + np.arange(rng.integers(8, 20))) % 10 for _ in range(256)]
    train = make_split([rows], [0] * 256)
    protocol = dataclasses.replace(resolve_protocol("listops"), batch_size=32, lr=1e-2, warmup_steps=0,
                                   self_pretrain_steps=300)
    log = self_pretrain(encoder, train, protocol, mask_id=10, data_vocab=10, pad_id=0, seed=0)
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert "embeddings.word.weight" in changed and any(k.startswith("blocks.0.") for k in changed)
    losses = [r["loss"] for r in log if r.get("split") == "train"]
    assert losses[-1] < 0.5 * losses[0]  # the next digit is predictable: the MLM loss must fall


# ---- end to end: seeds, gather, best dev ----


def listops_data(root: Path) -> Path:
    data = root / "lra" / "listops-1000"
    generate_listops(data, ListopsSettings(train=128, val=48, test=1, min_length=10, max_length=60, seed=5))
    # test = dev: the reported test accuracy must then be the best dev accuracy, not the last one
    (data / "basic_test.tsv").write_bytes((data / "basic_val.tsv").read_bytes())
    return root / "lra"


OVERRIDES = {"steps": 24, "eval_every": 8, "warmup_steps": 4, "lr": 3e-3, "batch_size": 16, "max_len": 64, **TINY}


def test_seeds_are_run_and_gathered(tmp_path: Path):
    lra_dir = listops_data(tmp_path)
    model_dir = write_model(tmp_path, {"seeds": [3, 4], "listops": OVERRIDES})
    gathered = run_lra(model_dir, "listops", lra_dir, device="cpu")

    runs = [json.loads((model_dir / "lra" / "listops" / f"seed-{s}.json").read_text()) for s in (3, 4)]
    assert json.loads((model_dir / "lra" / "listops.json").read_text()) == gathered
    assert gathered["seeds"] == [3, 4] and [r["seed"] for r in gathered["runs"]] == [3, 4]
    accs = [r["accuracy"] for r in runs]
    assert gathered["accuracy"] == pytest.approx(statistics.mean(accs))
    assert gathered["accuracy_std"] == pytest.approx(statistics.stdev(accs))
    assert gathered["dev_accuracy"] == pytest.approx(statistics.mean(r["dev_accuracy"] for r in runs))
    for run in runs:
        history = run["dev_history"]
        assert [h["step"] for h in history] == [8, 16, 24]
        scores = [h["dev_accuracy"] for h in history]
        assert run["dev_accuracy"] == max(scores)
        assert run["best_step"] == history[scores.index(max(scores))]["step"]
        assert run["accuracy"] == pytest.approx(run["dev_accuracy"])  # best-dev weights scored on test (= dev)
        assert run["protocol"]["hidden_size"] == 32 and run["protocol"]["weight_decay"] == 0.0
        logged = [json.loads(line) for line in
                  (model_dir / "lra" / "listops" / f"seed-{run['seed']}.metrics.jsonl").read_text().splitlines()]
        assert [r["accuracy"] for r in logged if r["split"] == "dev"] == scores
    # the two seeds trained differently (their own init and batch order)
    first_loss = [json.loads((model_dir / "lra" / "listops" / f"seed-{s}.metrics.jsonl").read_text().splitlines()[0])
                  ["loss"] for s in (3, 4)]
    assert first_loss[0] != first_loss[1]


def test_a_seed_repeats_exactly(tmp_path: Path):
    lra_dir = listops_data(tmp_path)
    model_dir = write_model(tmp_path, {"listops": {**OVERRIDES, "steps": 8, "eval_every": 4}})
    first = train_lra(model_dir, "listops", lra_dir, seed=7, device="cpu")
    again = train_lra(model_dir, "listops", lra_dir, seed=7, device="cpu")
    assert first["dev_history"] == again["dev_history"] and first["accuracy"] == again["accuracy"]


def test_gather_names_a_missing_seed(tmp_path: Path):
    model_dir = write_model(tmp_path, {"seeds": [0, 1]})
    with pytest.raises(InputError, match=r"seed-0\.json"):
        gather_lra(model_dir, "listops")


def fake_loader(read_split) -> SimpleNamespace:
    """A task module as the contract spells it: pixel/byte ids 0..255, PAD_ID 0 (a real value too)."""
    return SimpleNamespace(VOCAB_SIZE=256, PAD_ID=0, NUM_CLASSES=2, RELEASE_DIR="x", read_split=read_split)


def test_retrieval_trains_as_a_dual_encoder_and_self_pretrains(tmp_path: Path, monkeypatch):
    # in-test documents: label 1 when both documents start with the same byte
    rng = np.random.default_rng(0)

    def pairs(n: int):
        first = [rng.integers(0, 256, rng.integers(5, 30)) for _ in range(n)]
        labels = rng.integers(0, 2, n)
        second = [np.concatenate([[a[0] if y else (a[0] + 1) % 256], rng.integers(0, 256, 9)])
                  for a, y in zip(first, labels, strict=True)]
        return make_split([first, second], labels)

    splits = {"train": pairs(64), "dev": pairs(32), "test": pairs(32)}
    seen_options = []

    def read_split(lra_dir, split, **options):
        seen_options.append(options)
        return splits[split]

    monkeypatch.setattr(lra, "task_loader", lambda task: fake_loader(read_split))
    overrides = {**OVERRIDES, "steps": 6, "eval_every": 3, "max_len": 20, "self_pretrain_steps": 5}
    model_dir = write_model(tmp_path, {"retrieval": overrides})
    result = train_lra(model_dir, "retrieval", tmp_path, seed=0, device="cpu")
    assert result["protocol"]["inputs"] == 2 and result["self_pretrain"]["steps"] == 5
    assert result["truncated"] == sum(len(s) > 20 for sp in splits.values() for s in sp.inputs[0])
    assert (model_dir / "lra" / "retrieval" / "seed-0.self-pretrain.jsonl").is_file()
    assert seen_options == [{}, {}, {}]


def test_pathfinder_rows_pass_their_options_to_the_loader(tmp_path: Path, monkeypatch):
    got = []
    images = make_split([[np.zeros(16, dtype=np.int64)] * 32], [0, 1] * 16)

    def read_split(lra_dir, split, **options):
        got.append(options)
        return images

    monkeypatch.setattr(lra, "task_loader", lambda task: fake_loader(read_split))
    model_dir = write_model(tmp_path, {"pathx": {**OVERRIDES, "steps": 2, "eval_every": 2, "max_len": 16}})
    train_lra(model_dir, "pathx", tmp_path, device="cpu")
    assert got[0] == {"resolution": 128, "difficulty": "curv_contour_length_14"}


# ---- configuration and the protocol table ----


def test_seeds_and_the_self_pretraining_switch():
    cfg = parse_config({"lra": {"seeds": [1, 2], "self_pretrain_steps": 100,
                                "text": {"seeds": [9], "self_pretrain_steps": 0}}}, "c.json")
    assert cfg.lra.task_seeds("listops") == [1, 2] and cfg.lra.task_seeds("text") == [9]
    assert cfg.lra.task_self_pretrain_steps("image") == 100 and cfg.lra.task_self_pretrain_steps("text") == 0
    assert parse_config({}, "c.json").lra.task_seeds("pathx") == [0, 1, 2]
    with pytest.raises(InputError, match="repeated seeds"):
        parse_config({"lra": {"seeds": [1, 1]}}, "c.json")
    with pytest.raises(InputError, match="lra.image.sead"):
        parse_config({"lra": {"image": {"sead": 1}}}, "c.json")


def published_protocol() -> dict[str, dict[str, str]]:
    path = ROOT.parent / "shared" / "reference" / "published-results.md"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    table = text[text.index("| task       | vocab"):].split("\n\n")[0].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in
            ([c.strip() for c in row.strip("|").split("|")] for row in table[2:])}


def test_protocol_rows_match_the_published_table():
    published = published_protocol()
    assert set(published) <= set(PROTOCOLS)
    for task, row in published.items():
        p = PROTOCOLS[task]
        assert (p.batch_size, p.lr, p.warmup_steps, p.steps, p.eval_every, p.num_classes) == (
            int(row["batch"]), float(row["lr"]), int(row["warmup"]), int(row["steps"]), int(row["eval every"]),
            int(row["classes"])), task
        assert p.max_len == int(re.match(r"\d+", row["max_len"]).group()), task
        if re.fullmatch(r"\d+/\d+/\d+", row["train/dev/test"]):
            sizes = [int(x) for x in row["train/dev/test"].split("/")]
            assert [p.train_examples, p.dev_examples, p.test_examples] == sizes, task
        assert (p.num_layers, p.hidden_size, p.num_heads, p.ffn_size, p.dropout, p.weight_decay) == (
            2, 64, 2, 128, 0.1, 0.0)
    assert PROTOCOLS["retrieval"].inputs == 2 and PROTOCOLS["pathx"].max_len == 128 * 128


# ---- through the real loaders: files in each official layout ----


def write_imdb(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, word in (("pos", b"great "), ("neg", b"awful ")):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(12):
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_bytes(word * int(rng.integers(1, 20)))


def write_aan(root: Path) -> None:
    folder = root / "tsv_data"
    folder.mkdir(parents=True)
    for split in ("train", "eval", "test"):
        rows = [f"{i % 2}.0\tid{i}\tid{i + 1}\tdoc {'x' * (i % 7)}\tother {i}\n" for i in range(24)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("".join(rows))


def write_pathfinder(root: Path) -> None:
    from effbert.data.lra.pathfinder_generate import generate_pathfinder
    from effbert.pipeline_config import PathfinderSettings

    settings = PathfinderSettings(n_images=60, images_per_batch=30, seed=0)
    generate_pathfinder(root / "pathfinder32" / "curv_contour_length_14", settings)


@pytest.mark.parametrize(("task", "write", "inputs", "length"), [
    ("text", write_imdb, 1, None), ("retrieval", write_aan, 2, None), ("pathfinder", write_pathfinder, 1, 1024),
])
def test_every_loader_trains_end_to_end(tmp_path: Path, task: str, write, inputs: int, length: int | None):
    write(tmp_path / "lra")
    overrides = {"steps": 2, "eval_every": 2, "warmup_steps": 0, "batch_size": 4, "max_len": 1024 if length else 48,
                 **TINY, "hidden_size": 16, "ffn_size": 32}
    model_dir = write_model(tmp_path, {"seeds": [0], task: overrides})
    result = run_lra(model_dir, task, tmp_path / "lra", device="cpu")
    run = result["runs"][0]
    assert result["protocol"]["inputs"] == inputs and 0.0 <= result["accuracy"] <= 100.0
    assert min(run["examples"].values()) > 0
    if length:  # every pixel is a real token: nothing cut, nothing padded
        assert run["truncated"] == 0


def test_dag_fans_out_seeds_and_generates_pathfinder(tmp_path: Path):
    """A dry run: one job per task and seed, one gather per task, Pathfinder and Path-X generated at the
    resolution and difficulty of their protocol rows."""
    import yaml

    from conftest import copy_project, planned_jobs, snakemake

    copy_project(tmp_path)
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["models_dir"] = "models"
    # the project's model folders (copied with it) name the real tokenizers: the config names them too
    config["tokenizers"] = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["tokenizers"]
    config["lra"] = {"dir": "lra", "tasks": ["listops", "pathfinder", "pathx"], "generate": {
        "listops": {"train": 10, "val": 2, "test": 2}, "pathfinder": {"n_images": 20, "workers": 2},
        "pathx": {"n_images": 10}}}
    (tmp_path / "lra.yaml").write_text(yaml.safe_dump(config))
    write_model(tmp_path, {"seeds": [0, 5]})
    targets = [f"models/tiny/lra/{task}.json" for task in ("listops", "pathfinder", "pathx")]
    done = snakemake(tmp_path, *targets, "-n", "-p", "--cores", "2", "--configfile", "lra.yaml")
    plan = done.stdout + done.stderr
    assert planned_jobs(plan) == {
        "generate_listops": 1, "generate_pathfinder": 1, "generate_pathx": 1, "train_lra": 6, "gather_lra": 3}
    assert "--out lra/pathfinder32/curv_contour_length_14 --resolution 32" in plan
    assert "--out lra/pathfinder128/curv_contour_length_14 --resolution 128" in plan
    assert "--task pathx --lra_dir lra --seed 5" in plan
