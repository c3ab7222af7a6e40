"""Result tables: our scores beside the published ones, from the stages' JSON files."""

import json

import pandas as pd

from effbert.files import write_json
from effbert.report.tables import write_report


def model(root, name, attention, pretrain=None, glue=None, lra=None):
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {"attention": {"type": attention}}}))
    if pretrain:
        write_json(folder / "pretrain.json", pretrain)
    for task, result in (glue or {}).items():
        write_json(folder / "glue" / f"{task}.json", result)
    for task, result in (lra or {}).items():
        write_json(folder / "lra" / f"{task}.json", result)
    return folder


def test_tables_put_published_numbers_beside_ours(tmp_path):
    pre = {"attention": "nystrom", "steps": 10, "mlm_accuracy": 41.5, "sop_accuracy": 80.0, "mlm_loss": 2.5,
           "train_tokens": 1000, "seconds": 3.0}
    ny = model(tmp_path, "ny", "nystrom", pretrain=pre,
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

    lra = pd.read_csv(tmp_path / "results/lra.csv")
    assert dict(zip(lra.model, lra.published, strict=True)) == {"ny": 37.15, "sm": 37.10}
    assert "| ny      | nystrom     |     36.00 |                 37.15 |" in markdown["lra"]

    pretrain = pd.read_csv(tmp_path / "results/pretrain.csv")
    assert pretrain.to_dict("records") == [{"model": "ny", "attention": "nystrom", "steps": 10, "MLM acc": 41.5,
                                            "SOP acc": 80.0, "MLM loss": 2.5, "train tokens": 1000,
                                            "seconds": 3.0}]
    # the wide GLUE table averages each model's own tasks
    assert "90.50 |               91.40 |     77.17 |" in markdown["glue"]
    # the softmax model ran no MNLI: its cell says so, and BERT-base's published number still stands beside it
    assert "| sm      | softmax     |   -    |              82.40 |" in markdown["glue"]
    for name in ("pretrain", "glue", "lra"):
        assert (tmp_path / f"results/{name}.md").read_text().startswith(f"# {name}\n")
