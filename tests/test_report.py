"""Result tables: our scores beside the published ones, from the stages' JSON files."""

import json

import pandas as pd

from effbert.files import write_json
from effbert.report.tables import write_report

# The Nystromformer paper's setups (../shared/reference/published-results.md): BERT-base's shape (the config's
# defaults: 12 layers, width 768, 12 heads, FFN 3072, length 512) pretrained with MLM + SOP at batch 256 for 0.5M
# steps (also defaults); its Nystrom is 64 landmarks with a conv of kernel 35 on V. LRA runs at the published
# protocol (no overrides).
PAPER_NYSTROM = {"type": "nystrom", "num_landmarks": 64, "conv_kernel": 35}


def model(root, name, attention, pretrain=None, glue=None, lra=None, config=None):
    """A model folder whose config.json is `config`, or the paper's setup for `attention` (a type or options)."""
    folder = root / name
    folder.mkdir()
    options = attention if isinstance(attention, dict) else {"type": attention}
    (folder / "config.json").write_text(json.dumps(config or {"model": {"attention": options}}))
    if pretrain:
        write_json(folder / "pretrain.json", pretrain)
    for task, result in (glue or {}).items():
        write_json(folder / "glue" / f"{task}.json", result)
    for task, result in (lra or {}).items():
        write_json(folder / "lra" / f"{task}.json", result)
    return folder


