"""Collect every model folder's result files into results/{pretrain,glue,lra}.{csv,md}.

The CSVs are tidy (one row per model and task) for plotting; the Markdown tables are wide, one row
per model, with a published number beside ours only where our run matches the paper's setup
(effbert.report.comparable); elsewhere the cell says n/a and a numbered note under the table says
why. A score aggregated over seeds shows its spread: "88.10 ± 0.40" is the mean (or the config's
aggregate) ± the standard deviation over the seeds (ddof 1). A wide table's `average` is over one set of tasks for
every row (`average_parts`): a model lacking one of them gets "-", never an average over fewer tasks.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from effbert.config import load_config
from effbert.constants import GLUE_SCORE_TASKS, GLUE_TASKS, LRA_TASKS
from effbert.data.glue import glue_score
from effbert.files import read_json, write_text
from effbert.layout import GLUE_DIR, LRA_DIR, PRETRAIN_SUMMARY, REPORT_TABLES, GlueRun, glue_run_path, report_table
from effbert.report import published
from effbert.report.comparable import DEMO_SHARE, budget_share, compare, glue_setup, is_demo, lra_setup
from effbert.report.html_page import write_pages
from effbert.report.plots import write_plots
from effbert.train.glue_protocol import AGGREGATE


def pretrain_table(model_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for d in model_dirs:
        if (d / PRETRAIN_SUMMARY).is_file():
            r = read_json(d / PRETRAIN_SUMMARY)
            rows.append({
                "model": d.name, "attention": r["attention"], "steps": r["steps"],
                "MLM acc": r["mlm_accuracy"], "SOP acc": r["sop_accuracy"], "MLM loss": r["mlm_loss"],
                "train tokens": r["train_tokens"], "seconds": r["seconds"],
                "demo scale": is_demo(budget_share("glue", "", glue_setup(load_config(d), r))),
            })
    return pd.DataFrame(rows, columns=["model", "attention", "steps", "MLM acc", "SOP acc", "MLM loss",
                                       "train tokens", "seconds", "demo scale"])


def _result_files(model_dir: Path, folder: str, tasks: Collection[str] | None) -> list[Path]:
    """<model>/<folder>/<task>.json of the tasks asked for (None: every file there). The pipeline asks for the
    configured ones (glue.tasks, lra.tasks): a result left by a task since dropped from the config is not a row
    of today's tables, nor a column that no other model has."""
    files = sorted((model_dir / folder).glob("*.json"))
    return files if tasks is None else [path for path in files if path.stem in tasks]


TASK_COLUMNS = ["model", "attention", "task", "metric", "score", "std", "seeds", "published", "published source",
                "not comparable", "demo scale"]


def _task_rows(model_dirs: list[Path], folder: str, score_key: str, benchmark: str,
               extra: dict[str, tuple[str, str]] | None = None, tasks: Collection[str] | None = None) -> pd.DataFrame:
    """Tidy rows (TASK_COLUMNS) from <model>/<folder>/<task>.json, each with the published value its setup matches.

    `extra` maps a second table column to (task file, metric key), e.g. MNLI-mm from MNLI.json's metrics.
    std is the spread over seeds where the result aggregates several (`<score_key>_std`, `metrics_std`).
    published is the number of the paper row whose setup ours matches (effbert.report.comparable), else empty
    and `not comparable` says why.
    """
    rows = []
    for d in model_dirs:
        cfg = load_config(d)
        summary = read_json(d / PRETRAIN_SUMMARY) if (d / PRETRAIN_SUMMARY).is_file() else None
        for path in _result_files(d, folder, tasks):
            r = read_json(path)
            seeds = len(r.get("seeds") or r.get("selected", {}).get("seeds") or [None])
            setup = (glue_setup(cfg, summary, result=r, model_dir=d) if benchmark == "glue"
                     else lra_setup(cfg, path.stem, r))
            found = [(path.stem, r.get("metric", score_key), r[score_key], r.get(f"{score_key}_std"))]
            for column, (task, key) in (extra or {}).items():
                if task == path.stem and key in r.get("metrics", {}):
                    found.append((column, key, r["metrics"][key], r.get("metrics_std", {}).get(key)))
            for task, metric, score, std in found:
                match = compare(benchmark, task, setup)
                rows.append({"model": d.name, "attention": cfg.model.attention_name, "task": task, "metric": metric,
                             "score": float(score), "std": None if std is None else float(std), "seeds": seeds,
                             "published": match.published, "published source": match.source,
                             "not comparable": match.reason, "demo scale": match.demo})
    return pd.DataFrame(rows, columns=TASK_COLUMNS)


