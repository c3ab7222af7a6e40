"""`effbert swap-eval`: what survives when efficient attention replaces softmax in a pretrained BERT, and at
what cost. Quality from effbert.train.swap_eval (similarity to the original, zero-shot and after a few
masked-LM steps); cost from effbert.bench.attention (forward+backward time and peak memory of one whole
self-attention layer at the model's sizes and `--cost_length` tokens, softmax measured in the same run).
Writes <out>/swap.csv, swap.md and swap.png (similarity against time).

    effbert swap-eval --from HF_BERT_DIR --text demo/data-preprocessing/wiki/demowiki-pages-articles.xml.bz2 \\
        --adapt_steps 20 --out results
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from effbert.bench.attention import bench_attention
from effbert.data.documents_format import iter_documents
from effbert.errors import InputError
from effbert.files import atomic_path, write_text
from effbert.layout import SWAP_TABLE, report_table
from effbert.train.hf_import import read_hf_config
from effbert.train.swap_eval import (
    ORIGINAL,
    ZERO_SHOT,
    SwapSettings,
    parse_variant,
    swap_eval,
)

SHOWN = ["variant", "stage", "pooled_cos", "nn_agreement", "sts_spearman", "cos_layer_first", "cos_layer_last",
         "ms", "peak_mb", "time_vs_softmax"]


def read_passages(path: Path) -> list[str]:
    """A documents folder (part-*.txt, `effbert documents`) or a MediaWiki dump (.xml.bz2 / .xml): each
    document's sentences joined into one passage."""
    path = Path(path)
    if path.is_dir():
        documents = iter_documents(path)
    elif path.name.endswith((".xml.bz2", ".xml")):
        from effbert.data.wikidump import read_wiki

        documents = read_wiki(path, lambda *a, **k: None)
    else:
        raise InputError(f"{path}: expected a documents folder (part-*.txt) or a MediaWiki dump (.xml.bz2)")
    return [" ".join(sentences) for sentences in documents]


def variant_costs(variants: list[str], hf: dict, n: int, *, device: str | None = None, batch: int = 1,
                  repeats: int = 5) -> pd.DataFrame:  # fmt: skip
    """ms and peak_mb of one self-attention layer per variant (bench_attention, layer mode) at n tokens, all in one
    run, so that each variant's time_vs_softmax is against the softmax measured beside it. A variant that is a
    mechanism's bare name is that mechanism's row; any other is a row of its own (bench_attention's variants)."""
    heads = hf["num_attention_heads"]
    options = {variant: parse_variant(variant) for variant in variants}
    table = bench_attention(None, None, device=device, lengths=[n], mechanisms=variants, options=options, layer=True,
                            batch=batch, heads=heads, head_dim=hf["hidden_size"] // heads, repeats=repeats)
    rows = {record["variant"]: {"ms": record["ms"], "peak_mb": record["peak_mb"], "cost_error": record["error"]}
            for record in table.to_dict("records") if record["variant"] in options}
    costs = pd.DataFrame.from_dict(rows, orient="index")
    costs["time_vs_softmax"] = costs["ms"] / costs.loc[ORIGINAL, "ms"] if ORIGINAL in rows else None
    return costs


def swap_table(rows: list[dict], costs: pd.DataFrame | None) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    layers = sorted(int(c.rsplit("_", 1)[1]) for c in table.columns if c.startswith("cos_layer_"))
    table["cos_layer_first"] = table[f"cos_layer_{layers[0]}"]
    table["cos_layer_last"] = table[f"cos_layer_{layers[-1]}"]
    if costs is not None:
        table = table.join(costs, on="variant")
    return table


def swap_markdown(table: pd.DataFrame, note: str) -> str:
    shown = table[[c for c in SHOWN if c in table.columns]]
    return note + "\n\n" + shown.to_markdown(index=False, floatfmt=".3f", missingval="-") + "\n"


def plot_swap(table: pd.DataFrame, path: Path) -> Figure:
    """pooled_cos against the layer's time (ms), one marker per (variant, stage), written to `path` (atomically);
    returns the Figure, whose artists hold the numbers drawn. Without costs (cost_length 0) the panel says so."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    if "ms" not in table.columns:
        ax.text(0.5, 0.5, "cost not measured (cost_length 0)", ha="center", va="center", transform=ax.transAxes)
    else:
        for stage, rows in table.groupby("stage", sort=False):
            ax.scatter(rows["ms"], rows["pooled_cos"], marker="o" if stage == ZERO_SHOT else "^", label=stage)
            for _, row in rows[rows["stage"] == ZERO_SHOT].iterrows():  # one label per variant
                ax.annotate(row["variant"].replace("num_landmarks=", "m="), (row["ms"], row["pooled_cos"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.legend()
    ax.set_xlabel("self-attention layer forward+backward (ms)")
    ax.set_ylabel("pooled sentence-embedding cosine to the original")
    ax.grid(True, alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return fig


def run_swap(hf_dir: Path, text: Path, out_dir: Path, *, variants: list[str], passages: int, settings: SwapSettings,
             cost_length: int | None, cost_batch: int = 1) -> pd.DataFrame:  # fmt: skip
    """The whole comparison -> out_dir/swap.{csv,md,png}. The first `passages` passages are compared on, the
    rest are the adaptation's text (all of them when there are no others)."""
    texts = read_passages(text)
    evaluated, rest = texts[:passages], texts[passages:]
    rows = swap_eval(hf_dir, evaluated, variants, settings, train_texts=rest or None)
    costs = None
    if cost_length:
        costs = variant_costs([r["variant"] for r in rows if r["stage"] == ZERO_SHOT], read_hf_config(hf_dir),
                              cost_length, device=settings.device, batch=cost_batch)
    table = swap_table(rows, costs)
    write_text(report_table(out_dir, SWAP_TABLE, "csv"), table.to_csv(index=False, float_format="%.6g"))
    adaptation = settings.adaptation
    note = (f"{hf_dir.name}: {len(evaluated)} passages of {text.name} (at most {settings.max_len} tokens); "
            + (f"adaptation: {adaptation.steps} MLM steps, lr {adaptation.lr:g}, on {len(rest or evaluated)} "
               "passages; " if adaptation else "")
            + (f"cost: one self-attention layer, n = {cost_length}, batch {cost_batch}." if cost_length else ""))
    write_text(report_table(out_dir, SWAP_TABLE, "md"), swap_markdown(table, note))
    plot_swap(table, report_table(out_dir, SWAP_TABLE, "png"))
    return table
