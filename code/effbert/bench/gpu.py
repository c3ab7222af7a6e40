"""`effbert bench gpu`: the GPU figures of docs/benchmarks.md in one command, under 8 minutes on one H100/H200.

Writes <out>/attention.{json,md}, <out>/pretrain.{json,md} and <out>/norms.{json,md} (default out: results/gpu):

(a) attention: forward+backward time and peak memory of every mechanism at n = 512 ... 65536 (bf16
    under autocast, batch 1 x 16 heads x head dim 64), twice: the mechanism alone (q, k, v in; the
    Nystromformer paper's Table 1 setting) and the whole self-attention layer (x in, q/k/v/output
    projections included), where transformers' NystromformerSelfAttention and YosoSelfAttention run in
    the same table as peers (effbert.bench.attention). Ratios are against torch SDPA ("softmax") of the
    same table. naive-softmax stops at n = 16384 (its n x n matrices); a length that runs out of
    memory or over its time budget is an error row and ends that mechanism's longer lengths.
(b) pretraining: BERT-base, sequence 512, tokens/s and MFU of our softmax and nystrom models against
    transformers' BertForMaskedLM in the same run (effbert.bench.pretrain), with the pretraining
    section's defaults (precision, attention_fp32, compile) read from effbert.config, as real runs get them.
(c) precision: a small model (4 layers x 256, sequence 128) trained 200 steps in bf16 and in fp32 from
    the same initial weights on the same batches; the final losses (mean of the last 20 steps) side by
    side with their relative difference |bf16 - fp32| / fp32 (accepted within 2%). The batches are
    learnable: each row repeats a random 8-token motif of Zipf-distributed tokens, 15% of positions
    masked, so the loss falls below log(vocabulary) and the comparison is of a model that learns.
(d) norms: a BERT-base training step and inference forward (batch 8 x 512, bf16 autocast) with Pre-LN,
    Pre-RMSNorm and Pre-CRMSNorm, interleaved, with ratios to Pre-LN beside the paper's 1-10%
    (effbert.bench.norms, whose CPU table docs/benchmarks.md holds).

`tiny` runs every part on the CPU at toy sizes (two lengths, a 2-layer model, a few steps): the tests' run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch

from effbert.bench import norms
from effbert.bench.attention import BASELINE, NAIVE, PEERS, bench_attention, error_text
from effbert.bench.pretrain import PEER, TINY, bench_pretrain, mlm_counts, our_loss, our_model, run_default
from effbert.constants import IGNORE
from effbert.errors import InputError
from effbert.files import write_json, write_text
from effbert.train.device import pick_device
from effbert.train.loop import Execution, Optimisation, Reporting, fit

# what each size runs; the full size is budgeted to finish within 8 minutes on one H100/H200
SIZES = {
    "full": {
        "attention": {"lengths": [2**i for i in range(9, 17)], "heads": 16, "head_dim": 64, "dtype": "bfloat16",
                      "repeats": 5, "warmup": 2, "budget_s": 3.0, "total_budget_s": 100.0,
                      "max_len": {NAIVE: 16384}, "mechanisms": None},
        "pretrain": {"tiny": False, "warmup": 5, "steps": 20},
        "precision": {"shape": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "ffn_size": 1024,
                                "max_seq_len": 128}, "batch": 32, "vocab": 1000, "steps": 200, "lr": 1e-3,
                      "mechanisms": ("softmax", "nystrom", "yoso")},
        "norms": {"shape": norms.BASE, "seq": 512, "batch": 8, "repeats": 7, "dtype": "bfloat16"},
    },
    "tiny": {
        "attention": {"lengths": [128, 256], "heads": 2, "head_dim": 32, "dtype": "float32", "repeats": 1,
                      "warmup": 1, "budget_s": None, "total_budget_s": None, "max_len": {NAIVE: 128},
                      "mechanisms": [BASELINE, "nystrom", NAIVE]},
        "pretrain": {"tiny": True, "warmup": 1, "steps": 2},
        "precision": {"shape": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ffn_size": 64,
                                "max_seq_len": 32}, "batch": 4, "vocab": 100, "steps": 10, "lr": 1e-3,
                      "mechanisms": ("softmax", "nystrom")},
        "norms": {"shape": TINY, "seq": 16, "batch": 2, "repeats": 1, "dtype": None},
    },
}
MOTIF = 8  # tokens repeated along each row of the precision run's batches
MASK_ID = 4  # below the motif tokens (5 ...), so a masked position never shows its answer
TOLERANCE = 0.02  # accepted relative difference of the bf16 and fp32 final losses


def bench_gpu(out: str | Path = "results/gpu", *, tiny: bool = False, device: str | None = None) -> dict:
    """Run (a), (b), (c) and write their JSON and Markdown under `out`; returns the seconds each part took."""
    dev = torch.device(device or "cpu") if tiny else pick_device(device)
    if not tiny and dev.type != "cuda":
        raise InputError(f"bench gpu needs a CUDA GPU, and this machine has none (device {dev}, "
                         f"torch.cuda.is_available() = {torch.cuda.is_available()}); "
                         "`effbert bench gpu --tiny` runs the same code on the CPU at toy sizes")
    size = SIZES["tiny" if tiny else "full"]
    out = Path(out)
    seconds = {}

    start = time.monotonic()
    settings = {k: v for k, v in size["attention"].items() if k != "mechanisms"}
    tables = [bench_attention(None, None, device=str(dev), layer=layer, **settings,
                              mechanisms=_layer_names(size["attention"]["mechanisms"], layer))
              for layer in (True, False)]  # layers first: the CPU workers' server then preloads the peers
    table = pd.concat(tables, ignore_index=True)
    write_json(out / "attention.json", {"settings": settings, "rows": _records(table)})
    write_text(out / "attention.md", attention_markdown(table))
    seconds["attention"] = time.monotonic() - start

    start = time.monotonic()
    # the pretraining section's defaults: what a real run gets
    run = {**size["pretrain"], **{key: run_default(key) for key in ("precision", "attention_fp32", "compile")}}
    throughput = bench_pretrain(device=str(dev), **run)
    seconds["pretrain"] = time.monotonic() - start

    start = time.monotonic()
    precision = compare_precisions(dev, **size["precision"], attention_fp32=run["attention_fp32"])
    seconds["precision"] = time.monotonic() - start
    write_json(out / "pretrain.json", {"settings": {"pretrain": run, "precision": size["precision"]},
                                       "throughput": throughput, "precision": precision})
    write_text(out / "pretrain.md", pretrain_markdown(throughput, precision))

    start = time.monotonic()
    settings = size["norms"]
    dtype = getattr(torch, settings["dtype"]) if settings["dtype"] else None
    norm_times = norms.bench_norms(seq=settings["seq"], batch=settings["batch"], repeats=settings["repeats"],
                                   shape=settings["shape"], device=str(dev), dtype=dtype)
    write_json(out / "norms.json", {"settings": settings | {"device": str(dev)}, "seconds": norm_times})
    write_text(out / "norms.md", f"# Pre-LN, Pre-RMSNorm, Pre-CRMSNorm: {settings['shape']['num_layers']} layers "
               f"x {settings['shape']['hidden_size']}, batch {settings['batch']} x {settings['seq']}, {dev}, "
               f"autocast {settings['dtype'] or 'off'}; seconds per step\n\n{norms.table(norm_times)}\n")
    seconds["norms"] = time.monotonic() - start
    print(f"bench gpu: wrote {out}/attention.{{json,md}}, {out}/pretrain.{{json,md}}, {out}/norms.{{json,md}}; seconds "
          + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return seconds


def _layer_names(names: list[str] | None, layer: bool) -> list[str] | None:
    """The mechanisms of a table: the peers join the layer table only."""
    if names is None:
        return None  # bench_attention's defaults: every mechanism, naive-softmax, and the peers for layers
    return [*names, *PEERS] if layer else names


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN (not valid JSON) becomes null."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict("records")]


# ---- (c) bf16 against fp32 ----

def motif_batches(batch: int, seq: int, vocab: int, device: torch.device, seed: int = 0):
    """Endless MLM batches, the same for a given seed: each row repeats a random MOTIF-token motif (tokens drawn
    from a Zipf distribution); 15% of the positions are masked (input MASK_ID, label the token), predictable
    from the motif's other copies."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab - MASK_ID, dtype=torch.float64)
    zipf = ranks ** -1.0  # a skewed unigram: the loss falls within tens of steps, before any copying is learned
    while True:
        motif = MASK_ID + 1 + torch.multinomial(zipf, batch * MOTIF, replacement=True, generator=g).view(batch, MOTIF)
        ids = motif.repeat(1, -(-seq // MOTIF))[:, :seq]
        chosen = torch.rand(batch, seq, generator=g) < 0.15
        out = {"input_ids": torch.where(chosen, MASK_ID, ids), "token_type_ids": torch.zeros_like(ids),
               "attention_mask": torch.ones(batch, seq, dtype=torch.bool),
               "mlm_labels": torch.where(chosen, ids, IGNORE), "sop_labels": torch.zeros(batch, dtype=torch.long)}
        yield {k: v.to(device) for k, v in out.items()}


def compare_precisions(device: torch.device, *, shape: dict, batch: int, vocab: int, steps: int, lr: float,
                       mechanisms: tuple[str, ...], attention_fp32: bool, seed: int = 0) -> list[dict]:
    """One row per mechanism: final MLM losses after `steps` steps in fp32 and in bf16, same start, same data.

    Dropout is off, so precision is the only difference between the two runs (fit seeds its own RNG).
    A mechanism that fails gets a row with the error."""
    shape = {**shape, "dropout": 0.0, "attention_dropout": 0.0}
    log_every = max(1, steps // 10)  # the last record's loss: the mean over the last tenth of the steps
    rows = []
    for mechanism in mechanisms:
        row = {"mechanism": mechanism, "steps": steps, "layers": shape["num_layers"], "hidden": shape["hidden_size"],
               "seq": shape["max_seq_len"], "batch": batch, "attention_fp32": attention_fp32}
        try:
            torch.manual_seed(seed)
            start = {k: v.clone() for k, v in our_model(shape, vocab, mechanism).state_dict().items()}
            for precision in ("fp32", "bf16"):
                model = our_model(shape, vocab, mechanism)
                model.load_state_dict(start)
                batches = motif_batches(batch, shape["max_seq_len"], vocab, device, seed)
                records = fit(
                    model.to(device), our_loss, batches, Optimisation(steps=steps, lr=lr, warmup_steps=steps // 10),
                    execution=Execution(precision=precision, attention_fp32=attention_fp32),
                    report=Reporting(log_every=log_every, desc=f"{mechanism} {precision}"),
                    counts=mlm_counts, seed=seed,
                )
                row[f"{precision}_loss"] = records[-1]["loss"]
            row["relative_difference"] = abs(row["bf16_loss"] - row["fp32_loss"]) / row["fp32_loss"]
            row["within_tolerance"] = row["relative_difference"] <= TOLERANCE
            row["error"] = ""
        except Exception as e:  # a failing mechanism is a row, not the end of the other figures
            row["error"] = error_text(e)
        rows.append(row)
    return rows


# ---- Markdown ----

def _cell(row: pd.Series) -> str:
    if row["error"]:
        kind = "OOM" if "out of memory" in row["error"].lower() else row["error"].split(":")[0]
        return f"- ({kind})"
    memory = "-" if pd.isna(row["peak_mb"]) else f"{row['peak_mb']:.1f}"
    return f"{row['ms']:.2f} / {memory}"


def attention_markdown(table: pd.DataFrame) -> str:
    """One table per unit (mechanism, layer): rows mechanisms, columns n, cells 'ms / MiB', then the ratios
    to SDPA at the longest length SDPA ran."""
    first = table.iloc[0]
    parts = [f"# Attention, forward + backward: {first['device']}, {first['dtype']}, batch {first['batch']} x "
             f"{first['heads']} heads x head dim {first['head_dim']}\n",
             "Cells: median milliseconds / peak MiB; '-' with the error's kind where a length failed or was "
             "skipped (the JSON has the text). Ratios: against torch SDPA (softmax) of the same table.\n"]
    for unit, rows in table.groupby("unit", sort=False):
        lengths = sorted(rows["n"].unique())
        base = rows[(rows["mechanism"] == BASELINE) & (rows["error"] == "")]
        at = int(base["n"].max()) if len(base) else lengths[-1]
        title = {"mechanism": "the mechanism alone (q, k, v in)",
                 "layer": "the whole self-attention layer (x in, q/k/v/output projections included)"}[unit]
        parts.append(f"## {unit}: {title}\n")
        header = ["mechanism", *map(str, lengths), f"time / SDPA at {at}", f"memory / SDPA at {at}"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
        for name, mech in rows.groupby("mechanism", sort=False):
            by_n = mech.set_index("n")
            cells = [_cell(by_n.loc[n]) if n in by_n.index else "" for n in lengths]
            ratio = by_n.loc[at] if at in by_n.index else None
            ratios = ["-" if ratio is None or pd.isna(ratio[c]) else f"{ratio[c]:.3g}"
                      for c in ("time_vs_sdpa", "memory_vs_sdpa")]
            label = "softmax (SDPA)" if name == BASELINE else name
            lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def pretrain_markdown(throughput: list[dict], precision: list[dict]) -> str:
    first = throughput[0]
    base = next((r for r in throughput if r["model"] == PEER), first)["model"]
    lines = [f"# Pretraining: {first['layers']} layers x {first['hidden']}, sequence {first['seq']}, batch "
             f"{first['batch']}, {first['device']}, precision {first['precision']}\n",
             f"| model | tokens/s | MFU | vs {base} |", "|:--|--:|--:|--:|"]
    for r in throughput:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['model']} | {r['tokens_per_s']:,.0f} | {mfu} | {r['vs_' + base]:.2f} |")
    p = precision[0]
    lines += ["", f"# bf16 against fp32: {p['layers']} layers x {p['hidden']}, sequence {p['seq']}, batch "
              f"{p['batch']}, {p['steps']} steps from the same weights on the same batches\n",
              f"Final loss: the mean MLM loss of the last tenth of the steps. Accepted: relative difference "
              f"within {TOLERANCE:.0%}.\n",
              "| mechanism | fp32 loss | bf16 loss | relative difference | within tolerance |", "|:--|--:|--:|--:|:--|"]
    for r in precision:
        if r["error"]:
            lines.append(f"| {r['mechanism']} | - | - | - | error: {r['error'][:80]} |")
        else:
            lines.append(f"| {r['mechanism']} | {r['fp32_loss']:.4f} | {r['bf16_loss']:.4f} | "
                         f"{r['relative_difference']:.2%} | {'yes' if r['within_tolerance'] else 'NO'} |")
    return "\n".join(lines) + "\n"
