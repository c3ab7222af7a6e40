"""Each of the paper-list mechanisms (SLAB, TransNormer's two) pretrains on the patterned demo corpus: the
masked word after "is" is predictable from the animal, so the MLM loss must fall well below its start."""

from __future__ import annotations

import json

import pytest

from effbert.train.pretrain import pretrain
from helpers import model_folder


@pytest.mark.parametrize("attention", [{"type": "slab_linear"}, {"type": "norm_linear"},
                                       {"type": "norm_linear", "kernel": "elu", "norm": "layernorm"},
                                       {"type": "block_softmax", "block_size": 16}],
                         ids=["slab_linear", "norm_linear", "norm_linear-t1", "block_softmax"])
def test_mlm_loss_falls(tmp_path, shards, attention):
    folder = model_folder(tmp_path, steps=100, eval_every=50, checkpoint_every=100)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["attention"] = attention
    (folder / "config.json").write_text(json.dumps(cfg))
    pretrain(folder, shards, device="cpu", threads=1)
    records = [json.loads(line) for line in (folder / "pretrain.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["split"] == "train")
    last_dev = [r for r in records if r["split"] == "dev"][-1]
    assert first["mlm_loss"] > 3.5  # ~ln(120) at the start
    assert last_dev["mlm_loss"] < first["mlm_loss"] - 1.0
