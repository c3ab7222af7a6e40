"""Pretraining throughput: tokens/s and MFU of the real training loop, our encoder against transformers.

BERT-base shape (12 layers, 768 wide, 12 heads, FFN 3072, sequence 512, vocabulary 30522) in bf16 on one
GPU; `tiny` shrinks it (2 layers, 64 wide, sequence 64) so a CPU can run it end to end in seconds.
Every row trains through effbert.train.loop.fit (AdamW, clipping, autocast) on one synthetic batch
repeated (the data does not change the speed): our PretrainingModel with each attention mechanism (MLM
head only, as the peer), then transformers' BertForMaskedLM with attn_implementation="sdpa".

Throughput counts the steps after `warmup` (compilation, cuDNN autotuning, allocator growth): the loop
logs at the end of the warmup and of the run, and the rate is tokens / seconds between the two logs.
MFU = tokens/s * model FLOPs per token / the GPU's peak (effbert.train.device.PEAK_FLOPS); FLOPs per
token are 6 * parameters + 12 * layers * hidden * sequence for every row, the same accounting for
all, so the ratios are throughput ratios. CPU rows have no MFU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from effbert.config import ATTENTION_TYPES, ModelConfig, PretrainConfig
from effbert.constants import IGNORE
from effbert.errors import InputError
from effbert.files import write_json
from effbert.model.pretraining import PretrainingModel
from effbert.train.device import pick_device
from effbert.train.loop import Execution, Optimisation, Reporting, fit

BASE = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "ffn_size": 3072, "max_seq_len": 512}
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "ffn_size": 128, "max_seq_len": 64}
PEER = "hf-bert-sdpa"


def synthetic_batch(batch: int, seq: int, vocab: int, device: torch.device, seed: int = 0) -> dict:
    """Random tokens, every position real, 15% of positions to predict."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    labels = torch.where(torch.rand(batch, seq, generator=g) < 0.15, ids, torch.full_like(ids, IGNORE))
    out = {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.bool),
           "token_type_ids": torch.zeros_like(ids), "mlm_labels": labels,
           "sop_labels": torch.randint(0, 2, (batch,), generator=g)}
    return {k: v.to(device) for k, v in out.items()}


def our_model(shape: dict, vocab: int, mechanism: str) -> nn.Module:
    cfg = ModelConfig.model_validate({**shape, "vocab_size": vocab, "attention": {"type": mechanism}})
    return PretrainingModel(cfg, vocab, sop=False)


def _peer(shape: dict, vocab: int) -> nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=vocab, hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_layers"],
                     num_attention_heads=shape["num_heads"], intermediate_size=shape["ffn_size"],
                     max_position_embeddings=shape["max_seq_len"], attn_implementation="sdpa")
    return BertForMaskedLM(cfg)


def mlm_counts(batch: dict) -> dict:
    return {"mlm": (batch["mlm_labels"] != IGNORE).sum()}


def our_loss(model: nn.Module, batch: dict) -> tuple[dict, dict]:
    out = model(batch)
    return {"mlm": out["mlm_loss"] * out["mlm_count"]}, {}


def _peer_loss(model: nn.Module, batch: dict) -> tuple[dict, dict]:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(),
                token_type_ids=batch["token_type_ids"], labels=batch["mlm_labels"])
    return {"mlm": out.loss * mlm_counts(batch)["mlm"]}, {}


