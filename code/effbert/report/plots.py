"""The report's plots, drawn from the result files: results/{pretrain-loss,lra-accuracy,lra-cost}.png.

- pretrain-loss: masked-LM loss against step for every model folder with a pretraining log
  (<model>/pretrain.jsonl): the training records (each the mean over its logging interval) as lines, the
  dev evaluations as markers.
- lra-accuracy: one panel per LRA task, a bar per model (test accuracy, the mean over seeds, the standard
  deviation as an error bar) read from results/lra.csv; demo-scale results are hatched. A published number
  is drawn (a black diamond) only where lra.csv has one, i.e. where the run's setup matches the paper row's
  (effbert.report.comparable): the plot allows exactly the comparisons the table allows, and a bar without a
  diamond reads "n/a [k]" in lra.md, whose note k says why. No paper's number is drawn as a reference for a
  setup it was not measured under.
- lra-cost: one panel per task, the same accuracies against the attention's forward FLOPs at the task's
  length, counted from each result's saved attention options and protocol (effbert.report.attention_cost),
  not timed: the count is a property of the result, a time would be one of the machine.

Each plotting function returns its Figure, whose artists hold the numbers drawn (the tests read them back).
Figures are made without pyplot (no global state, no display): PNG through matplotlib's Agg canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from effbert.config import load_config
from effbert.files import atomic_path, read_json
from effbert.layout import PRETRAIN_LOG, REPORT_PLOTS, lra_result, report_plot, report_table
from effbert.report.attention_cost import COST_LABEL, attention_flops
from effbert.report.comparable import lra_setup
from effbert.train.loop import read_log

Curve = tuple[list[int], list[float]]
PUBLISHED_LABEL = "published, same setup (none: see lra.md notes)"


def loss_curves(model_dirs: list[Path]) -> dict[str, dict[str, Curve]]:
    """model -> {"train": (steps, MLM losses), "dev": (steps, MLM losses)} from each pretraining log."""
    curves = {}
    for d in model_dirs:
        if (d / PRETRAIN_LOG).is_file():
            records = read_log(d / PRETRAIN_LOG)
            curves[d.name] = {split: ([r["step"] for r in records if r.get("split") == split and "mlm_loss" in r],
                                      [r["mlm_loss"] for r in records if r.get("split") == split and "mlm_loss" in r])
                              for split in ("train", "dev")}
    return curves


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes)


def plot_pretrain_loss(curves: dict[str, dict[str, Curve]]) -> Figure:
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for i, (model, curve) in enumerate(curves.items()):
        ax.plot(*curve["train"], color=f"C{i}", label=f"{model}: train (mean over the log interval)")
        if curve["dev"][0]:
            ax.plot(*curve["dev"], color=f"C{i}", linestyle="none", marker="o", label=f"{model}: dev")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked-LM loss (cross-entropy, nats)")
    ax.set_title("pretraining")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "pretraining logs")
    return fig


def _panels(tasks: list[str], width: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(max(width * len(tasks), 5), 5), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    return fig, list(axes)


def plot_lra_accuracy(lra: pd.DataFrame) -> Figure:
    """A bar per model and task (results/lra.csv's rows), a diamond where a published number is comparable."""
    tasks = list(dict.fromkeys(lra.task))
    fig, axes = _panels(tasks, 4.0)
    for ax, task in zip(axes, tasks, strict=False):
        rows = lra[lra.task == task].reset_index(drop=True)
        x = np.arange(len(rows))
        bars = ax.bar(x, rows.score, yerr=rows["std"].fillna(0.0), capsize=4, color="C0", label="ours (test)")
        for bar, demo in zip(bars, rows["demo scale"], strict=True):
            if demo:
                bar.set_hatch("//")
        known = rows.published.notna()
        ax.plot(x[known], rows.published[known], linestyle="none", marker="D", color="black", label=PUBLISHED_LABEL)
        ax.set_xticks(x, rows.model, rotation=30, ha="right")
        ax.set_title(task)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
    if not tasks:
        _empty(axes[0], "LRA results")
    else:
        axes[0].legend(fontsize=8, title="hatched: demo scale", title_fontsize=8)
    return fig


def lra_costs(model_dirs: list[Path], lra: pd.DataFrame) -> list[float]:
    """Each lra.csv row's attention GFLOPs, from its model folder's result file (saved attention, protocol)."""
    folders = {d.name: d for d in model_dirs}
    costs = []
    for row in lra.itertuples():
        d = folders[row.model]
        setup = lra_setup(load_config(d), row.task, read_json(lra_result(d, row.task)))
        costs.append(attention_flops(setup) / 1e9)
    return costs


def plot_lra_cost(lra: pd.DataFrame, costs: list[float]) -> Figure:
    tasks = list(dict.fromkeys(lra.task))
    fig, axes = _panels(tasks, 5.0)
    shown = lra.assign(cost=costs)
    for ax, task in zip(axes, tasks, strict=False):
        rows = shown[shown.task == task]
        ax.errorbar(rows.cost, rows.score, yerr=rows["std"].fillna(0.0), linestyle="none", marker="o", capsize=4)
        for row in rows.itertuples():
            ax.annotate(row.model, (row.cost, row.score), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel(COST_LABEL, fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    if not tasks:
        _empty(axes[0], "LRA results")
    return fig


def write_plots(model_dirs: list[Path], out_dir: Path) -> dict[str, Figure]:
    """Draw every plot from the model folders and the tables already written in `out_dir`; name -> Figure."""
    lra = pd.read_csv(report_table(out_dir, "lra", "csv"))
    figures = {"pretrain-loss": plot_pretrain_loss(loss_curves(model_dirs)),
               "lra-accuracy": plot_lra_accuracy(lra),
               "lra-cost": plot_lra_cost(lra, lra_costs(model_dirs, lra))}
    assert tuple(figures) == REPORT_PLOTS
    for name, fig in figures.items():
        with atomic_path(report_plot(out_dir, name)) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    return figures
