"""Time and peak memory of one attention instance, forward + backward, against sequence length.

The setting follows the Nystromformer paper's Table 1 ("one instance" of self-attention, memory MB and
time ms per n): inputs q, k, v of shape (batch, heads, n, head_dim) with requires_grad (laid out as the encoder's
projections give them: heads transposed as a view of (batch, n, heads, head_dim)), a padding mask
with every token real, one forward and one backward against a fixed random output gradient. A
mechanism with `mixes_hidden_states` (FNet) gets x: (batch, n, heads * head_dim) instead. Every
mechanism of effbert.attention.REGISTRY is built with its Options defaults and attention dropout 0, in
training mode; "softmax" is torch's scaled_dot_product_attention, the baseline of the same run, and
"naive-softmax" (explicit Q K^T, softmax, @ V) is the O(n^2) attention the paper compared against.

Every token is real, so a mechanism is called with mask None, as the encoder calls it for a batch
without padding (effbert.attention.padding_mask). bfloat16 / float16 mean torch.autocast with float32
parameters, as in training.

Layer mode (`layer=True`, `--layer`): each row is a whole self-attention layer, x (batch, n, heads *
head_dim) in and out: our effbert.model.encoder.SelfAttention (q, k, v and output projections around the
mechanism) and, as peers measured in the same run, transformers' NystromformerSelfAttention and
YosoSelfAttention ("hf-nystromformer", "hf-yoso"; configured like our "nystrom" and "yoso" rows: the
same landmarks, conv kernel, hash bits and hashes) with an output projection added, so that each row
does the same work. Without transformers, or where a peer cannot run (transformers' LSH YOSO needs its
CUDA kernels), the peer's rows carry the error.

Time: the median of `repeats` forward+backward calls after `warmup` calls (CUDA synchronised around each).
On the CPU its process keeps freed memory for reuse, as training on the CPU does
(effbert.train.device.reuse_freed_cpu_memory), so that a step does not pay to map its tensors' pages again.

Peak memory (MiB, 2^20 bytes): what one forward+backward needs beyond what existed before it (inputs,
output gradient, parameters); the input gradients it creates count.
- CUDA: torch.cuda.max_memory_allocated() over the timed calls, minus memory_allocated() before them.
- CPU: there is no allocator counter, so the memory of each (mechanism, n) is measured in a fresh
  process (forked from a server that has only imported torch; the time in another). There glibc is told
  to serve every block of 1 MiB or more by its own mmap, returned on free, so the resident set follows
  the live tensors; after the inputs are made and one forward+backward at min(256, n / 2) tokens has done
  the one-time allocations (thread pools, kernel caches: about 40 MiB), the process resets the kernel's resident-set
  high-water mark (writing "5" to /proc/self/clear_refs), runs one forward+backward at n, and reports
  VmHWM minus the VmRSS before it (both from /proc/self/status). ru_maxrss is not used: it cannot be
  reset, and in some sandboxes it misses large mmap'd allocations. Where clear_refs is not available
  the CPU peak is left empty. Below ~1 MiB the numbers are noise; the growth with n is what they are for.

A (mechanism, n) that fails (out of memory, unsupported length, timeout) gets a row with the error text;
after running out of memory or time, the longer lengths of that mechanism are not tried.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from effbert.config import ConfigError
from effbert.errors import InputError
from effbert.files import atomic_path, write_text
from effbert.pipeline_config import NAIVE_SOFTMAX, EfficiencyConfig

# variant: the row's name, the mechanism's own or the label of a variant of it (options with "type": see
# bench_attention); mechanism: what ran; options: every option it ran with, defaults resolved, which is what
# effbert.report.efficiency matches a paper row by
COLUMNS = ["device", "dtype", "unit", "mechanism", "variant", "options", "n", "batch", "heads", "head_dim", "ms",
           "peak_mb", "time_vs_sdpa", "memory_vs_sdpa", "error"]
BASELINE = "softmax"
NAIVE = NAIVE_SOFTMAX
REPEATS = EfficiencyConfig.model_fields["repeats"].default  # declared once, with the DAG's setting of it
MIB = 2**20
# bfloat16 / float16: torch.autocast with float32 parameters, as in training; float32 / float64: everything in it
DTYPES = ("float32", "bfloat16", "float16", "float64")


class NaiveSoftmaxAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with the n x n matrix materialised: the paper's baseline."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.softmax(scores.float(), -1).to(v.dtype) @ v


def _model_config(name: str, options: dict, heads: int, head_dim: int, max_len: int):
    from effbert.config import parse_config

    model = {"max_seq_len": max_len, "hidden_size": heads * head_dim, "num_heads": heads,
             "dropout": 0.0, "attention_dropout": 0.0, "attention": {"type": name, **options}}
    return parse_config({"model": model}, "bench").model


def _build(name: str, options: dict, heads: int, head_dim: int, n: int, max_len: int,
           layer: bool = False) -> tuple[nn.Module, dict]:
    """The mechanism (or, with `layer`, the whole self-attention layer around it) and its resolved options."""
    if name in PEERS:
        return PEERS[name](options, heads, head_dim, n)
    cfg = _model_config("softmax" if name == NAIVE else name, {} if name == NAIVE else options, heads, head_dim,
                        max_len)
    resolved = {} if name == NAIVE else {k: v for k, v in cfg.attention.model_dump(mode="json").items() if k != "type"}
    if layer:
        from effbert.model.encoder import SelfAttention

        module = SelfAttention(cfg, {})
        if name == NAIVE:
            module.mechanism = NaiveSoftmaxAttention()
        return module, resolved
    if name == NAIVE:
        return NaiveSoftmaxAttention(), resolved
    from effbert.attention import build_attention

    return build_attention(cfg), resolved


# ---- transformers' layers as peers (layer mode only) ----
# Each peer mirrors the options of our mechanism of the same method (hf-nystromformer those of "nystrom",
# hf-yoso those of "yoso"), so the two rows do the same work. transformers' self-attention layers hold the
# q, k, v projections but not the output projection (it sits in their SelfOutput, with the residual and
# LayerNorm); the peer gets an output nn.Linear, as our SelfAttention has, so both rows count
# 4 projections + the mechanism.

class _PeerLayer(nn.Module):
    """x (B, N, hidden) -> transformers' self-attention layer -> output projection -> (B, N, hidden)."""

    def __init__(self, attention: nn.Module, hidden: int, ones_mask: bool):
        super().__init__()
        self.attention = attention
        self.output = nn.Linear(hidden, hidden)
        self.ones_mask = ones_mask  # YOSO's layer needs a (B, N) mask of ones; Nystromformer's takes None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], device=x.device, dtype=x.dtype) if self.ones_mask else None
        return self.output(self.attention(x, mask)[0])


