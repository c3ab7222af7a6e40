"""The GLUE protocol: grid runs, their names, the selection among them, and the gather step's files."""

import json
import statistics
from pathlib import Path

import pytest

from effbert.config import GlueConfig
from effbert.constants import GLUE_SCORE_TASKS
from effbert.data.glue import glue_score, task_score
from effbert.errors import InputError
from effbert.files import write_json
from effbert.train.glue_protocol import GlueRun, gather, grid, run_path, select_runs, task_epochs


def test_run_names_round_trip():
    for run in (GlueRun(32, 3e-5, 0), GlueRun(16, 0.001, 12), GlueRun(8, 2.5e-4, -1)):
        assert GlueRun.parse(run.name) == run
    assert GlueRun(32, 3e-5, 0).name == "bs32-lr3e-05-seed0"
    with pytest.raises(InputError, match="not a GLUE run name"):
        GlueRun.parse("bs32-lr3e-05")


def test_grid_order_and_epochs():
    cfg = GlueConfig(batch_size=[16, 32], lr=[2e-5, 3e-5], seeds=[0, 1])
    assert [r.name for r in grid(cfg)][:3] == ["bs16-lr2e-05-seed0", "bs16-lr2e-05-seed1", "bs16-lr3e-05-seed0"]
    assert len(grid(cfg)) == 8
    assert len(grid(GlueConfig())) == 2 * 4 * 3  # the papers' grid x three seeds
    # epochs: each task's default, overridden per task or for all
    assert (task_epochs(cfg, "MRPC"), task_epochs(cfg, "MNLI")) == (5, 4)
    assert task_epochs(GlueConfig(epochs={"MNLI": 2}), "MNLI") == 2
    assert task_epochs(GlueConfig(epochs={"MNLI": 2}), "RTE") == 5
    assert task_epochs(GlueConfig(epochs=3), "RTE") == 3


def test_task_and_glue_scores_by_hand():
    assert task_score("MRPC", {"f1": 90.0, "accuracy": 86.0}) == 88.0
    assert task_score("MNLI", {"accuracy_matched": 80.0, "accuracy_mismatched": 81.0, "x": 0.0}) == 80.5
    assert task_score("STS-B", {"pearson": 1.0, "spearman": 3.0, "pearson_spearman_mean": 2.0}) == 2.0
    assert task_score("CoLA", {"mcc": 50.0, "accuracy": 80.0}) == 50.0
    parts = {task: float(i) for i, task in enumerate(GLUE_SCORE_TASKS)}
    assert glue_score(parts) == 4.0  # (0 + 1 + ... + 8) / 9
    assert glue_score({k: v for k, v in parts.items() if k != "WNLI"}) is None
    assert glue_score(parts | {"AX": 1000.0}) == 4.0  # the diagnostic set is not scored


def _run_result(task: str, run: GlueRun, metrics: dict[str, float], epochs: int = 5) -> dict:
    main = "f1" if task == "MRPC" else "accuracy"
    return {"task": task, "run": run.name, "metric": main, "score": metrics[main], "metrics": metrics,
            "dev_examples": 408, "train_examples": 3668, "seconds": 1.0,
            "hyperparameters": {"batch_size": run.batch_size, "lr": run.lr, "epochs": epochs, "seed": run.seed},
            "submission": []}


# MRPC dev scores per (batch, lr): one (f1, accuracy) pair per seed. (16, 2e-5) has the best mean but a
# poor median; (32, 3e-5) has the best median; (16, 3e-5) holds the single best run.
MRPC_SCORES = {
    (16, 2e-5): [(90.0, 86.0), (90.0, 86.0), (70.0, 60.0)],   # task scores 88, 88, 65: mean 80.33, median 88
    (16, 3e-5): [(95.0, 93.0), (60.0, 50.0), (60.0, 50.0)],   # 94, 55, 55: mean 68, median 55, max 94
    (32, 2e-5): [(70.0, 66.0), (70.0, 66.0), (70.0, 66.0)],   # 68 x 3
    (32, 3e-5): [(91.0, 87.0), (91.0, 87.0), (40.0, 40.0)],   # 89, 89, 40: mean 72.67, median 89
}


def _mrpc_runs(cfg: GlueConfig) -> dict[GlueRun, dict]:
    return {run: _run_result("MRPC", run, dict(zip(("f1", "accuracy"),
                                                   MRPC_SCORES[(run.batch_size, run.lr)][run.seed], strict=True)))
            for run in grid(cfg)}


@pytest.mark.parametrize(("selection", "point", "f1s"), [
    ("mean", (16, 2e-5), [90.0, 90.0, 70.0]),
    ("median", (32, 3e-5), [91.0, 91.0, 40.0]),
    ("max", (16, 3e-5), [95.0, 60.0, 60.0]),
])
def test_selection_aggregates_seeds_then_picks_the_best_point(selection, point, f1s):
    cfg = GlueConfig(batch_size=[16, 32], lr=[2e-5, 3e-5], seeds=[0, 1, 2], selection=selection)
    result = select_runs("MRPC", _mrpc_runs(cfg), cfg)
    assert (result["selected"]["batch_size"], result["selected"]["lr"]) == point
    aggregate = {"mean": statistics.mean, "median": statistics.median, "max": max}[selection]
    assert result["score"] == pytest.approx(aggregate(f1s))
    assert result["score_std"] == pytest.approx(statistics.stdev(f1s))
    assert result["metric"] == "f1" and result["selected"]["epochs"] == 5
    assert result["per_seed"] == {"0": f1s[0], "1": f1s[1], "2": f1s[2]}
    # the submission comes from the selected point's best seed (the first of equals)
    best_seed = max(range(3), key=lambda s: (MRPC_SCORES[point][s][0] + MRPC_SCORES[point][s][1], -s))
    assert result["submission_run"] == GlueRun(*point, best_seed).name
    assert len(result["grid"]) == 4
    how = {"mean": "mean", "median": "median", "max": "best"}[selection]
    assert result["protocol"].startswith(f"{how} of 3 seeds at the best of 4 grid points")


