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
    # the wide GLUE table averages each model's own tasks; the published average is over the same tasks
    assert (ny_glue["SST-2"], ny_glue["SST-2 (published)"], ny_glue["average"]) == ("90.50", "91.40", "77.17")
    assert ny_glue["average (published)"] == f"{(91.4 + 80.9 + 82.2) / 3:.2f}"
    assert ny_glue["GLUE"] == "-"  # not the GLUE score until all nine tasks have run
    assert sm_glue["MNLI"] == sm_glue["MNLI (published)"] == "-"  # the softmax model ran no MNLI
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
