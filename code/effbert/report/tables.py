"""Collect every model folder's result files into results/{pretrain,glue,lra}.{csv,md}.

The CSVs are tidy (one row per model and task) for plotting; the Markdown tables are wide, one row
per model, with the published number beside ours wherever the paper has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from effbert.errors import InputError
from effbert.files import write_text
from effbert.report import published


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: not a result file ({e.msg})") from None


def _attention(model_dir: Path) -> str:
    from effbert.config import load_config

    return load_config(model_dir).model.attention.type


def pretrain_table(model_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for d in model_dirs:
        if (d / "pretrain.json").is_file():
            r = _read(d / "pretrain.json")
            rows.append({
                "model": d.name, "attention": r["attention"], "steps": r["steps"],
                "MLM acc": r["mlm_accuracy"], "SOP acc": r["sop_accuracy"], "MLM loss": r["mlm_loss"],
                "train tokens": r["train_tokens"], "seconds": r["seconds"],
            })
    return pd.DataFrame(rows, columns=["model", "attention", "steps", "MLM acc", "SOP acc", "MLM loss",
                                       "train tokens", "seconds"])


def _task_rows(model_dirs: list[Path], folder: str, score_key: str, reference: dict,
               extra: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    """Tidy rows (model, attention, task, metric, score, published) from <model>/<folder>/<task>.json.

    `extra` maps a second table column to (task file, metric key), e.g. MNLI-mm from MNLI.json's metrics.
    """
    rows = []
    for d in model_dirs:
        attention = _attention(d)
        for path in sorted((d / folder).glob("*.json")):
            r = _read(path)
            found = [(path.stem, r.get("metric", score_key), r[score_key])]
            for column, (task, key) in (extra or {}).items():
                if task == path.stem and key in r.get("metrics", {}):
                    found.append((column, key, r["metrics"][key]))
            for task, metric, score in found:
                rows.append({"model": d.name, "attention": attention, "task": task, "metric": metric,
                             "score": float(score), "published": reference.get(attention, {}).get(task)})
    return pd.DataFrame(rows, columns=["model", "attention", "task", "metric", "score", "published"])


def wide(tidy: pd.DataFrame, reference: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per model; each task's score, then the published number for its attention type where there is one.

    `average` is the mean of the model's own scores over the tasks shown.
    """
    if tidy.empty:
        return pd.DataFrame(columns=["model", "attention"])
    out = tidy.pivot_table(index=["model", "attention"], columns="task", values="score", sort=False)
    average = out.mean(axis=1)
    columns = []
    attentions = out.index.get_level_values("attention")
    for task in list(out.columns):
        columns.append(task)
        published = [reference.get(attention, {}).get(task) for attention in attentions]
        if any(p is not None for p in published):
            out[f"{task} (published)"] = pd.array(published, dtype="Float64")
            columns.append(f"{task} (published)")
    out = out[columns]
    out["average"] = average
    return out.reset_index()


def glue_table(model_dirs: list[Path]) -> pd.DataFrame:
    return _task_rows(model_dirs, "glue", "score", published.GLUE,
                      extra={"MNLI-mm": ("MNLI", "accuracy_mismatched")})


def lra_table(model_dirs: list[Path]) -> pd.DataFrame:
    return _task_rows(model_dirs, "lra", "accuracy", published.LRA)


def write_report(model_dirs: list[Path], out_dir: Path) -> dict[str, str]:
    """Write the tables; returns name -> Markdown."""
    model_dirs = [Path(d) for d in model_dirs]
    tidy = {"pretrain": pretrain_table(model_dirs), "glue": glue_table(model_dirs), "lra": lra_table(model_dirs)}
    references = {"glue": published.GLUE, "lra": published.LRA}
    notes = {
        "pretrain": "Dev-set masked-LM and sentence-order accuracy (%) of the last checkpoint.",
        "glue": f"Dev-set official metric (x100) per task. Published: {published.GLUE_SOURCE}.",
        "lra": f"Test accuracy (%) of the best-dev checkpoint. Published: {published.LRA_SOURCE}.",
    }
    markdown = {}
    for name, table in tidy.items():
        shown = table if name == "pretrain" else wide(table, references[name])
        shown = shown.astype(object).where(shown.notna(), None)  # a task a model has not run shows as "-"
        markdown[name] = f"{notes[name]}\n\n" + shown.to_markdown(index=False, floatfmt=".2f", missingval="-") + "\n"
        write_text(Path(out_dir) / f"{name}.csv", table.to_csv(index=False))
        write_text(Path(out_dir) / f"{name}.md", f"# {name}\n\n{markdown[name]}")
    return markdown
