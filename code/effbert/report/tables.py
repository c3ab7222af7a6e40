"""Collect every model folder's result files into results/{pretrain,glue,lra}.{csv,md}.

The CSVs are tidy (one row per model and task) for plotting; the Markdown tables are wide, one row
per model, with the published number beside ours wherever the paper has one. A score aggregated over
seeds shows its spread: "88.10 ± 0.40" is the mean (or the config's aggregate) ± the standard
deviation over the seeds (ddof 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from effbert.constants import GLUE_SCORE_TASKS
from effbert.data.glue import glue_score
from effbert.files import read_json, write_text
from effbert.layout import GLUE_DIR, LRA_DIR, PRETRAIN_SUMMARY, REPORT_TABLES, report_table
from effbert.report import published


def _attention(model_dir: Path) -> str:
    from effbert.config import load_config

    return load_config(model_dir).model.attention.type


def pretrain_table(model_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for d in model_dirs:
        if (d / PRETRAIN_SUMMARY).is_file():
            r = read_json(d / PRETRAIN_SUMMARY)
            rows.append({
                "model": d.name, "attention": r["attention"], "steps": r["steps"],
                "MLM acc": r["mlm_accuracy"], "SOP acc": r["sop_accuracy"], "MLM loss": r["mlm_loss"],
                "train tokens": r["train_tokens"], "seconds": r["seconds"],
            })
    return pd.DataFrame(rows, columns=["model", "attention", "steps", "MLM acc", "SOP acc", "MLM loss",
                                       "train tokens", "seconds"])


TASK_COLUMNS = ["model", "attention", "task", "metric", "score", "std", "seeds", "published"]


def _task_rows(model_dirs: list[Path], folder: str, score_key: str, reference: dict,
               extra: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    """Tidy rows (model, attention, task, metric, score, std, seeds, published) from <model>/<folder>/<task>.json.

    `extra` maps a second table column to (task file, metric key), e.g. MNLI-mm from MNLI.json's metrics.
    std is the spread over seeds where the result aggregates several (`<score_key>_std`, `metrics_std`).
    """
    rows = []
    for d in model_dirs:
        attention = _attention(d)
        for path in sorted((d / folder).glob("*.json")):
            r = read_json(path)
            seeds = len(r.get("seeds") or r.get("selected", {}).get("seeds") or [None])
            found = [(path.stem, r.get("metric", score_key), r[score_key], r.get(f"{score_key}_std"))]
            for column, (task, key) in (extra or {}).items():
                if task == path.stem and key in r.get("metrics", {}):
                    found.append((column, key, r["metrics"][key], r.get("metrics_std", {}).get(key)))
            for task, metric, score, std in found:
                rows.append({"model": d.name, "attention": attention, "task": task, "metric": metric,
                             "score": float(score), "std": None if std is None else float(std), "seeds": seeds,
                             "published": reference.get(attention, {}).get(task)})
    return pd.DataFrame(rows, columns=TASK_COLUMNS)


def _cell(score: float, std: float | None, seeds: int) -> str:
    if pd.isna(score):
        return "-"
    return f"{score:.2f}" if std is None or pd.isna(std) or seeds < 2 else f"{score:.2f} ± {std:.2f}"


def wide(tidy: pd.DataFrame, reference: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per model (cells as text); each task's score, then the published number for its attention type.

    `average` is the mean of the model's own scores over the tasks shown; `average (published)` the mean of
    the published numbers over the same tasks, where the paper has all of them."""
    if tidy.empty:
        return pd.DataFrame(columns=["model", "attention"])
    keys = ["model", "attention"]
    scores = tidy.pivot_table(index=keys, columns="task", values="score", sort=False)
    cells = tidy.assign(cell=[_cell(r.score, r.std, r.seeds) for r in tidy.itertuples()])
    text = cells.pivot(index=keys, columns="task", values="cell").reindex(index=scores.index, columns=scores.columns)
    out = pd.DataFrame(index=scores.index)
    attentions = scores.index.get_level_values("attention")
    for task in scores.columns:
        out[task] = text[task].fillna("-")
        published = [reference.get(attention, {}).get(task) for attention in attentions]
        if any(p is not None for p in published):
            out[f"{task} (published)"] = [f"{p:.2f}" if p is not None else "-" for p in published]
    out["average"] = [f"{v:.2f}" for v in scores.mean(axis=1)]
    shown = [list(row.dropna().index) for _, row in scores.iterrows()]
    averages = []
    for attention, tasks in zip(attentions, shown, strict=True):
        values = [reference.get(attention, {}).get(task) for task in tasks]
        averages.append(f"{sum(values) / len(values):.2f}" if values and None not in values else "-")
    if any(a != "-" for a in averages):
        out["average (published)"] = averages
    return out.reset_index()


GLUE_ORDER = [*GLUE_SCORE_TASKS[:6], "MNLI-mm", *GLUE_SCORE_TASKS[6:]]  # the leaderboard's column order


