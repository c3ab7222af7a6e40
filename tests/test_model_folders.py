"""The shipped model folders (models/<name>/config.json): each validates, each seed experiment has the
settings its source published, and each builds at its real width and depth and takes an optimizer step.

The published settings below are transcribed from ../shared/reference/published-results.md (the
Nystromformer paper's LRA study and pretraining, the YOSO table) and the seeds' public config files
named in each folder's description; they are the truth the folders are checked against."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from effbert.config import load_config
from effbert.constants import LRA_TASKS
from effbert.model.pretraining import PretrainingModel
from effbert.model.task_models import LraClassifier
from effbert.train.lra import model_config
from effbert.train.lra_protocol import resolve_protocol

FOLDERS = {p.parent.name: load_config(p) for p in sorted((ROOT / "models").glob("*/config.json"))}

BERT_BASE = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "ffn_size": 3072}
BERT_SMALL = {"hidden_size": 512, "num_layers": 4, "num_heads": 8, "ffn_size": 2048}
# Nystromformer paper: MLM + SOP, batch 256, lr 1e-4, 10k warmup, linear decay, 0.5M steps (BERT-base size)
NYSTROMFORMER_PRETRAINING = {"batch_size": 256, "lr": 1e-4, "warmup_steps": 10000, "steps": 500000,
                             "schedule": "linear", "sop": True}
# YOSO table: BERT-small pretraining at n=512, batch 256, lr 1e-4; tau 9, m 32
YOSO_SMALL_PRETRAINING = {"batch_size": 256, "lr": 1e-4}
# the Nystromformer LRA study's attention settings (Table 3 rows and the landmark sweep)
NYSTROM_LRA = {"type": "nystrom", "conv_kernel": 35}
LRA_ATTENTION = {
    "lra-softmax": {"type": "softmax"},
    "lra-nystrom-32": {**NYSTROM_LRA, "num_landmarks": 32},
    "lra-nystrom-64": {**NYSTROM_LRA, "num_landmarks": 64},
    "lra-nystrom-128": {**NYSTROM_LRA, "num_landmarks": 128},
    "lra-linformer-256": {"type": "linformer", "k": 256, "share": "layers"},
    "lra-performer-256": {"type": "performer", "num_features": 256, "kernel": "relu"},
    "lra-reformer-2": {"type": "reformer", "num_hashes": 2},
    "lra-linear": {"type": "linear"},
}
# YOSO's LRA configs: tau (hash bits) per task, m per variant
YOSO_LRA_TAU = {"listops": 11, "text": 12, "retrieval": 12, "image": 10, "pathfinder": 10}
YOSO_LRA = {"lra-yoso-32": {"num_hashes": 32, "expectation": False}, "lra-yoso-16": {"num_hashes": 16},
            "lra-yoso-c-16": {"num_hashes": 16, "conv_kernel": 35}, "lra-yoso-e": {"expectation": True}}


def _has(section: object, expected: dict) -> bool:
    return all(getattr(section, key) == value for key, value in expected.items())


def test_every_shipped_folder_validates_and_says_what_it_is():
    assert len(FOLDERS) >= 20
    for name, cfg in FOLDERS.items():
        assert len(cfg.description) > 40, f"models/{name}: no description of what it reproduces"


def test_the_bert_folders_have_the_papers_pretraining():
    for name in ("softmax-512", "nystrom-512"):
        cfg = FOLDERS[name]
        assert cfg.stages == ["pretrain", "glue"] and cfg.model.max_seq_len == 512
        assert _has(cfg.model, BERT_BASE) and _has(cfg.pretraining, NYSTROMFORMER_PRETRAINING), name
    nystrom = FOLDERS["nystrom-512"].model.attention
    assert _has(nystrom, {"type": "nystrom", "num_landmarks": 64, "pinv_iterations": 6})
    long = FOLDERS["nystrom-4096"]
    assert long.model.max_seq_len == 4096 and long.model.attention == nystrom  # the 512 weights fit it
    assert long.from_cp == "../nystrom-512/checkpoints/cp-500000.pt"


def test_the_yoso_folders_have_the_yoso_papers_settings():
    names = ["softmax-small-512", "yoso-small-512", "yoso-e-small-512", "yoso-c-small-512", "yoso-small-4096"]
    for name in names:
        cfg = FOLDERS[name]
        assert _has(cfg.model, BERT_SMALL), name
        assert _has(cfg.pretraining, YOSO_SMALL_PRETRAINING) or cfg.from_cp, name  # 4096: its own schedule
    assert _has(FOLDERS["yoso-small-512"].model.attention, {"type": "yoso", "hash_bits": 9, "num_hashes": 32})
    assert _has(FOLDERS["yoso-e-small-512"].model.attention, {"hash_bits": 9, "expectation": True})
    assert FOLDERS["yoso-c-small-512"].model.attention.conv_kernel is not None
    long = FOLDERS["yoso-small-4096"]
    assert long.model.max_seq_len == 4096 and long.from_cp.startswith("../yoso-small-512/checkpoints/")
    assert long.model.attention.hash_bits == 9


def test_the_block_variant_folders_follow_their_papers():
    """TransNormer puts DiagAttention (block softmax) in the early layers and NormAttention in the late ones;
    SLAB pairs its linear attention with PRepBN, LayerNorm fading out over the authors' 300k steps;
    the MASFormer-style hybrid keeps full attention in the top layers only. All on BERT-base, pretrained as
    the Nystromformer paper's rows so that they compare."""
    for name in ("transnormer-512", "slab-512", "masformer-512"):
        cfg = FOLDERS[name]
        assert _has(cfg.model, BERT_BASE) and _has(cfg.pretraining, NYSTROMFORMER_PRETRAINING), name
    transnormer = FOLDERS["transnormer-512"].model
    assert [a.type for a in transnormer.layer_attentions()] == ["block_softmax"] * 6 + ["norm_linear"] * 6
    assert _has(transnormer.layer_attentions()[0], {"block_size": 64})
    assert _has(transnormer.attention, {"kernel": "1+elu", "norm": "srmsnorm"})
    slab = FOLDERS["slab-512"].model
    assert _has(slab, {"norm": "pre_batchnorm", "batchnorm_warmup": 0, "batchnorm_decay_steps": 300000})
    assert _has(slab.attention, {"type": "slab_linear", "conv_kernel": 5})
    masformer = FOLDERS["masformer-512"].model
    assert [a.type for a in masformer.layer_attentions()] == ["local"] * 10 + ["softmax"] * 2


