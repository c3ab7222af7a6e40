"""Time and peak memory of one attention instance, forward + backward, against sequence length.

The setting follows the Nystromformer paper's Table 1 ("one instance" of self-attention, memory MB and
time ms per n): inputs q, k, v of shape (batch, heads, n, head_dim) with requires_grad, a padding mask
with every token real, one forward and one backward against a fixed random output gradient. A
mechanism with `mixes_hidden_states` (FNet) gets x: (batch, n, heads * head_dim) instead. Every
mechanism of effbert.attention.REGISTRY is built with its Options defaults and attention dropout 0, in
training mode; "softmax" is torch's scaled_dot_product_attention, the baseline of the same run, and
"naive-softmax" (explicit Q K^T, softmax, @ V) is the O(n^2) attention the paper compared against.

Time: the median of `repeats` forward+backward calls after `warmup` calls (CUDA synchronised around each).

Peak memory (MiB, 2^20 bytes): what one forward+backward needs beyond what existed before it (inputs,
output gradient, parameters); the input gradients it creates count.
- CUDA: torch.cuda.max_memory_allocated() over the timed calls, minus memory_allocated() before them.
- CPU: there is no allocator counter, so the memory of each (mechanism, n) is measured in a fresh
  process (forked from a server that has only imported torch; the time in another). There glibc is told
  to serve every block of 1 MiB or more by its own mmap, returned on free, so the resident set follows
  the live tensors; after the inputs are made and one forward+backward at n=32 has done the one-time
  allocations (thread pools, kernel caches: about 40 MiB), the process resets the kernel's resident-set
  high-water mark (writing "5" to /proc/self/clear_refs), runs one forward+backward at n, and reports
  VmHWM minus the VmRSS before it (both from /proc/self/status). ru_maxrss is not used: it cannot be
  reset, and in some sandboxes it misses large mmap'd allocations. Where clear_refs is not available
  the CPU peak is left empty. Below ~1 MiB the numbers are noise; the growth with n is what they are for.

A (mechanism, n) that fails (out of memory, unsupported length, timeout) gets a row with the error text;
after running out of memory or time, the longer lengths of that mechanism are not tried.
"""

from __future__ import annotations

import ctypes
import json
import math
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from effbert.files import atomic_path, write_text

COLUMNS = ["device", "dtype", "mechanism", "options", "n", "batch", "heads", "head_dim", "ms", "peak_mb",
           "time_vs_sdpa", "memory_vs_sdpa", "error"]
BASELINE = "softmax"
NAIVE = "naive-softmax"
MIB = 2**20


class NaiveSoftmaxAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with the n x n matrix materialised: the paper's baseline."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.softmax(scores.float(), -1).to(v.dtype) @ v


def _build(name: str, options: dict, heads: int, head_dim: int, max_len: int) -> tuple[nn.Module, dict]:
    """The mechanism and its resolved options (without 'type')."""
    if name == NAIVE:
        return NaiveSoftmaxAttention(), {}
    from effbert.attention import build_attention
    from effbert.config import parse_config

    model = {"max_seq_len": max_len, "hidden_size": heads * head_dim, "num_heads": heads,
             "dropout": 0.0, "attention_dropout": 0.0, "attention": {"type": name, **options}}
    cfg = parse_config({"model": model}, "bench").model
    resolved = cfg.attention.model_dump(mode="json")
    resolved.pop("type")
    return build_attention(cfg), resolved


# ---- one measurement: runs in this process (CUDA) or in a fresh child process (CPU) ----

def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
        return True
    except OSError:
        return False


def _prime(module: nn.Module, inputs: list[torch.Tensor], mask: torch.Tensor, n: int = 32) -> None:
    """One forward+backward at a short length: thread pools, kernel caches and other one-time allocations
    (about 40 MiB on CPU) happen here rather than inside the measured call."""
    small = [x[..., :n, :].detach().requires_grad_() if x.dim() == 4 else x[:, :n].detach().requires_grad_()
             for x in inputs]
    try:
        out = module(*small, mask[:, :n])
        torch.autograd.backward(out, torch.randn_like(out))  # not .sum(): an expanded gradient takes other kernels
    except Exception:  # a mechanism that cannot run short: the measured call will say why
        pass
    module.zero_grad(set_to_none=True)


