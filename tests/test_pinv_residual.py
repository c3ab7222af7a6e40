"""Nystrom's pseudoinverse residual ||I - A Z||: its value against an explicit computation, and its logging
during LRA training (logged steps only, training unchanged)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from effbert.attention import build_attention
from effbert.config import parse_config
from effbert.data.lra.listops import generate_listops
from effbert.pipeline_config import ListopsSettings
from effbert.train import lra
from effbert.train.loop import Optimisation, Reporting, SeededBatches, fit
from helpers import random_qkv
from reference import lengths_mask


def nystrom_layer(m: int, iterations: int, init: str) -> nn.Module:
    cfg = parse_config({"model": {"hidden_size": 64, "num_heads": 2, "attention": {
        "type": "nystrom", "num_landmarks": m, "pinv_iterations": iterations, "pinv_init": init}}}, "test").model
    return build_attention(cfg)


def explicit_a_and_z(q: torch.Tensor, k: torch.Tensor, lengths: list[int], m: int, iterations: int,
                     per_head: bool) -> tuple[np.ndarray, np.ndarray]:
    """A (B, H, m, m) from segment means over each sequence's real tokens (n a multiple of m here), and Z after
    `iterations` steps of eq. (16) in float64 numpy from Z0 = A^T / (||A||_1 ||A||_inf)."""
    d = q.shape[-1]
    a = []
    for row, n in enumerate(lengths):
        q_land = q[row, :, :n].double().unflatten(-2, (m, n // m)).mean(-2).numpy()
        k_land = k[row, :, :n].double().unflatten(-2, (m, n // m)).mean(-2).numpy()
        scores = q_land @ k_land.transpose(0, 2, 1) / math.sqrt(d)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        a.append(e / e.sum(-1, keepdims=True))
    a = np.stack(a)
    norm_1, norm_inf = np.abs(a).sum(-2).max(-1), np.abs(a).sum(-1).max(-1)  # (B, H)
    scale = (norm_1 * norm_inf)[..., None, None] if per_head else norm_1.max() * norm_inf.max()
    z, eye = a.transpose(0, 1, 3, 2) / scale, np.eye(m)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return a, z


@pytest.mark.parametrize(("iterations", "init"), [(2, "original"), (3, "per_head"), (30, "per_head")])
def test_residual_is_that_of_the_iterations_z(iterations: int, init: str):
    m, lengths = 8, [40, 24]  # padded batch, every landmark real
    q, k, v = random_qkv(b=2, n=40, d=32, dtype=torch.float32, seed=4)
    layer = nystrom_layer(m, iterations, init)
    layer.record_residual = True
    layer(q, k, v, lengths_mask(lengths, 40))
    a, z = explicit_a_and_z(q, k, lengths, m, iterations, init == "per_head")
    r = np.eye(m) - a @ z
    spectral = np.linalg.norm(r, 2, axis=(-2, -1))
    rms = np.linalg.norm(r, "fro", axis=(-2, -1)) / math.sqrt(m)
    logged = layer.last_residual
    # the layer works in float32: its residual has a floor of ~1e-5 where float64's is ~1e-14
    np.testing.assert_allclose(logged["spectral"].numpy(), spectral, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(logged["rms"].numpy(), rms, rtol=1e-3, atol=1e-4)
    exact = np.linalg.norm(np.eye(m) - a @ np.linalg.pinv(a), 2, axis=(-2, -1))
    assert exact.max() < 1e-6  # these A are well conditioned: the exact inverse leaves no residual
    if iterations == 30:
        assert float(logged["spectral"].max()) < 1e-4  # enough iterations reach it
    else:
        assert spectral.min() > 1e-2  # a few do not: the logged number is Z's, not the exact inverse's


def test_no_residual_is_kept_unless_asked():
    q, k, v = random_qkv(b=2, n=40, d=32, dtype=torch.float32)
    layer = nystrom_layer(8, 6, "original")
    layer(q, k, v, lengths_mask([40, 24], 40))
    assert layer.last_residual is None


class _CountingProbe:
    """Notes at which forwards it was armed; returns the step numbers it saw armed."""

    def __init__(self):
        self.armed, self.forward_calls, self.armed_calls = False, 0, []

    def arm(self) -> None:
        self.armed = True

    def read(self) -> dict[str, float]:
        seen, self.armed = self.armed_calls[-1], False
        return {"probe_saw_call": float(seen)}


def test_the_loop_arms_the_probe_for_logged_steps_only():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    probe = _CountingProbe()

    def loss_fn(model, batch):
        probe.forward_calls += 1
        if probe.armed:
            probe.armed_calls.append(probe.forward_calls)
        return model(batch["x"]).pow(2).mean(), {}

    batches = SeededBatches(lambda i: {"x": x[i]}, 32, 8, seed=1)
    records = fit(nn.Linear(4, 1), loss_fn, batches, Optimisation(steps=7, lr=0.1),
                  report=Reporting(log_every=3, probe=probe))
    assert probe.armed_calls == [3, 6, 7]  # forward k is step k: steps 3 and 6, and the last
    assert [(r["step"], r["probe_saw_call"]) for r in records] == [(3, 3.0), (6, 6.0), (7, 7.0)]


def listops_data(root: Path) -> Path:
    generate_listops(root / "lra" / "listops-1000",
                     ListopsSettings(train=96, val=32, test=32, min_length=20, max_length=60, seed=5))
    return root / "lra"


def train_nystrom(root: Path, lra_dir: Path) -> list[dict]:
    folder = root / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model": {"attention": {"type": "nystrom", "num_landmarks": 8, "pinv_iterations": 2, "conv_kernel": 3}},
        "lra": {"listops": {"steps": 8, "eval_every": 4, "warmup_steps": 2, "lr": 3e-3, "batch_size": 16,
                            "max_len": 64, "hidden_size": 32, "ffn_size": 64, "num_heads": 2, "num_layers": 2}}}))
    lra.train_lra(folder, "listops", lra_dir, seed=1, device="cpu")
    text = (folder / "lra" / "listops" / "seed-1.metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_lra_logs_residuals_per_layer_without_changing_training(tmp_path: Path, monkeypatch):
    lra_dir = listops_data(tmp_path)
    logged = train_nystrom(tmp_path / "with", lra_dir)
    monkeypatch.setattr(lra.PinvResiduals, "arm", lambda self: None)  # never asked: no residual is computed
    plain = train_nystrom(tmp_path / "without", lra_dir)

    train = [r for r in logged if r["split"] == "train"]
    assert [r["step"] for r in train] == [4, 8]
    for record in train:
        for layer in (0, 1):
            mean, top = record[f"pinv_residual_{layer}"], record[f"pinv_residual_{layer}_max"]
            assert 0.0 < mean <= top and record[f"pinv_residual_{layer}_rms"] > 0.0
    assert not any(key.startswith("pinv") for r in plain for key in r)
    assert not any(key.startswith("pinv") for r in logged if r["split"] == "dev" for key in r)
    drop = {"seconds", "tokens_per_s"}
    without_residuals = [{k: v for k, v in r.items() if not k.startswith("pinv") and k not in drop} for r in logged]
    assert without_residuals == [{k: v for k, v in r.items() if k not in drop} for r in plain]