def _hf_nystromformer(options: dict, heads: int, head_dim: int, n: int) -> tuple[nn.Module, dict]:
    from transformers import NystromformerConfig
    from transformers.models.nystromformer.modeling_nystromformer import NystromformerSelfAttention

    ours = _model_config("nystrom", options, heads, head_dim, n).attention
    # transformers reshapes the sequence into num_landmarks segments of segment_means_seq_len / num_landmarks:
    # the length must be set per n (and be a multiple of the landmarks); its pseudoinverse runs 6 iterations
    cfg = NystromformerConfig(hidden_size=heads * head_dim, num_attention_heads=heads, num_landmarks=ours.num_landmarks,
                              segment_means_seq_len=n, conv_kernel_size=ours.conv_kernel or 1,
                              attention_probs_dropout_prob=0.0)
    attention = NystromformerSelfAttention(cfg)
    if ours.conv_kernel is None:  # its config refuses None; the layer itself reads None as "no convolution"
        attention.conv_kernel_size = None
        del attention.conv
    resolved = {"num_landmarks": cfg.num_landmarks, "segment_means_seq_len": n, "conv_kernel_size": ours.conv_kernel}
    return _PeerLayer(attention, heads * head_dim, ones_mask=False), resolved


def _hf_yoso(options: dict, heads: int, head_dim: int, n: int) -> tuple[nn.Module, dict]:
    # its kernels come from the Hugging Face hub: never reach for the network (none at run time), fail at once
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import YosoConfig
    from transformers.models.yoso import modeling_yoso

    ours = _model_config("yoso", options, heads, head_dim, n).attention
    cfg = YosoConfig(hidden_size=heads * head_dim, num_attention_heads=heads, hash_code_len=ours.hash_bits,
                     num_hash=ours.num_hashes, conv_window=ours.conv_kernel, use_expectation=ours.expectation,
                     use_fast_hash=ours.fast_hash, lsh_backward=True, attention_probs_dropout_prob=0.0)
    resolved = {"hash_code_len": cfg.hash_code_len, "num_hash": cfg.num_hash, "conv_window": cfg.conv_window,
                "use_expectation": cfg.use_expectation, "use_fast_hash": cfg.use_fast_hash}
    attention = modeling_yoso.YosoSelfAttention(cfg)  # tries to load its CUDA kernels
    if not ours.expectation and modeling_yoso.lsh_cumulation is None:
        raise RuntimeError("transformers' LSH YOSO needs its CUDA kernels (kernels-community/yoso, "
                           "use_expectation false), which are not loaded here")
    return _PeerLayer(attention, heads * head_dim, ones_mask=True), resolved


