"""Pre-LN against Pre-RMSNorm and Pre-CRMSNorm: time of one training step (forward + backward) and of one
inference forward, measured in one run.

Jiang et al. (NeurIPS 2023) report Pre-RMSNorm and Pre-CRMSNorm 1-10% faster than Pre-LN (ViT-Ti
training 2.4% / 1.7%; 16-thread CPU inference 0.901 / 0.886 of Pre-LN's time; see
../shared/reference/published-results.md). Here: our PretrainingModel at BERT-base shape (12 layers, 768
wide, 12 heads, FFN 3072, vocabulary 30522, MLM + SOP heads) on random tokens, float32 on the CPU (bf16
autocast on a GPU, through `effbert bench gpu`). Rows are interleaved (LN, RMS, CRMS, LN, ...) so that
drift in the machine's speed falls on every setting alike. CPU times are the process's CPU time
(time.process_time), which other processes on a shared machine disturb far less than wall time; with one
torch thread it is the step's work. GPU times are wall time between device synchronisations. Each setting shows
the fastest of its repeats and the median, and ratios are against Pre-LN's in the same run. A second
table times one block norm alone (LayerNorm, RMSNorm, CRMSNorm on the same (batch, seq, d) input,
forward + backward and forward), the part of the step that differs.

    python -m effbert.bench.norms --threads 1 --seq 64 --batch 1 --repeats 7
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from effbert.bench.pretrain import BASE, synthetic_batch
from effbert.config import ModelConfig
from effbert.model.norms import block_norm
from effbert.model.pretraining import PretrainingModel

SETTINGS = ("pre", "pre_rmsnorm", "pre_crmsnorm")
PUBLISHED = {"pre_rmsnorm": "ViT-Ti training 2.4% faster; 16-thread CPU inference 0.901",
             "pre_crmsnorm": "ViT-Ti training 1.7% faster; 16-thread CPU inference 0.886"}
VOCAB = 30522


def _models(seq: int, shape: dict, device: torch.device) -> dict[str, PretrainingModel]:
    shape = shape | {"max_seq_len": max(seq, 2)}
    torch.manual_seed(0)
    return {norm: PretrainingModel(ModelConfig(**shape, norm=norm, dropout=0.0, attention_dropout=0.0),
                                   VOCAB).to(device) for norm in SETTINGS}


def _time(fn: Callable[[], None], calls: int = 1, device: torch.device | None = None) -> float:
    """Seconds per call: CPU time on the CPU, wall time between synchronisations on a GPU."""
    cuda = device is not None and device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    if cuda:
        torch.cuda.synchronize(device)
    start = clock()
    for _ in range(calls):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    return (clock() - start) / calls


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def bench_norm_layers(*, seq: int = 64, batch: int = 1, repeats: int = 7, calls: int = 50, shape: dict = BASE,
                      device: str = "cpu", dtype: torch.dtype | None = None) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of one block norm at the shape's width (BERT-base's): forward + backward ("train"),
    forward ("infer"); `dtype` is the input's (the dtype autocast hands a norm: it runs norms in float32)."""
    dev = torch.device(device)
    cfgs = {norm: ModelConfig(**shape, norm=norm) for norm in SETTINGS}
    norms = {norm: block_norm(cfg).to(dev) for norm, cfg in cfgs.items()}
    data = torch.randn(batch, seq, shape["hidden_size"], device=dev, dtype=dtype or torch.float32)
    inputs = {norm: data[..., :-1] if norm == "pre_crmsnorm" else data for norm in SETTINGS}  # the stored entries

    def train(norm: str) -> None:
        x = inputs[norm].clone().requires_grad_()
        norms[norm](x).sum().backward()

    def infer(norm: str) -> None:
        with torch.no_grad():
            norms[norm](inputs[norm])

    times: dict[str, dict[str, list[float]]] = {norm: {"train": [], "infer": []} for norm in SETTINGS}
    for _ in range(repeats + 1):  # the first round warms up
        for norm in SETTINGS:
            times[norm]["train"].append(_time(lambda n=norm: train(n), calls, dev))
            times[norm]["infer"].append(_time(lambda n=norm: infer(n), calls, dev))
    return {norm: {kind: ts[1:] for kind, ts in kinds.items()} for norm, kinds in times.items()}


def bench_norms(*, seq: int = 64, batch: int = 1, repeats: int = 7, shape: dict = BASE, device: str = "cpu",
                dtype: torch.dtype | None = None) -> dict[str, dict[str, list[float]]]:
    """Seconds of each repeat of a training step (forward + backward) and of an inference forward, per setting;
    under autocast to `dtype` when given (bf16 on a GPU, as pretraining runs)."""
    dev = torch.device(device)
    models = _models(seq, shape, dev)
    data = synthetic_batch(batch, seq, VOCAB, dev)

    def train_step(model: PretrainingModel) -> None:
        model.zero_grad(set_to_none=True)
        with _autocast(dev, dtype):
            loss = model(data)["loss"]
        loss.backward()

    def infer(model: PretrainingModel) -> None:
        with torch.no_grad(), _autocast(dev, dtype):
            model.encoder(data["input_ids"], data["attention_mask"], data["token_type_ids"])

    times: dict[str, dict[str, list[float]]] = {norm: {"train": [], "infer": []} for norm in SETTINGS}
    for norm in SETTINGS:  # warm-up: allocator growth, first-call dispatch
        train_step(models[norm])
        infer(models[norm])
    for _ in range(repeats):
        for norm in SETTINGS:
            times[norm]["train"].append(_time(lambda m=models[norm]: train_step(m), device=dev))
            times[norm]["infer"].append(_time(lambda m=models[norm]: infer(m), device=dev))
    return times


def table(times: dict[str, dict[str, list[float]]], unit: str = "s") -> str:
    """Fastest and median times per setting ("s" or "us"), each with its ratio to Pre-LN's."""
    scale = {"s": 1.0, "us": 1e6}[unit]
    lines = [f"| norm | train ({unit}): min, median | ratio: min, median | inference ({unit}): min, median | "
             "ratio: min, median | published (Pre-LN = 1) |", "|---|---|---|---|---|---|"]
    base = times["pre"]
    for norm, kinds in times.items():
        cells = []
        for kind in ("train", "infer"):
            low, mid = min(kinds[kind]), statistics.median(kinds[kind])
            ratios = (low / min(base[kind]), mid / statistics.median(base[kind]))
            cells += [f"{low * scale:.3f}, {mid * scale:.3f}", f"{ratios[0]:.3f}, {ratios[1]:.3f}"]
        lines.append(f"| {norm} | {' | '.join(cells)} | {PUBLISHED.get(norm, '1')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="interleaved timings per setting (median taken)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"BERT-base shape, float32 CPU, {a.threads} threads, batch {a.batch} x {a.seq} tokens, "
          f"{a.repeats} interleaved repeats")
    print(table(bench_norms(seq=a.seq, batch=a.batch, repeats=a.repeats)))
    print("\nOne block norm alone (per call; train = forward + backward):")
    print(table(bench_norm_layers(seq=a.seq, batch=a.batch, repeats=a.repeats), unit="us"))


if __name__ == "__main__":
    main()
