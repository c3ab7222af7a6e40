"""Dynamic masking: masks drawn anew every epoch by the shards' own rule, seeded, resumable."""

from __future__ import annotations

import numpy as np
import torch

from effbert.config import parse_config
from effbert.constants import IGNORE
from effbert.data.dynamic_masking import DynamicMasking
from effbert.data.shard_files import ShardDataset, read_manifest
from effbert.train.identity import pretraining_settings
from effbert.train.loop import SeededBatches


def _original(batch: dict[str, torch.Tensor]) -> np.ndarray:
    ids, labels = batch["input_ids"].numpy(), batch["mlm_labels"].numpy()
    return np.where(labels != IGNORE, labels, ids)


def test_each_epoch_draws_new_masks_over_the_same_rows(shards):
    data, remask = ShardDataset(shards, "train"), DynamicMasking(read_manifest(shards), seed=0)
    rows = np.arange(64)
    static = data.batch(rows)
    first, again, second = remask(static, rows, 0), remask(static, rows, 0), remask(static, rows, 1)
    assert torch.equal(first["input_ids"], again["input_ids"])  # (seed, epoch, row) decide everything
    assert not torch.equal(first["mlm_labels"], second["mlm_labels"])
    for batch in (first, second):  # the rows themselves are untouched: the same tokens under other masks
        assert np.array_equal(_original(batch), _original(static))
        assert torch.equal(batch["attention_mask"], static["attention_mask"])
        assert (batch["mlm_labels"][~batch["attention_mask"]] == IGNORE).all()  # nothing predicted in padding
    other_seed = DynamicMasking(read_manifest(shards), seed=1)(static, rows, 0)
    assert not torch.equal(first["mlm_labels"], other_seed["mlm_labels"])


def test_the_80_10_10_rule_and_the_masked_share(shards):
    manifest = read_manifest(shards)
    data, remask = ShardDataset(shards, "train"), DynamicMasking(manifest, seed=0)
    rows = np.arange(len(data))
    kept = masked = random = predicted = ordinary = 0
    specials = set(manifest["tokenizer"]["specials"].values())
    for epoch in range(4):
        batch = remask(data.batch(rows), rows, epoch)
        original, ids, labels = _original(batch), batch["input_ids"].numpy(), batch["mlm_labels"].numpy()
        chosen = labels != IGNORE
        predicted += chosen.sum()
        ordinary += np.isin(original, list(specials), invert=True).sum()
        masked += (ids[chosen] == manifest["tokenizer"]["specials"]["mask"]).sum()
        kept += (ids[chosen] == original[chosen]).sum()
        random += ((ids[chosen] != original[chosen]) & (ids[chosen] != manifest["tokenizer"]["specials"]["mask"])).sum()
    assert 0.78 < masked / predicted < 0.82 and 0.08 < kept / predicted < 0.12 and 0.08 < random / predicted < 0.12
    # masked_lm_prob of the ordinary tokens, at least one a row (rounding per row keeps it near, not exact)
    assert abs(predicted / ordinary - manifest["masked_lm_prob"]) < 0.03


def test_a_resumed_run_sees_the_masks_it_would_have_seen(shards):
    data, remask = ShardDataset(shards, "train"), DynamicMasking(read_manifest(shards), seed=3)

    def batches() -> SeededBatches:
        seeded = SeededBatches(lambda idx: remask(data.batch(idx), idx, seeded.epoch), len(data), 16, seed=3)
        return seeded

    straight = batches()
    stream = iter(straight)
    per_epoch = len(data) // 16
    for _ in range(per_epoch + 1):  # into the second epoch
        next(stream)
    state = straight.state_dict()
    expected = [next(stream)[0] for _ in range(3)]
    resumed = batches()
    resumed.load_state_dict(state)
    got = [b[0] for _, b in zip(range(3), resumed, strict=False)]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["mlm_labels"], b["mlm_labels"])


def test_dynamic_masking_enters_a_runs_identity_only_when_chosen():
    def settings(**pretraining) -> dict:
        return pretraining_settings(parse_config({"model": {}, "pretraining": pretraining}, "test"))

    assert "masking" not in settings()["pretraining"]  # a run from before the key keeps its identity
    assert settings(masking="static") == settings()
    assert settings(masking="dynamic")["pretraining"]["masking"] == "dynamic"


def test_pretraining_runs_with_dynamic_masks(shards, tmp_path):
    import json

    from effbert.train.pretrain import pretrain
    from helpers import model_folder

    folder = model_folder(tmp_path, masking="dynamic", steps=20, eval_every=20, checkpoint_every=20, log_every=5)
    summary = pretrain(folder, shards, device="cpu", threads=1)
    records = [json.loads(line) for line in (folder / "pretrain.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 4 and all(np.isfinite(r["mlm_loss"]) for r in train)
    assert summary["steps"] == 20