def bench_pretrain(*, tiny: bool = False, device: str | None = None, batch_size: int | None = None,
                   warmup: int = 5, steps: int = 20, mechanisms: tuple[str, ...] = ("softmax", "nystrom"),
                   peer: bool = True, precision: str | None = None, attention_fp32: bool | None = None,
                   compile: bool | None = None, vocab_size: int | None = None,
                   out: str | Path | None = None) -> list[dict]:
    """One row per model: tokens/s, MFU and the ratio of its tokens/s to the peer's (or to the first row's).

    precision, attention_fp32 and compile default to the pretraining section's defaults, read from the
    config schema, so the benchmark measures what a run does unless told otherwise."""
    precision = run_default("precision") if precision is None else precision
    attention_fp32 = run_default("attention_fp32") if attention_fp32 is None else attention_fp32
    compile = run_default("compile") if compile is None else compile
    dev = pick_device(device)
    shape = TINY if tiny else BASE
    vocab = vocab_size or (1000 if tiny else 30522)
    batch_size = batch_size or (4 if tiny else 32)
    seq = shape["max_seq_len"]
    batch = synthetic_batch(batch_size, seq, vocab, dev)
    flops_extra = 12.0 * shape["num_layers"] * shape["hidden_size"] * seq
    runs = [(m, lambda m=m: our_model(shape, vocab, m), our_loss) for m in mechanisms]
    if peer:
        runs.append((PEER, lambda: _peer(shape, vocab), _peer_loss))
    rows = []
    for name, build, loss_fn in runs:
        torch.manual_seed(0)
        model = build().to(dev)
        params = sum(p.numel() for p in model.parameters())
        records = fit(
            model, loss_fn, _repeat(batch), Optimisation(steps=warmup + steps, lr=1e-4, warmup_steps=0),
            execution=Execution(precision=precision, attention_fp32=attention_fp32, compile=compile),
            report=Reporting(log_every=warmup, flops_per_token=6.0 * params + flops_extra, desc=f"bench {name}"),
            counts=mlm_counts,
        )
        first, last = records[0], records[-1]
        rate = (last["tokens"] - first["tokens"]) / (last["seconds"] - first["seconds"])
        mfu = last.get("mfu")
        if mfu is not None:  # the loop's MFU counts from the start; rescale to the timed steps
            mfu *= rate / last["tokens_per_s"]
        rows.append({"model": name, "device": str(dev), "precision": precision, "layers": shape["num_layers"],
                     "hidden": shape["hidden_size"], "seq": seq, "batch": batch_size, "parameters": params,
                     "tokens_per_s": rate, "mfu": mfu, "final_loss": last["loss"]})
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    base = next((r for r in rows if r["model"] == PEER), rows[0])
    for row in rows:
        row["vs_" + base["model"]] = row["tokens_per_s"] / base["tokens_per_s"]
    for row in rows:
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        print(f"{row['model']:>14}  {row['tokens_per_s']:>12,.0f} tokens/s  MFU {mfu:>6}  "
              f"x{row['vs_' + base['model']]:.2f} vs {base['model']}")
    if out is not None:
        write_json(out, rows)
    return rows


def run_default(key: str):
    """A pretraining setting's default, as a run without it in config.json gets it."""
    return PretrainConfig.model_fields[key].default


def _repeat(batch: dict):
    while True:
        yield batch


def _positive(text: str) -> int:
    """argparse type: a whole number of at least 1 (the loop logs every `warmup` steps; a rate needs steps)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    """`effbert bench pretrain`: every setting is checked before the first model is built; a bad one is an
    argparse error or an InputError (the CLI prints either on one line, exit 2)."""
    p = argparse.ArgumentParser(prog="effbert bench pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide, 64-token model (CPU smoke run)")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=_positive)
    p.add_argument("--warmup", type=_positive, default=5, help="untimed steps first (at least 1)")
    p.add_argument("--steps", type=_positive, default=20, help="timed steps after the warmup")
    p.add_argument("--mechanisms", nargs="+", default=["softmax", "nystrom"], choices=ATTENTION_TYPES,
                   metavar="MECHANISM", help=f"our attention types to measure: {', '.join(ATTENTION_TYPES)}")
    p.add_argument("--no-peer", action="store_true", help="skip transformers' BertForMaskedLM")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help=f"default: a run's ({run_default('precision')})")
    p.add_argument("--attention-fp32", action=argparse.BooleanOptionalAction,
                   help=f"run our mechanisms wholly in float32 (default: a run's, {run_default('attention_fp32')})")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help=f"torch.compile (default: a run's, {run_default('compile')})")
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.out and Path(a.out).is_dir():  # found only after the whole run otherwise
        raise InputError(f"out {a.out!r}: a folder; expected the path of the JSON file")
    pick_device(a.device)  # an unknown or absent device, named before anything is built
    rows = bench_pretrain(tiny=a.tiny, device=a.device, batch_size=a.batch_size, warmup=a.warmup, steps=a.steps,
                          mechanisms=tuple(a.mechanisms), peer=not a.no_peer, precision=a.precision,
                          attention_fp32=a.attention_fp32, compile=a.compile, out=a.out)
    if not a.out:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