def table_rows(markdown: str, first: int = 0) -> list[dict[str, str]]:
    """The rows of the `first`-th Markdown table in `markdown`, as {column: cell text}."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    header, _, *rows = tables[first]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_tables_put_published_numbers_beside_ours(tmp_path):
    pre = {"attention": "nystrom", "steps": 500000, "mlm_accuracy": 41.5, "sop_accuracy": 80.0, "mlm_loss": 2.5,
           "train_tokens": 1000, "seconds": 3.0}
    ny = model(tmp_path, "ny", PAPER_NYSTROM, pretrain=pre,
               glue={"SST-2": {"metric": "accuracy", "score": 90.5},
                     "MNLI": {"metric": "accuracy_matched", "score": 70.0,
                              "metrics": {"accuracy_matched": 70.0, "accuracy_mismatched": 71.0}}},
               lra={"listops": {"accuracy": 36.0}})
    sm = model(tmp_path, "sm", "softmax", glue={"SST-2": {"metric": "accuracy", "score": 88.0}},
               lra={"listops": {"accuracy": 37.5}})
    markdown = write_report([ny, sm], tmp_path / "results")

    glue = pd.read_csv(tmp_path / "results/glue.csv")
    row = glue[(glue.model == "ny") & (glue.task == "MNLI-mm")].iloc[0]
    assert (row.score, row.published, row.metric) == (71.0, 82.2, "accuracy_mismatched")
    assert glue[(glue.model == "sm") & (glue.task == "SST-2")].published.item() == 90.0  # BERT-base
    assert set(glue["published source"]) == {"Nystromformer paper (AAAI 2021), Table 2: BERT-base",
                                             "Nystromformer paper (AAAI 2021), Table 2: Nystromformer"}
    assert glue["not comparable"].isna().all() and not glue["demo scale"].any()

    lra = pd.read_csv(tmp_path / "results/lra.csv")
    assert dict(zip(lra.model, lra.published, strict=True)) == {"ny": 37.15, "sm": 37.10}
    ny_lra = table_rows(markdown["lra"])[0]
    assert (ny_lra["model"], ny_lra["listops"], ny_lra["listops (published)"]) == ("ny", "36.00", "37.15")

    pretrain = pd.read_csv(tmp_path / "results/pretrain.csv")
    assert pretrain.to_dict("records") == [{"model": "ny", "attention": "nystrom", "steps": 500000, "MLM acc": 41.5,
                                            "SOP acc": 80.0, "MLM loss": 2.5, "train tokens": 1000,
                                            "seconds": 3.0, "demo scale": False}]
    ny_glue, sm_glue = table_rows(markdown["glue"])
    # the wide GLUE table averages the tasks shown, MNLI once (the mean of matched and mismatched)
    assert (ny_glue["SST-2"], ny_glue["SST-2 (published)"]) == ("90.50", "91.40")
    assert ny_glue["average"] == f"{(90.5 + (70.0 + 71.0) / 2) / 2:.2f}"
    assert ny_glue["average (published)"] == f"{(91.4 + (80.9 + 82.2) / 2) / 2:.2f}"
    assert ny_glue["GLUE"] == "-"  # not the GLUE score until all nine tasks have run
    assert sm_glue["MNLI-m"] == sm_glue["MNLI-m (published)"] == "-"  # the softmax model ran no MNLI
    assert sm_glue["average"] == sm_glue["average (published)"] == "-"  # so no average over fewer tasks
    for name in ("pretrain", "glue", "lra"):
        assert (tmp_path / f"results/{name}.md").read_text().startswith(f"# {name}\n")


def test_seed_spread_and_the_official_glue_score(tmp_path):
    from effbert.constants import GLUE_SCORE_TASKS
    from effbert.data.glue import get_task

    glue = {}
    for i, task in enumerate(GLUE_SCORE_TASKS):
        parts = {name: 60.0 + i + k for k, name in enumerate(get_task(task).score_metrics)}
        main = next(iter(parts))
        glue[task] = {"metric": main, "score": parts[main], "score_std": 0.5, "metrics": parts,
                      "glue_score": sum(parts.values()) / len(parts), "selection": "mean",
                      "selected": {"batch_size": 32, "lr": 3e-5, "epochs": 3, "seeds": [0, 1, 2]},
                      "per_seed": {"0": parts[main] - 0.5, "1": parts[main], "2": parts[main] + 0.5},
                      "protocol": "mean of 3 seeds"}
    ny = model(tmp_path, "ny", "nystrom", glue=glue, lra={"listops": {"accuracy": 36.0, "accuracy_std": 1.25,
                                                                      "seeds": [0, 1]}})
    markdown = write_report([ny], tmp_path / "results")
    row = table_rows(markdown["glue"])[0]
    assert row["SST-2"] == "61.00 ± 0.50"
    # GLUE: mean of the nine parts; MRPC, QQP, STS-B and MNLI count with the mean of their two metrics
    expected = sum(60.0 + i + 0.5 * (len(get_task(t).score_metrics) - 1) for i, t in enumerate(GLUE_SCORE_TASKS)) / 9
    assert row["GLUE"] == f"{expected:.2f}"
    selected = {r["task"]: r for r in table_rows(markdown["glue"], first=1)}
    assert selected["MRPC"]["GLUE part"] == "62.50" and selected["MRPC"]["per seed"] == "0: 61.5, 1: 62.0, 2: 62.5"
    assert table_rows(markdown["lra"])[0]["listops"] == "36.00 ± 1.25"


def _lra(**accuracy: float) -> dict[str, dict]:
    return {task: {"accuracy": value} for task, value in accuracy.items()}


def test_an_lra_average_is_over_the_same_tasks_for_every_model(tmp_path):
    from effbert.report.published import LRA_ANCHORS

    full = {"pathfinder": 70.0, "image": 40.0, "listops": 37.0, "retrieval": 79.0, "text": 65.0, "pathx": 50.0}
    short = {task: full[task] + 1.0 for task in ("listops", "text", "retrieval", "image")}  # no Pathfinder
    a = model(tmp_path, "a", "softmax", lra=_lra(**full))
    b = model(tmp_path, "b", "softmax", lra=_lra(**short))
    markdown = write_report([a, b], tmp_path / "results")

    rows = {row["model"]: row for row in table_rows(markdown["lra"])}
    # LRA Table 3's order (not the alphabet), Path-X after it
    tasks = [c for c in rows["a"] if c in full]
    assert tasks == ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
    # Table 3's five tasks; Path-X is outside the average
    table3 = [full[t] for t in ("listops", "text", "retrieval", "image", "pathfinder")]
    assert rows["a"]["average"] == f"{sum(table3) / 5:.2f}"
    paper = next(a.scores for a in LRA_ANCHORS if a.name == "softmax")
    assert all(rows["a"][f"{t} (published)"] == f"{paper[t]:.2f}" for t in tasks[:5])  # the paper's setup
    assert rows["a"]["average (published)"] == f"{sum(paper[t] for t in tasks[:5]) / 5:.2f}"
    # b lacks Pathfinder: an average over four tasks would sit in the same column as a's over five
    assert rows["b"]["pathfinder"] == "-"
    assert rows["b"]["average"] == rows["b"]["average (published)"] == "-"
    assert "average: the mean over listops, text, retrieval, image, pathfinder (5 tasks)" in markdown["lra"]
    assert list(dict.fromkeys(pd.read_csv(tmp_path / "results/lra.csv").task)) == tasks  # the tidy rows too


def test_the_demo_lra_average_is_over_its_one_configured_task(tmp_path):
    # the tasks a report averages are the ones its table shows: the demo runs only ListOps
    a = model(tmp_path, "a", "softmax", lra=_lra(listops=30.0))
    b = model(tmp_path, "b", "nystrom", lra=_lra(listops=28.5))
    markdown = write_report([a, b], tmp_path / "results")
    assert [row["average"] for row in table_rows(markdown["lra"])] == ["30.00", "28.50"]
    assert "average: the mean over listops (1 task)" in markdown["lra"]


def test_the_glue_average_leaves_out_imdb_and_counts_mnli_once(tmp_path):
    def accuracy(score: float) -> dict:
        return {"metric": "accuracy", "score": score}

    mnli = {"metric": "accuracy_matched", "score": 80.0,
            "metrics": {"accuracy_matched": 80.0, "accuracy_mismatched": 83.0}}
    glue = {"QNLI": accuracy(88.0), "SST-2": accuracy(91.0), "MRPC": {"metric": "f1", "score": 87.0},
            "MNLI": mnli, "IMDB": accuracy(93.0)}
    ny = model(tmp_path, "ny", PAPER_NYSTROM, glue=glue)
    no_mrpc = model(tmp_path, "no-mrpc", PAPER_NYSTROM, glue={k: v for k, v in glue.items() if k != "MRPC"})
    markdown = write_report([ny, no_mrpc], tmp_path / "results")

    rows = {row["model"]: row for row in table_rows(markdown["glue"])}
    # the leaderboard's order (not the alphabet); MNLI's score is the matched accuracy and its header says so
    shown = [c for c in rows["ny"] if c in ("SST-2", "MRPC", "MNLI", "MNLI-m", "MNLI-mm", "QNLI", "IMDB")]
    assert shown == ["SST-2", "MRPC", "MNLI-m", "MNLI-mm", "QNLI", "IMDB"]
    assert (rows["ny"]["MNLI-m"], rows["ny"]["MNLI-mm"]) == ("80.00", "83.00")
    # four GLUE tasks, MNLI's part the mean of m and mm; IMDB (not GLUE, test accuracy) left out
    assert rows["ny"]["average"] == f"{(91.0 + 87.0 + (80.0 + 83.0) / 2 + 88.0) / 4:.2f}"
    # the Nystromformer paper's Table 2 numbers, averaged the same way
    assert rows["ny"]["average (published)"] == f"{(91.4 + 88.1 + (80.9 + 82.2) / 2 + 88.7) / 4:.2f}"
    assert rows["no-mrpc"]["average"] == rows["no-mrpc"]["average (published)"] == "-"
    assert "average: the mean over SST-2, MRPC, (MNLI-m + MNLI-mm) / 2, QNLI (4 tasks)" in markdown["glue"]
    glue_csv = pd.read_csv(tmp_path / "results/glue.csv")
    assert set(glue_csv[glue_csv.model == "ny"].task) == {"SST-2", "MRPC", "MNLI-m", "MNLI-mm", "QNLI", "IMDB"}
    assert glue_csv[(glue_csv.model == "ny") & (glue_csv.task == "MNLI-m")].published.item() == 80.9
    # the selected runs stay per task (MNLI's run gives both columns), in the same order
    selected = [row["task"] for row in table_rows(markdown["glue"], first=1) if row["model"] == "ny"]
    assert selected == ["SST-2", "MRPC", "MNLI", "QNLI", "IMDB"]


def test_the_report_reads_only_the_tasks_it_is_given(tmp_path):
    """The pipeline names its configured tasks (`effbert report --glue-tasks ... --lra-tasks ...`): a result left
    by a task since dropped from the config is no column, no selected run and no part of an average; without
    the flags (by hand) every result file is read."""
    from effbert.cli import main

    a = model(tmp_path, "a", "softmax", glue={"SST-2": {"metric": "accuracy", "score": 90.0},
                                              "RTE": {"metric": "accuracy", "score": 60.0}},
              lra=_lra(listops=37.0, text=64.0))
    b = model(tmp_path, "b", "softmax", glue={"SST-2": {"metric": "accuracy", "score": 88.0}},
              lra=_lra(listops=36.0))
    out = tmp_path / "results"
    assert main(["report", "--models", str(a), str(b), "--out", str(out), "--glue-tasks", "SST-2", "CoLA",
                 "--lra-tasks", "listops"]) == 0
    glue, lra = (pd.read_csv(out / f"{name}.csv") for name in ("glue", "lra"))
    assert sorted(glue.task.unique()) == ["SST-2"] and sorted(lra.task.unique()) == ["listops"]
    glue_md = (out / "glue.md").read_text()
    assert {row["model"]: row["average"] for row in table_rows(glue_md)} == {"a": "90.00", "b": "88.00"}
    assert [row["task"] for row in table_rows(glue_md, first=1)] == ["SST-2", "SST-2"]  # the selected runs
    assert main(["report", "--models", str(a), str(b), "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out / "glue.csv").task.unique()) == ["RTE", "SST-2"]
    averages = {row["model"]: row["average"] for row in table_rows((out / "lra.md").read_text())}
    assert averages == {"a": "50.50", "b": "-"}  # text is back: a has both tasks, b lacks one


def test_published_glue_numbers_are_also_set_beside_ours_at_the_papers_point(tmp_path):
    """Our cell is the best grid point chosen on dev and scored on dev; the paper fine-tuned at batch 32, lr 3e-5
    (MRPC: a searched grid). So each published number is also set beside our score at that point: the mean over
    the seeds of the runs there, read from their files; a model whose grid lacks the point gets "-"."""
    pre = {"attention": "nystrom", "steps": 500000, "mlm_accuracy": 41.5, "sop_accuracy": 80.0, "mlm_loss": 2.5,
           "train_tokens": 1000, "seconds": 3.0}
    grid = {"batch_size": [16, 32], "lr": [2e-5, 3e-5], "seeds": [0, 1]}
    config = {"model": {"attention": PAPER_NYSTROM}, "glue": grid}
    selected = {"batch_size": 16, "lr": 2e-5, "epochs": 3, "seeds": [0, 1]}
    glue = {"SST-2": {"metric": "accuracy", "score": 92.0, "selection": "mean", "selected": selected},
            "MRPC": {"metric": "f1", "score": 89.0, "selection": "mean", "selected": selected}}
    ny = model(tmp_path, "ny", PAPER_NYSTROM, pretrain=pre, glue=glue, config=config)
    at_point = {0: 90.5, 1: 91.5}  # SST-2 accuracy of the two seeds at batch 32, lr 3e-5
    for seed, accuracy in at_point.items():
        write_json(ny / "glue" / "SST-2" / f"bs32-lr3e-05-seed{seed}.json", {"metrics": {"accuracy": accuracy}})
    narrow = model(tmp_path, "narrow", PAPER_NYSTROM, pretrain=pre, glue={"SST-2": glue["SST-2"]},
                   config={**config, "glue": {**grid, "batch_size": [16]}})
    for seed in (0, 1):  # a leftover of an earlier grid: not the config's, so not read
        write_json(narrow / "glue" / "SST-2" / f"bs32-lr3e-05-seed{seed}.json", {"metrics": {"accuracy": 50.0}})
    markdown = write_report([ny, narrow], tmp_path / "results")

    rows = {(r["model"], r["task"]): r for r in table_rows(markdown["glue"], first=2)}
    sst2 = rows[("ny", "SST-2")]
    ours = sum(at_point.values()) / 2
    assert (sst2["fine-tuning"], sst2["ours"], sst2["published"]) == ("batch 32, lr 3e-05", f"{ours:.2f}", "91.40")
    assert (sst2["difference"], sst2["ours (selected point)"]) == (f"{ours - 91.4:.2f}", "92.00")
    mrpc = rows[("ny", "MRPC")]  # the paper searched MRPC's grid too: our selected point is the like for like
    assert (mrpc["fine-tuning"], mrpc["ours"], mrpc["published"]) == ("best of the grid, as the paper's", "89.00",
                                                                     "88.10")
    assert rows[("narrow", "SST-2")]["ours"] == rows[("narrow", "SST-2")]["difference"] == "-"