def test_equal_points_keep_the_first_and_one_seed_has_no_spread():
    cfg = GlueConfig(batch_size=[16, 32], lr=[2e-5], seeds=[0])
    runs = {run: _run_result("SST-2", run, {"accuracy": 80.0}) for run in grid(cfg)}
    result = select_runs("SST-2", runs, cfg)
    assert result["selected"]["batch_size"] == 16 and result["score_std"] == 0.0


def _write_grid(model_dir: Path, cfg: dict, task: str, metrics_of) -> None:
    (model_dir / "config.json").write_text(json.dumps({"glue": cfg}), encoding="utf-8")
    for run in grid(GlueConfig(**cfg)):
        result = _run_result(task, run, metrics_of(run))
        result["submission"] = [f"{task}.tsv"]
        write_json(run_path(model_dir, task, run), result)
        folder = run_path(model_dir, task, run).with_suffix("") / "submission"
        folder.mkdir(parents=True)
        (folder / f"{task}.tsv").write_text(f"index\tprediction\n0\t{run.name}\n", encoding="utf-8")


def test_gather_writes_the_selection_and_copies_the_chosen_runs_submission(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    cfg = {"batch_size": [16, 32], "lr": [2e-5, 3e-5], "seeds": [0, 1, 2]}
    _write_grid(model_dir, cfg, "MRPC", lambda run: dict(zip(
        ("f1", "accuracy"), MRPC_SCORES[(run.batch_size, run.lr)][run.seed], strict=True)))
    result = gather(model_dir, "MRPC")
    assert json.loads((model_dir / "glue" / "MRPC.json").read_text()) == result
    assert result["submission_run"] == "bs16-lr2e-05-seed0" and result["submission"] == ["MRPC.tsv"]
    assert (model_dir / "glue" / "submission" / "MRPC.tsv").read_text().endswith("\tbs16-lr2e-05-seed0\n")
    assert result["glue_score"] == pytest.approx((88 + 88 + 65) / 3)

    # a run of the grid that has not finished: an error naming it, and the selection is left as it was
    run_path(model_dir, "MRPC", GlueRun(32, 3e-5, 2)).unlink()
    before = (model_dir / "glue" / "MRPC.json").read_text()
    with pytest.raises(InputError, match=r"1 run\(s\) of the grid have not finished: .*bs32-lr3e-05-seed2\.json"):
        gather(model_dir, "MRPC")
    assert (model_dir / "glue" / "MRPC.json").read_text() == before


def test_gather_ignores_runs_outside_the_configured_grid(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    _write_grid(model_dir, {"batch_size": [16, 32], "lr": [2e-5], "seeds": [0]}, "SST-2",
                lambda run: {"accuracy": 99.0 if run.batch_size == 32 else 70.0})
    # the grid shrinks to batch 16: the better batch-32 run on disk must not be picked
    (model_dir / "config.json").write_text(json.dumps({"glue": {"batch_size": 16, "lr": 2e-5, "seeds": [0]}}))
    assert gather(model_dir, "SST-2")["score"] == 70.0


def test_a_reported_split_is_reported_while_dev_still_selects():
    """IMDB: dev (held out of train) chooses the point; the chosen point's test metrics are what is reported."""
    cfg = GlueConfig(batch_size=[16], lr=[2e-5, 3e-5], seeds=[0, 1])
    dev = {2e-5: (80.0, 82.0), 3e-5: (90.0, 92.0)}   # 3e-5 is better on dev: mean 91 against 81
    test = {2e-5: (99.0, 99.0), 3e-5: (70.0, 74.0)}  # ... and worse on test, which must not sway the choice
    runs = {}
    for run in grid(cfg):
        runs[run] = _run_result("IMDB", run, {"accuracy": dev[run.lr][run.seed]}) | {
            "report_split": "test", "report_examples": 25000,
            "report_metrics": {"accuracy": test[run.lr][run.seed]}}
    result = select_runs("IMDB", runs, cfg)
    assert result["selected"]["lr"] == 3e-5 and [row["dev"] for row in result["grid"]] == [81.0, 91.0]
    assert result["score"] == 72.0 and result["per_seed"] == {"0": 70.0, "1": 74.0}
    assert result["score_std"] == pytest.approx(statistics.stdev([70.0, 74.0]))
    assert result["report_split"] == "test" and result["report_examples"] == 25000
    assert result["protocol"].endswith("selected on dev, scored on test")
    assert result["submission_run"] == "bs16-lr3e-05-seed1"  # the best seed on dev, as for every task


def test_an_unknown_task_is_named_not_taken_for_a_grid_with_no_finished_runs(tmp_path):
    """glue-select's library path (gather, and the epochs every run's identity records) refuses an unknown task
    first: 'unknown GLUE task', not '1 run(s) of the grid have not finished'."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    _write_grid(model_dir, {"batch_size": 16, "lr": 2e-5, "seeds": [0], "epochs": 3}, "SST-2",
                lambda run: {"accuracy": 80.0})
    with pytest.raises(InputError, match=r"unknown GLUE task 'FOO'; expected one of \[.*'SST-2'"):
        gather(model_dir, "FOO")
    for epochs in (3, {"MNLI": 2}, None):
        with pytest.raises(InputError, match="unknown GLUE task 'sst-2'"):
            task_epochs(GlueConfig(epochs=epochs), "sst-2")
    assert not (model_dir / "glue" / "FOO.json").exists()
    assert gather(model_dir, "SST-2")["score"] == 80.0