def test_the_fnet_folders():
    assert FOLDERS["fnet-512"].model.attention.type == "fnet" and _has(FOLDERS["fnet-512"].model, BERT_BASE)
    from_bert = FOLDERS["fnet-from-bert"]
    assert from_bert.stages == ["glue"] and from_bert.import_hf and from_bert.model.attention.type == "fnet"


def test_the_lra_folders_have_the_published_attention_and_protocol():
    lra = {name: cfg for name, cfg in FOLDERS.items() if "lra" in cfg.stages}
    assert set(LRA_ATTENTION) | set(YOSO_LRA) | {"lra-local"} == set(lra)
    for name, cfg in lra.items():
        assert cfg.stages == ["lra"] and cfg.lra.seeds == [0, 1, 2], name
        for task in LRA_TASKS:  # the published protocol: nothing but the attention is overridden
            overrides = getattr(cfg.lra, task).model_dump(exclude={"attention"})
            assert all(value is None for value in overrides.values()), (name, task)
            attention = cfg.lra_attention(task)
            if name in LRA_ATTENTION:
                assert _has(attention, LRA_ATTENTION[name]), (name, task)
            elif name in YOSO_LRA:
                assert attention.type == "yoso" and _has(attention, YOSO_LRA[name]), (name, task)
                assert attention.hash_bits == YOSO_LRA_TAU.get(task, attention.hash_bits), (name, task)
    # no two LRA folders repeat one setting (the DAG would share their runs, but the table would repeat a row)
    settings = [tuple(cfg.lra_attention(task) for task in LRA_TASKS) for cfg in lra.values()]
    assert len(set(map(repr, settings))) == len(settings)


def _shipped_bpe_vocab() -> int:
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    return config["tokenizers"]["bpe-wiki-books"]["vocab_size"]


def _one_step(model: torch.nn.Module, loss: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, cfg in FOLDERS.items() if {"pretrain", "glue"} & set(cfg.stages)])
def test_a_bert_folder_builds_at_its_real_shape_and_steps(name):
    """The whole model at the folder's width, depth and max_seq_len (position table), one AdamW step on 2 x 128."""
    torch.manual_seed(0)
    cfg = FOLDERS[name].model
    vocab = cfg.vocab_size or _shipped_bpe_vocab()
    model = PretrainingModel(cfg, vocab)
    assert model.encoder.embeddings.position.weight.shape == (cfg.max_seq_len, cfg.hidden_size)
    ids = torch.randint(5, vocab, (2, 128))
    labels = torch.full_like(ids, -100)
    labels[:, ::7] = ids[:, ::7]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
             "token_type_ids": torch.zeros_like(ids), "mlm_labels": labels, "sop_labels": torch.tensor([0, 1])}
    _one_step(model, model(batch)["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, cfg in FOLDERS.items() if "lra" in cfg.stages])
def test_an_lra_folder_builds_every_task_at_the_protocols_shape_and_steps(name):
    """Every task's model (the task's attention on the protocol's sizes and length), one step on 2 x 256."""
    torch.manual_seed(0)
    cfg = FOLDERS[name]
    for task in LRA_TASKS:
        protocol = resolve_protocol(task, getattr(cfg.lra, task))
        base = cfg.model.model_copy(update={"attention": cfg.lra_attention(task)})
        mcfg = model_config(base, protocol, protocol.vocab_size, f"models/{name}")
        model = LraClassifier(mcfg, protocol.vocab_size, protocol.num_classes, protocol.ffn_size, protocol.inputs)
        ids = torch.randint(1, protocol.vocab_size, (2, 256))
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[1, 200:] = False  # padding in one row
        inputs = {"input_ids": ids, "attention_mask": mask}
        if protocol.inputs == 2:
            inputs |= {"input_ids_1": ids.flip(0), "attention_mask_1": mask.flip(0)}
        loss = torch.nn.functional.cross_entropy(model(**inputs), torch.tensor([0, 1]))
        _one_step(model, loss)


def test_every_folder_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in FOLDERS if f"`{name}`" not in readme]
    assert not missing, f"README's model folder list lacks {missing}"


def test_folder_paths_resolve_inside_models():
    for name, cfg in FOLDERS.items():
        for given in filter(None, (cfg.from_cp, cfg.import_hf)):
            assert (ROOT / "models" / name / given).resolve().is_relative_to((ROOT / "models").resolve()), name
    assert Path(FOLDERS["fnet-from-bert"].import_hf).parts[0] != ".."