def _glue_order(tidy: pd.DataFrame) -> pd.DataFrame:
    rank = {task: i for i, task in enumerate(GLUE_ORDER)}
    return tidy.sort_values("task", key=lambda tasks: tasks.map(lambda t: rank.get(t, len(rank))), kind="stable")


def glue_table(model_dirs: list[Path]) -> pd.DataFrame:
    return _glue_order(_task_rows(model_dirs, GLUE_DIR, "score", published.GLUE,
                                  extra={"MNLI-mm": ("MNLI", "accuracy_mismatched")}))


def glue_selection(model_dirs: list[Path]) -> pd.DataFrame:
    """Which runs stand behind each GLUE score: the protocol, the selected point, the per-seed scores,
    and each task's part of the GLUE score."""
    rows = []
    for d in model_dirs:
        for path in sorted((d / GLUE_DIR).glob("*.json")):
            r = read_json(path)
            chosen = r.get("selected", {})
            per_seed = r.get("per_seed", {})
            rows.append({
                "model": d.name, "task": path.stem, "metric": r.get("metric"),
                "GLUE part": r.get("glue_score"), "batch": chosen.get("batch_size"),
                "lr": None if chosen.get("lr") is None else f"{chosen['lr']:g}",
                "epochs": chosen.get("epochs"),
                "per seed": ", ".join(f"{seed}: {v:.1f}" for seed, v in per_seed.items()) or None,
                "protocol": r.get("protocol", "one run"),
            })
    return _glue_order(pd.DataFrame(rows, columns=["model", "task", "metric", "GLUE part", "batch", "lr", "epochs",
                                                   "per seed", "protocol"])).sort_values("model", kind="stable")


def _glue_scores(selection: pd.DataFrame) -> dict[str, str]:
    """model -> the GLUE score (mean of the nine tasks' parts), '-' until all nine are there."""
    out = {}
    for model, rows in selection.groupby("model", sort=False):
        parts = {t: v for t, v in zip(rows.task, rows["GLUE part"], strict=True) if v is not None and not pd.isna(v)}
        score = glue_score(parts)
        out[model] = "-" if score is None else f"{score:.2f}"
    return out


def lra_table(model_dirs: list[Path]) -> pd.DataFrame:
    return _task_rows(model_dirs, LRA_DIR, "accuracy", published.LRA)


def _markdown(table: pd.DataFrame, verbatim: tuple[str, ...] = ()) -> str:
    """`verbatim` columns are shown as written (a learning rate of 5e-05 is not 0.00)."""
    shown = table.astype(object).where(table.notna(), None)  # a task a model has not run shows as "-"
    keep = [i for i, column in enumerate(shown.columns) if column in verbatim]
    return shown.to_markdown(index=False, floatfmt=".2f", missingval="-", disable_numparse=keep or False) + "\n"


NOTES = {
    "pretrain": "Dev-set masked-LM and sentence-order accuracy (%) of the last checkpoint.",
    "glue": ("Dev-set official metric (x100) per task: the aggregate over seeds (± their standard deviation) at"
             " the grid point whose seeds scored best on dev (selection and score both on dev, as the papers'"
             " dev tables). GLUE: the official score, the mean of the nine tasks' parts (a task with two metrics"
             " counts with their mean), shown once all nine have run; average: the mean over the tasks shown."
             f" Published: {published.GLUE_SOURCE}."),
    "lra": ("Test accuracy (%) of the best-dev checkpoint; mean ± standard deviation over seeds."
            f" Published: {published.LRA_SOURCE}."),
}


def write_report(model_dirs: list[Path], out_dir: Path) -> dict[str, str]:
    """Write the tables; returns name -> Markdown."""
    model_dirs = [Path(d) for d in model_dirs]
    tidy = {"pretrain": pretrain_table(model_dirs), "glue": glue_table(model_dirs), "lra": lra_table(model_dirs)}
    assert tuple(tidy) == REPORT_TABLES
    references = {"glue": published.GLUE, "lra": published.LRA}
    markdown = {}
    for name, table in tidy.items():
        if name == "pretrain":
            text = _markdown(table)
        else:
            shown = wide(table, references[name])
            if name == "glue" and not shown.empty:
                selection = glue_selection(model_dirs)
                shown.insert(len(shown.columns) - 1, "GLUE", shown.model.map(_glue_scores(selection)).fillna("-"))
                text = _markdown(shown) + "\nSelected runs:\n\n" + _markdown(selection, verbatim=("lr",))
            else:
                text = _markdown(shown)
        markdown[name] = f"{NOTES[name]}\n\n{text}"
        write_text(report_table(out_dir, name, "csv"), table.to_csv(index=False))
        write_text(report_table(out_dir, name, "md"), f"# {name}\n\n{markdown[name]}")
    return markdown
