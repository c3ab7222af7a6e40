"""The GLUE fine-tuning protocol: a grid of runs per task, then an honest selection among them.

config.json names the grid ("glue": {"batch_size": [16, 32], "lr": [2e-5, ...], "seeds": [0, 1, 2]});
every (batch_size, lr) point is fine-tuned once per seed, each run in its own file:

    models/<name>/glue/<TASK>/bs32-lr3e-05-seed0.json     one run (+ .jsonl training log, submission/)

`select_runs` aggregates each point's dev scores over its seeds (mean, median or max: `selection`), picks
the point whose aggregate GLUE score (the task's official metrics averaged, as the leaderboard ranks) is
best, and reports that aggregate with the spread over seeds; the point's best-dev seed supplies the test
predictions copied to models/<name>/glue/submission/.

    models/<name>/glue/<TASK>.json                         the selected result, read by the report

Selection and reported score both use dev data, as the papers' dev tables do; the table says so. The exception is
a task whose runs were also scored on a labelled `report_split` (IMDB: no dev set of its own, so dev is held out of
train and the test set is reported, as the Nystromformer paper's Table 2 reports it): the point is still chosen on
dev, and its runs' `report_metrics` are what is aggregated and reported; the protocol line says "scored on test".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from effbert.config import GlueConfig, load_config
from effbert.data.glue import get_task, task_score
from effbert.errors import InputError
from effbert.files import atomic_path, read_json, write_json
from effbert.layout import (
    GlueRun,
    glue_result,
    glue_run_path,
    glue_run_submission_dir,
    glue_submission_dir,
)


def task_epochs(cfg: GlueConfig, task: str) -> int:
    """The config's epochs for `task`: an int for every task, a {task: epochs} entry, else the task's default."""
    default = get_task(task).epochs  # an unknown task is refused whatever the config says
    if isinstance(cfg.epochs, int):
        return cfg.epochs
    return (cfg.epochs or {}).get(task, default)


def grid(cfg: GlueConfig) -> list[GlueRun]:
    """Every run of the grid, in the config's order: batch sizes, then learning rates, then seeds."""
    return [GlueRun(bs, lr, seed) for bs in cfg.batch_size for lr in cfg.lr for seed in cfg.seeds]


def run_path(model_dir: Path, task: str, run: GlueRun) -> Path:
    return glue_run_path(model_dir, task, run.name)


AGGREGATE = {"mean": np.mean, "median": np.median, "max": np.max}


def _describe(cfg: GlueConfig, points: int, reported: str | None = None) -> str:
    seeds = len(cfg.seeds)
    how = {"mean": "mean", "median": "median", "max": "best"}[cfg.selection]
    batches = "/".join(str(b) for b in cfg.batch_size)
    lrs = "/".join(f"{lr:g}" for lr in cfg.lr)
    return (f"{how} of {seeds} seed{'s' * (seeds > 1)} at the best of {points} grid point{'s' * (points > 1)}"
            f" (batch {batches} x lr {lrs}), selected on dev" + (f", scored on {reported}" if reported else ""))


def select_runs(task: str, runs: dict[GlueRun, dict], cfg: GlueConfig) -> dict:
    """The selected grid point's aggregated scores; `runs` maps every run of the grid to its result."""
    aggregate = AGGREGATE[cfg.selection]
    points: dict[tuple[int, float], list[GlueRun]] = {}
    for run in grid(cfg):
        points.setdefault((run.batch_size, run.lr), []).append(run)
    table = []
    for (batch_size, lr), members in points.items():
        scores = [task_score(task, runs[r]["metrics"]) for r in members]
        table.append({"batch_size": batch_size, "lr": lr, "dev": float(aggregate(scores)),
                      "dev_per_seed": {str(r.seed): s for r, s in zip(members, scores, strict=True)}})
    chosen = max(range(len(table)), key=lambda i: (table[i]["dev"], -i))  # the first of equal points wins
    members = list(points.values())[chosen]
    results = [runs[r] for r in members]
    reported = results[0].get("report_split")  # None: the dev metrics are reported
    shown = [r["report_metrics"] if reported else r["metrics"] for r in results]
    metrics = {k: float(aggregate([m[k] for m in shown])) for k in shown[0]}
    spread = {k: float(np.std([m[k] for m in shown], ddof=1)) if len(shown) > 1 else 0.0 for k in metrics}
    main = results[0]["metric"]
    best = max(range(len(members)), key=lambda i: (task_score(task, results[i]["metrics"]), -i))
    return {
        "task": task,
        "metric": main,
        "score": metrics[main],
        "score_std": spread[main],
        "glue_score": float(aggregate([task_score(task, m) for m in shown])),
        "metrics": metrics,
        "metrics_std": spread,
        "protocol": _describe(cfg, len(points), reported),
        "selection": cfg.selection,
        "selected": {"batch_size": members[0].batch_size, "lr": members[0].lr,
                     "epochs": results[0]["hyperparameters"]["epochs"], "seeds": [r.seed for r in members]},
        "submission_run": members[best].name,
        "per_seed": {str(r.seed): m[main] for r, m in zip(members, shown, strict=True)},
        "grid": table,
        "dev_examples": results[0]["dev_examples"],
        **({"report_split": reported, "report_examples": results[0]["report_examples"]} if reported else {}),
        "train_examples": results[0]["train_examples"],
        "seconds": round(sum(r["seconds"] for r in runs.values()), 2),
    }


def _listed(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def gather(model_dir: Path, task: str, expected: dict[GlueRun, dict] | None = None) -> dict:
    """Select among the finished runs of the model's grid; write glue/<TASK>.json and the submission files.

    `expected`: each run's identity now (effbert.train.identity); a run made under another is not used."""
    get_task(task)  # an unknown task is named as such, not as a grid with no finished runs
    model_dir = Path(model_dir)
    cfg = load_config(model_dir).glue
    paths = {run: run_path(model_dir, task, run) for run in grid(cfg)}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{model_dir}: GLUE {task}: {len(missing)} run(s) of the grid have not finished: "
                         f"{_listed(missing)}")
    runs = {run: read_json(path) for run, path in paths.items()}
    stale = [paths[run] for run, found in runs.items() if expected and found.get("identity") != expected[run]]
    if stale:
        raise InputError(f"{model_dir}: GLUE {task}: {len(stale)} run(s) were made under other settings or weights "
                         f"than config.json's now; run them again: {_listed(stale)}")
    result = select_runs(task, runs, cfg)
    chosen = GlueRun.parse(result["submission_run"])
    predictions = glue_run_submission_dir(model_dir, task, chosen.name)
    result["submission"] = []
    for name in runs[chosen].get("submission", []):
        with atomic_path(glue_submission_dir(model_dir) / name) as tmp:
            shutil.copyfile(predictions / name, tmp)
        result["submission"].append(name)
    write_json(glue_result(model_dir, task), result)
    return result

