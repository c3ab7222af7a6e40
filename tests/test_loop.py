"""The shared training loop: schedules, seeded resumable data order, accumulation, precision, logging."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effbert.errors import InputError
from effbert.train.loop import (
    Execution,
    Optimisation,
    Reporting,
    SeededBatches,
    autocast_dtype,
    fit,
    keep_attention_fp32,
    warmup_decay,
)


def test_cosine_and_linear_schedules():
    cosine = warmup_decay(2, 10, "cosine")
    assert [cosine(s) for s in range(2)] == [0.5, 1.0]
    assert cosine(6) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert cosine(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_decay(0, 10, "linear")(5) == 0.5
    with pytest.raises(ValueError):
        warmup_decay(0, 10, "step")


def test_seeded_batches_shard_over_ranks_and_resume():
    def make(indices):
        return {"i": torch.from_numpy(indices)}

    one = iter(SeededBatches(make, 50, 8, seed=3))
    steps = [torch.cat([b["i"] for b in next(one)]) for _ in range(12)]  # 6 batches an epoch: 2 epochs
    for epoch in (steps[:6], steps[6:]):
        seen = torch.cat(epoch)
        assert len(set(seen.tolist())) == 48  # no example twice within an epoch
    assert not torch.equal(torch.sort(steps[0]).values, torch.sort(steps[6]).values)

    ranks = [iter(SeededBatches(make, 50, 8, seed=3, micro_batch=2, rank=r, world=2)) for r in range(2)]
    for step in range(12):
        parts = [next(r) for r in ranks]
        assert all(len(p) == 2 and all(len(b["i"]) == 2 for b in p) for p in parts)  # 4 rows a rank, 2 micro
        together = torch.cat([b["i"] for p in parts for b in p])
        assert torch.equal(torch.sort(together).values, torch.sort(steps[step]).values)

    source = SeededBatches(make, 50, 8, seed=3)
    it = iter(source)
    for _ in range(8):
        next(it)
    resumed = SeededBatches(make, 50, 8, seed=3)
    resumed.load_state_dict(source.state_dict())
    assert source.state_dict() == {"epoch": 1, "position": 2}
    assert torch.equal(next(iter(resumed))[0]["i"], next(it)[0]["i"])


def _regression(rows: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(rows, generator=g)


def _mse(model, batch):
    return F.mse_loss(model(batch["x"]).squeeze(-1), batch["y"]), {}


def test_micro_batches_equal_one_big_batch():
    x, y = _regression()
    results = []
    for micro in (16, 4, 5):  # 5: uneven micro-batches, weighted by their rows
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        batches = SeededBatches(lambda i: {"x": x[i], "y": y[i]}, 32, 16, seed=1, micro_batch=micro)
        records = fit(model, _mse, batches, Optimisation(steps=6, lr=0.1), report=Reporting(log_every=1))
        results.append(([r["loss"] for r in records], model.weight.detach().clone()))
    for losses, weight in results[1:]:
        assert losses == pytest.approx(results[0][0], rel=1e-5)
        assert torch.allclose(weight, results[0][1], rtol=1e-5, atol=1e-6)


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def forward(self, q):
        self.dtypes.append(q.dtype)
        return q @ q.transpose(-1, -2)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.mechanism = _Recorder()

    def forward(self, x):
        return self.mechanism(self.proj(x))


def test_attention_fp32_under_autocast():
    block = _Block()
    keys = set(block.state_dict())
    assert keep_attention_fp32(block, "cpu") == 1 and keep_attention_fp32(block, "cpu") == 0  # idempotent
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(torch.randn(2, 4))
    assert block.mechanism.dtypes == [torch.float32] and out.dtype == torch.float32
    assert set(block.state_dict()) == keys  # checkpoints unchanged
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cpu")) == torch.float16


def test_bf16_training_logs_jsonl_and_tensorboard(tmp_path):
    x, y = _regression()
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    batches = SeededBatches(lambda i: {"x": x[i], "y": y[i], "attention_mask": torch.ones(len(i), 3)}, 32, 8, 0)
    records = fit(model, _mse, batches, Optimisation(steps=20, lr=0.05, schedule="cosine"),
                  execution=Execution(precision="bf16"),
                  report=Reporting(log_every=5, metrics_path=tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb"))
    logged = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert logged == records and [r["step"] for r in logged] == [5, 10, 15, 20]
    assert logged[-1]["loss"] < logged[0]["loss"] and logged[-1]["tokens"] == 20 * 8 * 3
    assert np.isclose(logged[-1]["lr"], 0.0)
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        assert not (tmp_path / "tb").exists()
    else:
        assert any((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")  # a skipped fp16 step
def test_a_run_whose_weights_go_nan_stops_before_saving_them():
    """A loss that turns NaN at step 3 (a diverged run) makes the weights NaN: the run stops at its next logged or
    checkpointed step, naming it, and no checkpoint of NaN weights is ever handed over."""
    x, y = _regression()
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = []

    def diverging(model, batch):
        calls.append(1)
        loss, metrics = _mse(model, batch)
        return (loss * math.nan if len(calls) == 3 else loss), metrics

    saved = []
    batches = SeededBatches(lambda i: {"x": x[i], "y": y[i]}, 32, 8, 0)
    with pytest.raises(InputError, match="training diverged by step 4: the weights hold NaN"):
        fit(model, diverging, batches, Optimisation(steps=10, lr=0.05), report=Reporting(log_every=5),
            on_checkpoint=lambda step, state: saved.append(step), checkpoint_every=2)
    assert saved == [2]


def test_fp16_with_grad_scaler_trains():
    x, y = _regression()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    batches = SeededBatches(lambda i: {"x": x[i], "y": y[i]}, 32, 8, 0, micro_batch=4)
    records = fit(model, _mse, batches, Optimisation(steps=40, lr=0.05), execution=Execution(precision="fp16"),
                  report=Reporting(log_every=10))
    assert records[-1]["loss"] < 0.1 * records[0]["loss"]


REFAULTS = """
import resource, sys, torch
from effbert.train.device import reuse_freed_cpu_memory
if sys.argv[1] == "keep":
    assert reuse_freed_cpu_memory()
def minor_faults_of_a_step() -> int:  # a step's tensors: the last step's sizes, allocated, written, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.zeros(12 << 20) for _ in range(3)]  # 48 MiB each: above glibc's largest automatic mmap threshold
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(8):  # the first steps grow the heap to the step's working set
    minor_faults_of_a_step()
steady = [minor_faults_of_a_step() for _ in range(4)]
print(min(steady), max(steady))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_cpu_memory_is_reused_not_faulted_in_again():
    # glibc's default maps each block over 32 MiB anew and gives it back on free, so its 4 KiB pages fault in again
    # every step (3 x 12288 for 3 x 48 MiB); kept for reuse, once the heap holds a step's working set no step
    # faults any of them in again
    def faults(mode: str) -> tuple[int, int]:
        run = subprocess.run([sys.executable, "-c", REFAULTS, mode], capture_output=True, text=True, check=True)
        fewest, most = map(int, run.stdout.split())
        return fewest, most

    assert faults("default")[0] >= 3 * 12 * 1024 * 0.9
    assert faults("keep")[1] < 100
