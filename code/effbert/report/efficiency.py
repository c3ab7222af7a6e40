"""results/efficiency.md: our attention benchmark (`effbert bench attention`'s csv) beside the Nystromformer paper's
Table 1 (effbert.report.published_notes.ATTENTION_COST).

Milliseconds and MiB depend on the machine: the paper timed one self-attention instance on a GTX 1080Ti, we time
on the device the csv names (a CPU, or another GPU, at its batch, heads and dtype), so absolute numbers are not
compared. What is comparable is each mechanism's cost as a multiple of the O(n^2) softmax at the same n, measured on
the same machine: the paper's softmax materialises the n x n matrix, as our "naive-softmax" row does, so our
ratios are taken against that row (the csv's own ratios are against torch's fused SDPA, which the paper did not
have). A paper row is matched by mechanism and options (Nystrom's landmarks, Linformer's projected length), so a
variant (the same mechanism under other options, e.g. the config's nystrom-32) fills the row of its options; the
paper's Longformer-257 has no counterpart among our mechanisms (our "local" is a plain sliding window, without
Longformer's global tokens) and stands alone.

    python -m effbert.report.efficiency results/efficiency.csv results/efficiency.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from effbert.files import write_text
from effbert.pipeline_config import NAIVE_SOFTMAX as NAIVE  # the paper's softmax (without importing torch)
from effbert.report.published_notes import ATTENTION_COST, ATTENTION_COST_SETUP, ATTENTION_COST_SOURCE

# the paper's row -> (our mechanism, the options it must have been measured with); None: no counterpart
PAPER_ROWS: dict[str, tuple[str, dict] | None] = {
    "softmax": (NAIVE, {}),
    "linformer-256": ("linformer", {"k": 256}),
    "longformer-257": None,
    "nystrom-64": ("nystrom", {"num_landmarks": 64}),
    "nystrom-32": ("nystrom", {"num_landmarks": 32}),
}


def _with_naive_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """The measured rows (no error) of single mechanisms, with time and memory as multiples of naive-softmax's."""
    ok = table[(table["unit"] == "mechanism") & table["error"].fillna("").eq("")].copy()
    base = ok[ok["mechanism"] == NAIVE].set_index("n")
    ok["time_vs_naive"] = ok["ms"] / ok["n"].map(base["ms"])
    ok["memory_vs_naive"] = ok["peak_mb"] / ok["n"].map(base["peak_mb"])
    return ok


def _ours(measured: pd.DataFrame, paper_row: str, n: int) -> pd.Series | None:
    """Our measurement that matches a paper row at length n, if any."""
    match = PAPER_ROWS[paper_row]
    if match is None:
        return None
    mechanism, options = match
    for _, row in measured[(measured["mechanism"] == mechanism) & (measured["n"] == n)].iterrows():
        resolved = json.loads(row["options"]) if isinstance(row["options"], str) and row["options"] else {}
        if all(resolved.get(key) == value for key, value in options.items()):
            return row
    return None


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (paper row, n) of Table 1: the paper's MB, ms and ratios to its softmax; ours beside them."""
    measured = _with_naive_ratios(table)
    paper_softmax = ATTENTION_COST["softmax"]
    rows = []
    for name, costs in ATTENTION_COST.items():
        for n, (mb, ms) in costs.items():
            ours = _ours(measured, name, n)
            rows.append({
                "paper row": name, "n": n, "paper MB": mb, "paper ms": ms,
                "paper time / softmax": ms / paper_softmax[n][1], "paper memory / softmax": mb / paper_softmax[n][0],
                "our ms": None if ours is None else ours["ms"],
                "our MiB": None if ours is None else ours["peak_mb"],
                "our time / naive-softmax": None if ours is None else ours["time_vs_naive"],
                "our memory / naive-softmax": None if ours is None else ours["memory_vs_naive"],
            })
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    shown = frame.astype(object).where(frame.notna(), None)
    return shown.to_markdown(index=False, floatfmt=".4g", missingval="-") + "\n"


def efficiency_markdown(table: pd.DataFrame) -> str:
    """The Markdown page: the setting of each side, our table, then Table 1 beside the rows that match."""
    first = table.iloc[0]
    if "variant" not in table:  # a csv from before variants: each row was its mechanism's
        table = table.assign(variant=table["mechanism"])
    ours = table[["variant", "mechanism", "options", "n", "ms", "peak_mb", "time_vs_sdpa", "memory_vs_sdpa", "error"]]
    setting = (f"ours: {first['device']}, {first['dtype']}, batch {first['batch']} x {first['heads']} heads x head"
               f" dim {first['head_dim']}, one {first['unit']} forward + backward, median time")
    return (
        "# efficiency\n\n"
        f"Time (ms) and peak memory (MiB) of one attention instance against sequence length n; {setting}.\n"
        f"Paper: {ATTENTION_COST_SETUP} ({ATTENTION_COST_SOURCE}).\n\n"
        "The two sides ran on different hardware (the paper a GTX 1080Ti), so their milliseconds and megabytes are"
        " not comparable; the ratios to the O(n^2) softmax at the same n, each measured on its own machine, are."
        " The paper's softmax builds the n x n matrix, as our naive-softmax does; time_vs_sdpa and memory_vs_sdpa"
        " below are against torch's fused softmax (SDPA), which the paper did not have. '-': not measured here"
        " (another n, other options, an error) or no counterpart among our mechanisms (Longformer).\n\n"
        "## Ours\n\n" + _markdown(ours) +
        "\n## Beside the paper's Table 1\n\n" + _markdown(side_by_side(table))
    )


def write_efficiency_markdown(csv: Path, md: Path) -> str:
    """Read `effbert bench attention`'s csv, write the page to `md` (atomically); returns its text."""
    table = pd.read_csv(csv, dtype={"variant": str, "options": str, "error": str}, keep_default_na=False,
                        na_values={"ms": [""], "peak_mb": [""], "time_vs_sdpa": [""], "memory_vs_sdpa": [""]})
    text = efficiency_markdown(table)
    write_text(md, text)
    return text


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m effbert.report.efficiency EFFICIENCY.csv EFFICIENCY.md")
    write_efficiency_markdown(Path(sys.argv[1]), Path(sys.argv[2]))