PEERS = {"hf-nystromformer": _hf_nystromformer, "hf-yoso": _hf_yoso}
PEER_OF = {"hf-nystromformer": "nystrom", "hf-yoso": "yoso"}
PEER_MODULES = ["transformers.models.nystromformer.modeling_nystromformer", "transformers.models.yoso.modeling_yoso"]


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


def _prime(module: nn.Module, inputs: list[torch.Tensor], mask: torch.Tensor | None, n: int) -> None:
    """One forward+backward at a short length: thread pools, kernel caches and other one-time allocations
    (about 40 MiB on CPU) happen here rather than inside the measured call. The length (256 when the
    measured one is 512 or more) is past the defaults' landmarks, windows and buckets (64), so that each
    mechanism primes the code path it is measured on (at 32 tokens Nystrom-64 computes exact softmax);
    it stays below the measured length, whose own allocations must not be primed away."""
    small = [x[..., :n, :].detach().requires_grad_() if x.dim() == 4 else x[:, :n].detach().requires_grad_()
             for x in inputs]
    try:
        out = module(*small, None if mask is None else mask[:, :n])
        torch.autograd.backward(out, torch.randn_like(out))  # not .sum(): an expanded gradient takes other kernels
    except Exception:  # a mechanism that cannot run short: the measured call will say why
        pass
    module.zero_grad(set_to_none=True)


def measure(spec: dict) -> dict:
    """Median ms and peak MiB of forward+backward for one (mechanism, n); raises what the mechanism raises.

    spec["part"] = "time" or "memory" measures only that (the CPU runs each in its own process), else both.
    spec["layer"]: the whole self-attention layer, x (B, N, heads * head_dim) in and out, projections included.
    spec["budget_s"]: when the first call takes longer, a TimeoutError; else the repeats are cut to fit it.
    bfloat16 / float16 run as training does: torch.autocast with float32 parameters; a mechanism gets q, k, v
    in that dtype (what the projections give under autocast), a layer gets float32 x (the residual stream).
    """
    from effbert.attention import padding_mask

    part = spec.get("part", "both")
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    b, h, n, d = spec["batch"], spec["heads"], spec["n"], spec["head_dim"]
    layer = spec.get("layer", False)
    torch.manual_seed(spec["seed"])
    module, resolved = _build(spec["mechanism"], spec["options"], h, d, n, spec["max_len"], layer)
    module = module.to(device).train()
    amp = dtype in (torch.bfloat16, torch.float16)
    if not amp:
        module = module.to(dtype)
    # every token is real: the mechanism gets mask None, as the encoder gives it for a batch without padding
    mask = padding_mask(torch.ones(b, n, dtype=torch.bool, device=device))
    inputs = _random_inputs(module, b, h, n, d, device, dtype, amp=amp, layer=layer)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=amp)

    with torch.no_grad(), autocast():
        grad_out = torch.randn_like(module(*inputs, mask))  # the output's shape, from a call without a graph

    def step() -> None:
        for x in [*inputs, *module.parameters()]:
            x.grad = None
        with autocast():
            out = module(*inputs, mask)
        torch.autograd.backward(out, grad_out)

    cuda = device.type == "cuda"
    peak_mb = None
    if not cuda and part != "time":
        peak_mb = _cpu_peak_mb(module, inputs, mask, n, step)
        if part == "memory":
            return {"peak_mb": peak_mb, "options": resolved}
    ms, cuda_peak_mb = _time_steps(step, device, spec["repeats"], spec["warmup"], spec.get("budget_s"))
    return {"ms": ms, "peak_mb": cuda_peak_mb if cuda else peak_mb, "options": resolved}