def _return_large_frees_to_the_os() -> None:
    """glibc: serve every allocation of 1 MiB or more by its own mmap, given back on free, so that the
    resident set follows the live tensors. By default the threshold moves up to 32 MiB as blocks are
    freed, and freed heap blocks stay resident, fragmenting and overstating peaks of mid-sized tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops the moving)
    except (OSError, AttributeError):
        pass


def measure(spec: dict) -> dict:
    """Median ms and peak MiB of forward+backward for one (mechanism, n); raises what the mechanism raises.

    spec["part"] = "time" or "memory" measures only that (the CPU runs each in its own process), else both.
    """
    part = spec.get("part", "both")
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    b, h, n, d = spec["batch"], spec["heads"], spec["n"], spec["head_dim"]
    torch.manual_seed(spec["seed"])
    module, resolved = _build(spec["mechanism"], spec["options"], h, d, spec["max_len"])
    module = module.to(device).train()
    mask = torch.ones(b, n, dtype=torch.bool, device=device)
    if getattr(module, "mixes_hidden_states", False):
        inputs = [torch.randn(b, n, h * d, device=device, dtype=dtype, requires_grad=True)]
    else:
        inputs = [torch.randn(b, h, n, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    with torch.no_grad():
        grad_out = torch.randn_like(module(*inputs, mask))  # the output's shape, from a call without a graph

    def step() -> None:
        for x in [*inputs, *module.parameters()]:
            x.grad = None
        torch.autograd.backward(module(*inputs, mask), grad_out)

    cuda = device.type == "cuda"
    peak_mb = None
    if not cuda and part != "time":
        _prime(module, inputs, mask)
        before = _proc_status_kib("VmRSS")
        if _reset_rss_peak():
            step()
            peak_mb = (_proc_status_kib("VmHWM") - before) * 1024 / MIB
        if part == "memory":
            return {"peak_mb": peak_mb, "options": resolved}
    for _ in range(spec["warmup"]):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(spec["repeats"]):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated(device) - before) / MIB
    return {"ms": statistics.median(times), "peak_mb": peak_mb, "options": resolved}


def _measure_isolated(spec: dict, timeout_s: float | None) -> dict:
    """`measure` in a fresh process, so that its resident-set peak is its own.

    The process is forked from a server that has imported torch once (and run nothing), so a measurement
    costs milliseconds of start-up rather than seconds of imports.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    receive, send = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_worker, args=(spec, send), daemon=True)
    worker.start()
    send.close()  # so that receive sees end-of-file if the worker dies
    try:
        if not receive.poll(timeout_s):
            worker.kill()
            return {"error": f"timeout: over {timeout_s:g} s"}
        return receive.recv()
    except EOFError:
        worker.join()
        return {"error": f"worker died with exit code {worker.exitcode} (killed for memory?)"}
    finally:
        worker.join()
        receive.close()


def _worker(spec: dict, send: Connection) -> None:
    torch.set_num_threads(spec["threads"])
    if spec["part"] == "memory":
        _return_large_frees_to_the_os()
    try:
        result = measure(spec)
    except Exception as e:  # a failing mechanism is a result (an error row), not a crash of the benchmark
        result = {"error": _error_text(e)}
    send.send(result)


