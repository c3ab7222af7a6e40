"""The precision policy: under bf16 autocast a mechanism computes in bf16 and upcasts only what needs
float32 (Nystrom's pseudoinverse); `attention_fp32` opts back in to float32 throughout; a batch without
padding reaches SDPA without a mask (the flash kernels' condition)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import effbert.attention.nystrom as nystrom
from effbert.config import parse_config
from effbert.model.encoder import Encoder
from effbert.train.loop import Execution, Optimisation, Reporting, fit


def encoder(attention: dict) -> Encoder:
    cfg = parse_config({"model": {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "ffn_size": 64,
                                  "max_seq_len": 64, "attention": attention}}, "test").model
    return Encoder(cfg, vocab_size=50)


@pytest.fixture
def seen(monkeypatch):
    """Records the dtype of every SDPA query and every pseudoinverse input, and whether SDPA got a mask."""
    log = {"sdpa": [], "masked": [], "pinv": []}
    sdpa, pinv = F.scaled_dot_product_attention, nystrom.iterative_pinv

    def spy_sdpa(q, k, v, attn_mask=None, **kwargs):
        log["sdpa"].append(q.dtype)
        log["masked"].append(attn_mask is not None)
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    def spy_pinv(a, *args):
        log["pinv"].append(a.dtype)
        return pinv(a, *args)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy_sdpa)
    monkeypatch.setattr(nystrom, "iterative_pinv", spy_pinv)
    return log


def train_one_step(model: Encoder, ids: torch.Tensor, mask: torch.Tensor, *, attention_fp32: bool = False) -> None:
    def loss(m, batch):
        return m(batch["input_ids"], batch["attention_mask"]).float().square().mean(), {}

    fit(model, loss, iter([{"input_ids": ids, "attention_mask": mask}]), Optimisation(steps=1, lr=1e-3),
        execution=Execution(precision="bf16", attention_fp32=attention_fp32), report=Reporting(log_every=1))


@pytest.mark.parametrize("attention", [{"type": "softmax"}, {"type": "nystrom", "num_landmarks": 8}])
def test_bf16_autocast_reaches_the_mechanism_and_only_the_pseudoinverse_is_float32(attention, seen):
    ids = torch.randint(0, 50, (2, 40))
    train_one_step(encoder(attention), ids, torch.ones(2, 40))  # the defaults of a run
    assert seen["sdpa"] and set(seen["sdpa"]) == {torch.bfloat16}
    assert seen["masked"] == [False] * len(seen["masked"])  # nothing padded: no mask, flash-eligible
    assert seen["pinv"] == ([torch.float32] if attention["type"] == "nystrom" else [])


def test_padding_keeps_the_mask_and_attention_fp32_restores_float32(seen):
    ids = torch.randint(0, 50, (2, 40))
    mask = torch.ones(2, 40)
    mask[1, 30:] = 0
    train_one_step(encoder({"type": "nystrom", "num_landmarks": 8}), ids, mask, attention_fp32=True)
    assert set(seen["sdpa"]) == {torch.float32} and all(seen["masked"])
    assert seen["pinv"] == [torch.float32]


def test_a_runs_default_is_the_mixed_policy():
    assert parse_config({"model": {}}, "test").pretraining.attention_fp32 is False