def _cell(score: float, std: float | None, seeds: int) -> str:
    if pd.isna(score):
        return "-"
    return f"{score:.2f}" if std is None or pd.isna(std) or seeds < 2 else f"{score:.2f} ± {std:.2f}"


def reason_notes(tidy: pd.DataFrame) -> dict[str, int]:
    """Each distinct reason a published value is absent -> its note number, in order of first appearance."""
    reasons = [r for r in tidy.get("not comparable", pd.Series(dtype=object)) if isinstance(r, str)]
    return {reason: i for i, reason in enumerate(dict.fromkeys(reasons), start=1)}


def _published_cell(row: pd.Series | None, notes: dict[str, int]) -> str:
    if row is None:
        return "-"
    if row["published"] is not None and not pd.isna(row["published"]):
        return f"{row['published']:.2f}"
    return f"n/a [{notes[row['not comparable']]}]" if isinstance(row["not comparable"], str) else "-"


# The `average` column: one part per task of the benchmark's averaged set, each the mean of the task's columns.
# LRA: the five tasks of the Nystromformer paper's Table 3 (Path-X is in neither its average nor the LRA paper's,
# where every model failed it). GLUE: the nine tasks of the GLUE score, MNLI counted once as the mean of its
# matched and mismatched accuracy (as the GLUE score counts it); IMDB (test accuracy) and AX are not GLUE tasks.
AVERAGED: dict[str, tuple[tuple[str, ...], ...]] = {
    "lra": tuple((task,) for task in LRA_TASKS if task != "pathx"),
    "glue": tuple(("MNLI-m", "MNLI-mm") if task == "MNLI" else (task,) for task in GLUE_SCORE_TASKS),
}


def average_parts(benchmark: str, columns: list[str]) -> list[tuple[str, ...]]:
    """The parts the `average` column is the mean of: the benchmark's averaged tasks (AVERAGED) among the task
    columns the table shows, each as the columns that make up the task's part.

    The set is fixed per table, not per model, so a model lacking any of them gets no average rather than one over
    fewer tasks beside the others' in the same column. The columns shown are the tasks some model has a result for:
    after a pipeline run, the configured tasks (config/*.yaml glue.tasks, lra.tasks; every model with the stage has
    them all), which lets the demo's one or two tasks have an average. A result file left by a task since removed
    from the config adds its column too (the report is not told the task list), and then only the models that
    have it get an average: never a wrong one."""
    shown = [tuple(c for c in part if c in columns) for part in AVERAGED.get(benchmark, ())]
    return [part for part in shown if part]


def _average(values: list[list[float | None]]) -> str:
    """The mean over parts of each part's mean; "-" when any value is missing."""
    if not values or any(v is None or pd.isna(v) for part in values for v in part):
        return "-"
    return f"{sum(sum(part) / len(part) for part in values) / len(values):.2f}"