def _error_text(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one CSV-friendly line
    return f"{type(e).__name__}: {text}"[:300]


def _fatal_for_longer(error: str) -> bool:
    """Errors that only get worse with n: do not try the longer lengths."""
    text = error.lower()
    return "out of memory" in text or "can't allocate" in text or "timeout" in text or "killed" in text


# ---- the table ----

def _default_device() -> str:
    from effbert.train.device import pick_device

    return str(pick_device(None))


def bench_attention(
    out_csv: Path,
    plot: Path | None,
    *,
    device: str | None = None,
    lengths: list[int] | None = None,
    mechanisms: list[str] | None = None,
    options: dict[str, dict] | None = None,
    batch: int = 1,
    heads: int | None = None,
    head_dim: int = 64,
    dtype: str | None = None,
    repeats: int = 5,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
    timeout_s: float | None = 900.0,
) -> pd.DataFrame:
    """Benchmark every mechanism (default: the registry at call time, plus naive-softmax) at every length.

    Defaults differ by device: CPU lengths 512..4096, 4 heads, float32; GPU lengths 512..16384, 16
    heads, bfloat16 (the H100 anchors of published-results.md). `options` overrides a mechanism's
    Options defaults ({"nystrom": {"num_landmarks": 32}}). `threads` (CPU; default: torch's current
    setting, all cores unless set_threads lowered it) is passed to each worker process. `timeout_s`
    bounds one CPU measurement. Softmax is always measured, as the baseline of the ratios.
    """
    from effbert.attention import REGISTRY

    device = device or _default_device()
    cuda = torch.device(device).type == "cuda"
    lengths = sorted(lengths or [2**i for i in range(9, 15 if cuda else 13)])
    heads = heads or (16 if cuda else 4)
    dtype = dtype or ("bfloat16" if cuda else "float32")
    threads = threads or torch.get_num_threads()
    names = list(mechanisms or [*REGISTRY, NAIVE])
    if BASELINE not in names:
        names.insert(0, BASELINE)
    unknown = [m for m in names if m not in REGISTRY and m != NAIVE]
    if unknown:
        raise ValueError(f"unknown mechanisms {unknown}; registered: {[*REGISTRY, NAIVE]}")
    device_label = torch.cuda.get_device_name(torch.device(device)) if cuda else f"cpu ({threads} threads)"

    rows = []
    bar = tqdm(total=len(names) * len(lengths), desc="bench attention", unit="run", disable=None)
    with bar:
        for name in names:
            stop = None  # the error that ended this mechanism's longer lengths
            for n in lengths:
                bar.set_postfix_str(f"{name} n={n}")
                spec = {"device": device, "dtype": dtype, "mechanism": name, "options": (options or {}).get(name, {}),
                        "n": n, "batch": batch, "heads": heads, "head_dim": head_dim, "max_len": lengths[-1],
                        "repeats": repeats, "warmup": warmup, "seed": seed, "threads": threads}
                if stop:
                    result = {"error": f"skipped: {stop}"}
                elif cuda:
                    result = _measure_here(spec)
                else:  # memory and time each in a fresh process: the allocator settings differ
                    memory = _measure_isolated({**spec, "part": "memory"}, timeout_s)
                    result = memory if "error" in memory else {
                        **_measure_isolated({**spec, "part": "time"}, timeout_s), "peak_mb": memory["peak_mb"]}
                if "error" in result and _fatal_for_longer(result["error"]) and not stop:
                    stop = f"n={n} failed ({result['error'][:80]})"
                rows.append({"device": device_label, "dtype": dtype, "mechanism": name,
                             "options": json.dumps(result.get("options", spec["options"]), sort_keys=True),
                             "n": n, "batch": batch, "heads": heads, "head_dim": head_dim,
                             "ms": result.get("ms"), "peak_mb": result.get("peak_mb"),
                             "error": result.get("error", "")})
                bar.update()

    table = _with_ratios(pd.DataFrame(rows))
    write_text(out_csv, table.to_csv(index=False, float_format="%.6g"))
    if plot is not None:
        plot_efficiency(table, plot)
    return table


def _measure_here(spec: dict) -> dict:
    try:
        return measure(spec)
    except Exception as e:  # out of memory, unsupported length: an error row
        error = _error_text(e)
    # outside the except block the traceback, and the tensors its frames hold, are gone: give them back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"error": error}


def _with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """time_vs_sdpa, memory_vs_sdpa: each row against softmax (SDPA) at the same n."""
    table["ms"] = pd.to_numeric(table["ms"])
    table["peak_mb"] = pd.to_numeric(table["peak_mb"])
    base = table[table["mechanism"] == BASELINE].set_index("n")
    table["time_vs_sdpa"] = table["ms"] / table["n"].map(base["ms"])
    table["memory_vs_sdpa"] = table["peak_mb"] / table["n"].map(base["peak_mb"])
    return table[COLUMNS]


def plot_efficiency(table: pd.DataFrame, path: Path) -> None:
    """Two log-log panels, time and peak memory against n, one line per mechanism; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    ok = table[table["error"] == ""]
    for name, rows in ok.groupby("mechanism", sort=False):
        style = {"color": "black", "linewidth": 2.5} if name == BASELINE else {}
        if name == NAIVE:
            style = {"color": "black", "linestyle": "--", "linewidth": 2}
        label = "softmax (SDPA)" if name == BASELINE else name
        for ax, column in zip(axes, ["ms", "peak_mb"], strict=True):
            series = rows.dropna(subset=[column])
            if len(series):
                ax.plot(series["n"], series[column], marker="o", label=label, **style)
    first = table.iloc[0]
    for ax, ylabel in zip(axes, ["forward + backward time (ms, median)", "peak memory (MiB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"one attention instance, {first['device']}, {first['dtype']}, "
                 f"batch {first['batch']} x {first['heads']} heads x head dim {first['head_dim']}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)