def _random_inputs(module: nn.Module, b: int, h: int, n: int, d: int, device: torch.device, dtype: torch.dtype, *,
                   amp: bool, layer: bool) -> list[torch.Tensor]:  # fmt: skip
    """The call's inputs, requiring gradients: x (B, N, h * d) for a layer (float32 under autocast: the residual
    stream) or a mechanism that mixes hidden states (FNet); else q, k, v (B, h, N, d), drawn in that order.

    q, k and v are laid out as the encoder hands them over: (B, N, h, d) in memory, the heads split off the
    projections' output and transposed as a view (model/encoder.py). Their gradients keep that layout, as
    in training; contiguous (B, h, N, d) leaves would add a layout copy of each gradient that runs never make.
    """
    if layer:
        return [torch.randn(b, n, h * d, device=device, dtype=torch.float32 if amp else dtype, requires_grad=True)]
    if getattr(module, "mixes_hidden_states", False):
        return [torch.randn(b, n, h * d, device=device, dtype=dtype, requires_grad=True)]
    return [torch.randn(b, n, h, d, device=device, dtype=dtype).transpose(1, 2).requires_grad_() for _ in range(3)]


def _cpu_peak_mb(module: nn.Module, inputs: list[torch.Tensor], mask: torch.Tensor | None, n: int,
                 step: Callable[[], None]) -> float | None:  # fmt: skip
    """The resident-set growth (MiB) of one `step` after priming; None where the peak cannot be reset."""
    _prime(module, inputs, mask, min(256, n // 2))
    before = _proc_status_kib("VmRSS")
    if not _reset_rss_peak():
        return None
    step()
    return (_proc_status_kib("VmHWM") - before) * 1024 / MIB


def _time_steps(step: Callable[[], None], device: torch.device, repeats: int, warmup: int,
                budget: float | None) -> tuple[float, float | None]:  # fmt: skip
    """Median ms of `repeats` timed steps after `warmup` untimed ones, and on CUDA their peak MiB beyond what
    was allocated before them (None elsewhere). With a budget (s), a first timed step that takes longer
    raises TimeoutError; else it counts as one warm-up and the repeats are cut to fit the budget."""
    cuda = device.type == "cuda"
    if budget:  # one timed call decides whether this length fits the budget, and how many repeats do
        first = _timed(step, device)
        if first > budget * 1000:
            raise TimeoutError(f"timeout: one forward+backward took {first / 1000:.3g} s, over the budget of "
                               f"{budget:g} s")
        repeats = max(1, min(repeats, int(budget * 1000 / first)))
        warmup = max(0, warmup - 1)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    times = [_timed(step, device) for _ in range(repeats)]
    peak_mb = (torch.cuda.max_memory_allocated(device) - before) / MIB if cuda else None
    return statistics.median(times), peak_mb


def _timed(step, device: torch.device) -> float:
    """Milliseconds of one call, CUDA synchronised on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


def _measure_isolated(spec: dict, timeout_s: float | None, preload: list[str]) -> dict:
    """`measure` in a fresh process, so that its resident-set peak is its own.

    The process is forked from a server that has imported torch once (and run nothing), so a measurement
    costs milliseconds of start-up rather than seconds of imports.
    """
    ctx = multiprocessing.get_context("forkserver")
    # imported once by the server, not by every worker (the list counts only before the server's first start);
    # torch._dynamo: padding_mask asks torch.compiler.is_compiling(), whose first call imports it (seconds)
    ctx.set_forkserver_preload([__name__, "effbert.attention", "effbert.model.encoder", "torch._dynamo", *preload])
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
    from effbert.train.device import return_large_frees_to_the_os, reuse_freed_cpu_memory

    if spec["part"] == "memory":
        return_large_frees_to_the_os()
    else:  # time as training runs on the CPU (train/loop.py): freed blocks kept for the next step
        reuse_freed_cpu_memory()
    try:
        result = measure(spec)
    except Exception as e:  # a failing mechanism is a result (an error row), not a crash of the benchmark
        result = {"error": error_text(e)}
    send.send(result)


def error_text(e: BaseException) -> str:
    """An error row's text: the exception's type and message on one line, at most 300 characters."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one CSV-friendly line
    return f"{type(e).__name__}: {text}"[:300]


def _fatal_for_longer(error: str) -> bool:
    """Errors that only get worse with n, or do not depend on it: do not try the longer lengths."""
    text = error.lower()
    return any(s in text for s in ("out of memory", "can't allocate", "timeout", "killed",
                                   "cuda kernels", "no module named"))  # the last two: a peer that cannot run


# ---- the table ----

def _checked_device(device: str | None) -> str:
    from effbert.train.device import pick_device

    return str(pick_device(device))


def bench_attention(
    out_csv: Path | None,
    plot: Path | None,
    *,
    device: str | None = None,
    lengths: list[int] | None = None,
    mechanisms: list[str] | None = None,
    options: dict[str, dict] | None = None,
    layer: bool = False,
    batch: int = 1,
    heads: int | None = None,
    head_dim: int = 64,
    dtype: str | None = None,
    repeats: int = REPEATS,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
    timeout_s: float | None = 900.0,
    budget_s: float | None = None,
    total_budget_s: float | None = None,
    max_len: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Benchmark every mechanism (default: the registry at call time, plus naive-softmax) at every length.

    Defaults differ by device: CPU lengths 512..4096, 4 heads, float32; GPU lengths 512..16384, 16
    heads, bfloat16 (the H100 anchors of published-results.md). `options` overrides a mechanism's
    Options defaults ({"nystrom": {"num_landmarks": 32}}); an entry under a label of its own whose "type" names
    a mechanism is a variant, a row of its own beside the mechanism's ({"nystrom-32": {"type": "nystrom",
    "num_landmarks": 32}}), named by its label in the csv's `variant` column and in `mechanisms` (default: each
    variant after its mechanism; one that an explicit `mechanisms` leaves out is not measured, as configs merge
    theirs). `layer` measures whole self-attention layers (x in and out, q/k/v/output projections included) and
    adds transformers' layers as peers (PEERS, with the options of our mechanism of the same method). `threads`
    (CPU; default: torch's current setting, all cores unless set_threads lowered it) is passed to each worker
    process. `timeout_s`
    bounds one CPU measurement; `budget_s` the timed calls of one measurement (see `measure`);
    `total_budget_s` the whole table: what is left when it runs out becomes error rows. `max_len`
    ({"naive-softmax": 16384}) skips a mechanism's longer lengths. Softmax is always measured, as the
    baseline of the ratios. The table is written to `out_csv` when given.
    """
    # every setting is checked here, before anything runs: bad input is one InputError naming it, never a table
    # of error rows (a failing measurement, out of memory or an unsupported length, is a row)
    device = _checked_device(device)  # a device this machine has, else one line naming it
    cuda = torch.device(device).type == "cuda"
    _check_settings(lengths=lengths, repeats=repeats, warmup=warmup, batch=batch, heads=heads, head_dim=head_dim,
                    threads=threads)
    lengths = sorted(lengths or [2**i for i in range(9, 15 if cuda else 13)])
    heads = heads or (16 if cuda else 4)
    dtype = dtype or ("bfloat16" if cuda else "float32")
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)} (bfloat16 and float16 run under "
                         "autocast, as in training)")
    threads = threads or torch.get_num_threads()
    if options is not None and not isinstance(options, dict):
        raise InputError(f"options: expected an object mapping mechanism names (or variants' labels) to objects of "
                         f"options, e.g. {{\"nystrom\": {{\"num_landmarks\": 32}}}}; got {options!r}")
    _check_outputs(out_csv, plot)
    variants = _variants(options)
    rows_of = _row_mechanisms(mechanisms, variants, layer)
    max_seq_len = max(lengths[-1], 2)  # a model's least max_seq_len: n = 1 runs too
    _check_options({**{label: label for label in options or {}}, **variants, **rows_of}, options, heads, head_dim,
                   max_seq_len)
    settings = {"device": device, "dtype": dtype, "batch": batch, "heads": heads, "head_dim": head_dim,
                "max_len": max_seq_len, "layer": layer, "repeats": repeats, "warmup": warmup, "seed": seed,
                "threads": threads, "budget_s": budget_s}  # fmt: skip
    rows = _measure_all(rows_of, lengths, settings, options, timeout_s=timeout_s, max_len=max_len,
                        total_budget_s=total_budget_s)
    labels = list(rows_of)
    rows.sort(key=lambda row: labels.index(row["variant"]))  # stable: by row name, then n

    table = _with_ratios(pd.DataFrame(rows))
    if out_csv is not None:
        write_text(out_csv, table.to_csv(index=False, float_format="%.6g"))
    if plot is not None:
        plot_efficiency(table, plot)
    return table


def _check_settings(*, lengths: list[int] | None, repeats: int, warmup: int, batch: int, head_dim: int,
                    heads: int | None, threads: int | None) -> None:
    """Lengths (when given) are positive integers; repeats, batch and head_dim at least 1, warmup at least 0;
    heads and threads at least 1 or unset (None or 0: the device's default). An InputError naming the setting
    otherwise."""
    def whole(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    bad = [n for n in lengths or [] if not whole(n) or n < 1]
    if bad:
        raise InputError(f"lengths: expected positive integers (sequence lengths n), got {bad}")
    least = {"repeats": (repeats, 1), "warmup": (warmup, 0), "batch": (batch, 1), "head_dim": (head_dim, 1),
             "heads": (heads or 1, 1), "threads": (threads or 1, 1)}
    for name, (value, at_least) in least.items():
        if not whole(value) or value < at_least:
            raise InputError(f"{name}: expected an integer >= {at_least}, got {value!r}")


def _check_outputs(out_csv: Path | None, plot: Path | None) -> None:
    """The outputs are files: a folder in their place would fail only after the whole run."""
    for name, path, what in (("out", out_csv, "the csv"), ("plot", plot, "the png")):
        if path is not None and Path(path).is_dir():
            raise InputError(f"{name} {str(path)!r}: a folder; expected the path of {what}")


def _check_options(runs: dict[str, str], options: dict[str, dict] | None, heads: int, head_dim: int,
                   max_seq_len: int) -> None:
    """Each row's options (`runs`: row name or options entry -> what it runs) through the validation a model's
    config.json gets, once, before anything runs: a misspelt key or an impossible value is an InputError naming the
    entry and the key, not a table of error rows. A peer's options are those of our mechanism of its method."""
    for label, name in runs.items():
        given = _options_of(label, options)
        if name == NAIVE:
            if given:
                raise InputError(f"options {label!r}: {NAIVE} has no options (it is softmax written out), got "
                                 f"{sorted(given)}")
            continue
        kind = PEER_OF.get(name, name)
        of = "" if kind == label else f" ({kind})"
        try:
            _model_config(kind, given, heads, head_dim, max_seq_len)
        except ConfigError as e:  # named after the options entry, not the model config made from it
            found = "; ".join(problem.removeprefix("model.attention.") for problem in e.problems)
            raise InputError(f"options {label!r}{of}: {found}") from None


def _variants(options: dict[str, dict] | None) -> dict[str, str]:
    """label -> mechanism of the entries of `options` that are variants: a label of their own, the mechanism in
    "type". An entry named after a mechanism (or a peer, or naive-softmax) holds that row's own options. Anything
    else is a ValueError, checked before anything runs: a misspelt name would otherwise be a silent default."""
    from effbert.attention import REGISTRY

    variants = {}
    for label, given in (options or {}).items():
        if not isinstance(given, dict):
            raise ValueError(f"options {label!r}: expected an object of options, got {given!r}")
        kind = given.get("type", label)
        if not isinstance(kind, str):
            raise ValueError(f"options {label!r}: \"type\" names a mechanism, one of {[*REGISTRY]}; got {kind!r}")
        if label in REGISTRY or label in PEERS or label == NAIVE:
            if kind != label:
                raise ValueError(f"options {label!r}: a mechanism's own name holds its own options, not a variant "
                                 f"of {kind!r}; give the variant a label of its own")
        elif kind in REGISTRY:
            variants[label] = kind
        else:
            raise ValueError(f"options {label!r}: neither a mechanism nor a variant of one (a variant names its "
                             f"mechanism in \"type\", one of {[*REGISTRY]})")
    return variants


def _row_mechanisms(mechanisms: list[str] | None, variants: dict[str, str], layer: bool) -> dict[str, str]:
    """Row name -> the mechanism it runs, in table order, softmax (the baseline) always among them; default: every
    registered mechanism (each followed by its variants, then its peers in layer mode), then naive-softmax.
    Unknown names, and peers without `layer`, are a ValueError."""
    from effbert.attention import REGISTRY

    peers_of = {ours: [p for p in PEERS if layer and PEER_OF[p] == ours] for ours in REGISTRY}
    mine = {ours: [label for label, kind in variants.items() if kind == ours] for ours in REGISTRY}
    names = list(mechanisms or [*(m for ours in REGISTRY for m in [ours, *mine[ours], *peers_of[ours]]), NAIVE])
    if BASELINE not in names:
        names.insert(0, BASELINE)
    runs = {**{m: m for m in [*REGISTRY, NAIVE, *PEERS]}, **variants}
    unknown = [m for m in names if m not in runs]
    if unknown:
        raise ValueError(f"unknown mechanisms {unknown}; registered: {[*REGISTRY, NAIVE]}, peers: {[*PEERS]}, "
                         f"variants: {[*variants]}")
    if not layer and any(m in PEERS for m in names):
        raise ValueError(f"{[m for m in names if m in PEERS]} are whole layers (projections included): "
                         "measure them with layer=True (--layer)")
    return {name: runs[name] for name in names}


def _measure_all(names: dict[str, str], lengths: list[int], settings: dict, options: dict[str, dict] | None, *,
                 timeout_s: float | None, max_len: dict[str, int] | None,
                 total_budget_s: float | None) -> list[dict]:  # fmt: skip
    """One row per (length, row name), in that order: measured, or an error row when it failed or was skipped.
    `names`: row name -> mechanism (_row_mechanisms); `settings` are the measurements' common spec (see `measure`)."""
    device, dtype, layer = settings["device"], settings["dtype"], settings["layer"]
    cuda = torch.device(device).type == "cuda"
    device_label = torch.cuda.get_device_name(torch.device(device)) if cuda else f"cpu ({settings['threads']} threads)"
    preload = PEER_MODULES if any(m in PEERS for m in names) else []
    unit = "layer" if layer else "mechanism"
    deadline = None if total_budget_s is None else time.monotonic() + total_budget_s

    rows = []
    stops: dict[str, str] = {}  # row name -> the error that ended its longer lengths
    interactive = sys.stderr.isatty()  # a bar on a terminal; in a log (the DAG's rule) one line per measurement
    bar = tqdm(total=len(names) * len(lengths), desc=f"bench attention ({unit})", unit="run", disable=not interactive)
    with bar:
        # length by length, so that a time budget running out cuts the longest lengths of every mechanism
        for n in lengths:
            for label, name in names.items():
                bar.set_postfix_str(f"{label} n={n}")
                spec = {"device": device, "dtype": dtype, "mechanism": name, "options": _options_of(label, options),
                        "n": n, **{k: v for k, v in settings.items() if k not in ("device", "dtype")}}
                skipped = _skip_reason(label, name, n, stops, max_len, deadline, total_budget_s)
                result = {"error": skipped} if skipped else _measure_spec(spec, cuda, timeout_s, preload)
                if "error" in result and _fatal_for_longer(result["error"]) and label not in stops:
                    stops[label] = f"n={n} failed ({result['error'][:80]})"
                resolved = result.get("options", spec["options"])  # the worker's, defaults included
                rows.append({"device": device_label, "dtype": dtype, "unit": unit, "mechanism": name,
                             "variant": label, "options": json.dumps(resolved, sort_keys=True),
                             "n": n, "batch": spec["batch"], "heads": spec["heads"], "head_dim": spec["head_dim"],
                             "ms": result.get("ms"), "peak_mb": result.get("peak_mb"),
                             "error": result.get("error", "")})
                bar.update()
                if not interactive:
                    print(f"bench attention ({unit}) {len(rows)}/{bar.total}: {_progress_line(label, n, result)}",
                          file=sys.stderr, flush=True)
    return rows


def _progress_line(name: str, n: int, result: dict) -> str:
    if "error" in result:
        return f"{name} n={n}: {result['error'][:120]}"
    memory = "" if result.get("peak_mb") is None else f", {result['peak_mb']:.1f} MiB"
    return f"{name} n={n}: {result['ms']:.2f} ms{memory}"


def _skip_reason(label: str, name: str, n: int, stops: dict[str, str], max_len: dict[str, int] | None,
                 deadline: float | None, total_budget_s: float | None) -> str | None:  # fmt: skip
    """Why (row `label` of mechanism `name`, n) is not measured: an earlier length of the row failed for good, it is
    past the row's max_len (else its mechanism's), or the table's time budget ran out; None to measure it."""
    limit = (max_len or {}).get(label, (max_len or {}).get(name))
    if label in stops:
        return f"skipped: {stops[label]}"
    if limit is not None and n > limit:
        return f"skipped: {label} is not run beyond n={limit}"
    if deadline is not None and time.monotonic() > deadline:
        return f"skipped: the table's time budget of {total_budget_s:g} s ran out"
    return None


def _measure_spec(spec: dict, cuda: bool, timeout_s: float | None, preload: list[str]) -> dict:
    """One measurement: in this process on CUDA; on CPU memory and time each in a fresh process (the allocator
    settings differ), the time's result carrying the memory's peak."""
    if cuda:
        return _measure_here(spec)
    memory = _measure_isolated({**spec, "part": "memory"}, timeout_s, preload)
    if "error" in memory:
        return memory
    return {**_measure_isolated({**spec, "part": "time"}, timeout_s, preload), "peak_mb": memory["peak_mb"]}


def _options_of(label: str, options: dict[str, dict] | None) -> dict:
    """A row's options: its own entry (a variant's "type" aside: that is its mechanism); a peer takes the options
    of our mechanism of the same method."""
    options = options or {}
    given = options.get(label, options.get(PEER_OF.get(label, ""), {}))
    return {key: value for key, value in given.items() if key != "type"}


def _measure_here(spec: dict) -> dict:
    try:
        return measure(spec)
    except Exception as e:  # out of memory, unsupported length: an error row
        error = error_text(e)
    # outside the except block the traceback, and the tensors its frames hold, are gone: give them back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"error": error}


def _with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """time_vs_sdpa, memory_vs_sdpa: each row against softmax (SDPA) at the same n."""
    table["ms"] = pd.to_numeric(table["ms"])
    table["peak_mb"] = pd.to_numeric(table["peak_mb"])
    base = table[table["variant"] == BASELINE].set_index("n")  # softmax's own row, not a variant of it
    table["time_vs_sdpa"] = table["ms"] / table["n"].map(base["ms"])
    table["memory_vs_sdpa"] = table["peak_mb"] / table["n"].map(base["peak_mb"])
    return table[COLUMNS]


def plot_efficiency(table: pd.DataFrame, path: Path) -> None:
    """Two log-log panels, time and peak memory against n, one line per row name (a variant its own); written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    ok = table[table["error"] == ""]
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: the mechanisms outnumber the default cycle's 10
    for i, (name, rows) in enumerate(ok.groupby("variant", sort=False)):
        style = {"color": colours[(2 * i) % 20 + (2 * i) // 20 % 2], "linestyle": ("-", ":")[i // 10 % 2]}
        if name == BASELINE:
            style = {"color": "black", "linewidth": 2.5}
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