def wide(tidy: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """One row per model (cells as text); each task's score, then the published number whose setup it matches
    ("n/a [k]": none; note k of `reason_notes` says why). Task columns come in the order of the tidy rows.

    `average` is the mean of the model's scores over the parts of `average_parts` (MNLI: the mean of MNLI-m and
    MNLI-mm); "-" for a model that lacks any of those columns, so that every number in the column is over the same
    tasks. `average (published)`: the same mean of the published numbers, where every one of them is there. `demo
    scale`: yes when any of the model's results is demo-scale (effbert.report.comparable)."""
    if tidy.empty:
        return pd.DataFrame(columns=["model", "attention"])
    keys = ["model", "attention"]
    notes = reason_notes(tidy)
    tasks = list(dict.fromkeys(tidy.task))  # the tidy rows' order (GLUE's, LRA Table 3's), not the alphabet
    scores = tidy.pivot_table(index=keys, columns="task", values="score", sort=False).reindex(columns=tasks)
    cells = tidy.assign(cell=[_cell(r.score, r.std, r.seeds) for r in tidy.itertuples()])
    text = cells.pivot(index=keys, columns="task", values="cell").reindex(index=scores.index, columns=tasks)
    rows = {(r["model"], r["task"]): r for _, r in tidy.iterrows()}
    out = pd.DataFrame(index=scores.index)
    models = scores.index.get_level_values("model")
    out["demo scale"] = ["yes" if tidy[tidy.model == m]["demo scale"].any() else "no" for m in models]
    for task in tasks:
        out[task] = text[task].fillna("-")
        out[f"{task} (published)"] = [_published_cell(rows.get((m, task)), notes) for m in models]
    parts = average_parts(benchmark, tasks)
    out["average"] = [_average([[scores.loc[key, c] for c in part] for part in parts]) for key in scores.index]
    out["average (published)"] = [
        _average([[rows[(m, c)]["published"] if (m, c) in rows else None for c in part] for part in parts])
        for m in models]
    return out.reset_index()


def average_note(benchmark: str, tidy: pd.DataFrame) -> str:
    """The line under a wide table that names the tasks its `average` column is over."""
    if tidy.empty:
        return ""
    parts = average_parts(benchmark, list(dict.fromkeys(tidy.task)))
    if not parts:
        return "\naverage: none of the tasks shown is one the benchmark averages.\n"
    names = ", ".join(f"({' + '.join(part)}) / {len(part)}" if len(part) > 1 else part[0] for part in parts)
    count = f"{len(parts)} task" + ("s" if len(parts) > 1 else "")
    return (f"\naverage: the mean over {names} ({count}); - where a model lacks any of them, so that"
            " every average is over the same tasks.\n")


def notes_markdown(tidy: pd.DataFrame) -> str:
    """The numbered reasons the wide table's "n/a [k]" cells refer to."""
    notes = reason_notes(tidy)
    if not notes:
        return ""
    return "\nNo published value beside ours:\n\n" + "".join(f"[{i}] {reason}\n" for reason, i in notes.items())


# The GLUE table's task columns in the leaderboard's order (effbert.constants), MNLI as its two columns: MNLI.json's
# score is the matched accuracy, so its column says so beside MNLI-mm (the published tables name them the same).
GLUE_COLUMNS = tuple(c for task in GLUE_TASKS for c in (("MNLI-m", "MNLI-mm") if task == "MNLI" else (task,)))
MNLI_COLUMNS = {"MNLI": "MNLI-m"}  # task file -> the column its score goes to, where the two differ
INVERSE_COLUMNS = {"MNLI-m": "MNLI", "MNLI-mm": "MNLI"}  # a column -> the task whose runs it is scored from


def _in_order(tidy: pd.DataFrame, order: tuple[str, ...]) -> pd.DataFrame:
    """The rows sorted by task in `order` (a task outside it after, as they came): wide() keeps that order."""
    rank = {task: i for i, task in enumerate(order)}
    return tidy.sort_values("task", key=lambda tasks: tasks.map(lambda t: rank.get(t, len(rank))), kind="stable")


def glue_table(model_dirs: list[Path], tasks: Collection[str] | None = None) -> pd.DataFrame:
    # the published numbers are looked up under the task file's name (MNLI) before the row takes its column's
    tidy = _task_rows(model_dirs, GLUE_DIR, "score", "glue", extra={"MNLI-mm": ("MNLI", "accuracy_mismatched")},
                      tasks=tasks)
    return _in_order(tidy.assign(task=tidy.task.replace(MNLI_COLUMNS)), GLUE_COLUMNS)


def glue_selection(model_dirs: list[Path], tasks: Collection[str] | None = None) -> pd.DataFrame:
    """Which runs stand behind each GLUE score: the protocol, the selected point, the per-seed scores,
    and each task's part of the GLUE score."""
    rows = []
    for d in model_dirs:
        for path in _result_files(d, GLUE_DIR, tasks):
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
    table = pd.DataFrame(rows, columns=["model", "task", "metric", "GLUE part", "batch", "lr", "epochs", "per seed",
                                        "protocol"])
    return _in_order(table, GLUE_TASKS).sort_values("model", kind="stable")


def paper_point_table(model_dirs: list[Path], tidy: pd.DataFrame) -> pd.DataFrame:
    """Each GLUE score that has a published number beside it, again at the paper's own fine-tuning point.

    Our cell is the best grid point chosen on dev and reported on dev, which favours us beside a paper that ran
    one point (Table 2: batch 32, lr 3e-5, but for MRPC's searched grid): here our score at that point, the
    same aggregate over the same seeds, beside the published one. "-" where our grid lacks the point."""
    point = published.GLUE_TABLE2_POINT
    folders = {d.name: d for d in model_dirs}
    rows = []
    for r in tidy.itertuples():
        if r.published is None or pd.isna(r.published):
            continue
        task = INVERSE_COLUMNS.get(r.task, r.task)  # MNLI-m, MNLI-mm: the MNLI runs
        searched = task in published.GLUE_TABLE2_SEARCHED
        ours = r.score if searched else _score_at(folders[r.model], task, r.metric, **point)
        rows.append({"model": r.model, "task": r.task, "metric": r.metric,
                     "fine-tuning": "best of the grid, as the paper's" if searched
                     else f"batch {point['batch_size']}, lr {point['lr']:g}",
                     "ours": ours, "published": r.published,
                     "difference": None if ours is None else ours - r.published, "ours (selected point)": r.score})
    return pd.DataFrame(rows, columns=["model", "task", "metric", "fine-tuning", "ours", "published", "difference",
                                       "ours (selected point)"])


def _score_at(model_dir: Path, task: str, metric: str, batch_size: int, lr: float) -> float | None:
    """The model's `metric` at one grid point, aggregated over its seeds as its selection was; None when the
    config's grid lacks the point (a run file there would be a leftover of another grid) or a run is missing."""
    cfg = load_config(model_dir).glue
    if batch_size not in cfg.batch_size or not any(math.isclose(lr, x, rel_tol=1e-9) for x in cfg.lr):
        return None
    lr = next(x for x in cfg.lr if math.isclose(lr, x, rel_tol=1e-9))  # the run files carry the config's spelling
    paths = [glue_run_path(model_dir, task, GlueRun(batch_size, lr, seed).name) for seed in cfg.seeds]
    if not all(path.is_file() for path in paths):
        return None
    runs = [read_json(path) for path in paths]
    scores = [(run["report_metrics"] if run.get("report_split") else run["metrics"])[metric] for run in runs]
    return float(AGGREGATE[cfg.selection](scores))


def _glue_scores(selection: pd.DataFrame) -> dict[str, str]:
    """model -> the GLUE score (mean of the nine tasks' parts), '-' until all nine are there."""
    out = {}
    for model, rows in selection.groupby("model", sort=False):
        parts = {t: v for t, v in zip(rows.task, rows["GLUE part"], strict=True) if v is not None and not pd.isna(v)}
        score = glue_score(parts)
        out[model] = "-" if score is None else f"{score:.2f}"
    return out


def lra_table(model_dirs: list[Path], tasks: Collection[str] | None = None) -> pd.DataFrame:
    # Table 3's order, then Path-X
    return _in_order(_task_rows(model_dirs, LRA_DIR, "accuracy", "lra", tasks=tasks), LRA_TASKS)


def _markdown(table: pd.DataFrame, verbatim: tuple[str, ...] = ()) -> str:
    """`verbatim` columns are shown as written (a learning rate of 5e-05 is not 0.00)."""
    shown = table.astype(object).where(table.notna(), None)  # a task a model has not run shows as "-"
    keep = [i for i, column in enumerate(shown.columns) if column in verbatim]
    return shown.to_markdown(index=False, floatfmt=".2f", missingval="-", disable_numparse=keep or False) + "\n"


_PUBLISHED = ("Published: the number of the paper row whose setup this run matches (the mechanism and its key"
              " options, the model shape and the protocol: effbert.report.comparable); n/a [k]: none, note k says why."
              f" Demo scale: trained on under {DEMO_SHARE:.0%} of the published setup's budget, a smoke test, not a"
              " measurement.")
NOTES = {
    "pretrain": ("Dev-set masked-LM and sentence-order accuracy (%) of the last checkpoint. Demo scale: pretrained on"
                 f" under {DEMO_SHARE:.0%} of the Nystromformer paper's budget (0.5M steps x 256 x 512 tokens)."),
    "glue": ("Dev-set official metric (x100) per task: the aggregate over seeds (± their standard deviation) at"
             " the grid point whose seeds scored best on dev (selection and score both on dev, as the papers'"
             " dev tables; the last table sets each published number beside our score at the paper's own point)."
             " GLUE: the official score, the mean of the nine tasks' parts (a task with two metrics"
             " counts with their mean), shown once all nine have run. MNLI-m, MNLI-mm: matched, mismatched accuracy."
             " average: not the GLUE score but the mean of the GLUE tasks' columns shown (MNLI once, the mean of"
             " MNLI-m and MNLI-mm; IMDB left out), only for a model that has every one of them (else -), so that"
             " all averages are over the same tasks."
             " IMDB (not part of GLUE): test accuracy, the point chosen on a dev set held out of train."
             f" {_PUBLISHED} Source: {published.GLUE_SOURCE}."),
    "lra": ("Test accuracy (%) of the best-dev checkpoint; mean ± standard deviation over seeds. average: the mean"
            " over the tasks of the paper's Table 3 (listops, text, retrieval, image, pathfinder; not Path-X) that"
            " the table shows, only for a model that has every one of them (else -), so that all averages are"
            " over the same tasks; with all five shown it is Table 3's average. Text: the IMDB release has no"
            " validation split, so its best checkpoint is chosen on the test set, as LRA's own pipeline and the"
            " Nystromformer paper's code do (like for like with the published number, but not held out)."
            f" {_PUBLISHED} Sources: {published.LRA_SOURCE}; {published.LRA_ORIGINAL_SOURCE}."),
}


PAPER_POINT_NOTE = ("At the paper's fine-tuning point: every score above with a published number beside it, now at"
                    " the point where the published rows were fine-tuned (batch 32, lr 3e-5; MRPC: the best of a"
                    " searched grid, as ours; the source names them), with the same aggregate over the same seeds."
                    " The table above reports the best point of our grid, chosen on the dev set it is scored on,"
                    " which favours us; this one compares like with like.")


def write_report(model_dirs: list[Path], out_dir: Path, *, glue_tasks: Collection[str] | None = None,
                 lra_tasks: Collection[str] | None = None) -> dict[str, str]:
    """Write the tables, then their HTML pages and the plots drawn from them (effbert.report.html_page, plots);
    returns name -> Markdown. glue_tasks, lra_tasks: the tasks whose results are read (None: every result file)."""
    model_dirs = [Path(d) for d in model_dirs]
    tidy = {"pretrain": pretrain_table(model_dirs), "glue": glue_table(model_dirs, glue_tasks),
            "lra": lra_table(model_dirs, lra_tasks)}
    assert tuple(tidy) == REPORT_TABLES
    markdown = {}
    for name, table in tidy.items():
        if name == "pretrain":
            text = _markdown(table.assign(**{"demo scale": table["demo scale"].map({True: "yes", False: "no"})}))
        else:
            shown = wide(table, name)
            below = average_note(name, table) + notes_markdown(table)
            if name == "glue" and not shown.empty:
                selection = glue_selection(model_dirs, glue_tasks)
                shown.insert(len(shown.columns) - 1, "GLUE", shown.model.map(_glue_scores(selection)).fillna("-"))
                text = _markdown(shown) + below + "\nSelected runs:\n\n" + _markdown(selection, verbatim=("lr",))
                at_point = paper_point_table(model_dirs, table)
                if not at_point.empty:
                    text += f"\n{PAPER_POINT_NOTE}\n\n" + _markdown(at_point)
            else:
                text = _markdown(shown) + below
        markdown[name] = f"{NOTES[name]}\n\n{text}"
        write_text(report_table(out_dir, name, "csv"), table.to_csv(index=False))
        write_text(report_table(out_dir, name, "md"), f"# {name}\n\n{markdown[name]}")
    write_pages(Path(out_dir))
    write_plots(model_dirs, Path(out_dir))
    return markdown
