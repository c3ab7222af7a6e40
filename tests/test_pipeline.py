"""The Snakemake DAG end to end: the demo runs to result tables, reruns nothing, and an edited model
folder reruns only that model's jobs; the real-scale config lists the whole DAG."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import conftest
from conftest import copy_project, planned_jobs


def snakemake(cwd: Path, *args: str) -> str:
    done = conftest.snakemake(cwd, *args)
    return done.stdout + done.stderr


def test_real_scale_dry_run_lists_the_whole_dag(tmp_path):
    project = copy_project(tmp_path, ["models"])
    for raw in ("wiki", "bookcorpus", "stories", "realnews"):
        (project / "data-preprocessing" / raw).mkdir(parents=True)
    tasks = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
    for task in tasks:
        (project / "glue" / task).mkdir(parents=True)
    lra_tasks = ["aclImdb", "tsv_data", "cifar-10-batches-py", "pathfinder32/curv_contour_length_14/metadata"]
    for folder in lra_tasks:  # the LRA release's folders (ListOps is generated)
        (project / "lra" / "lra_release" / folder).mkdir(parents=True)
    plan = snakemake(project, "-n", "--cores", "1", "-p")
    jobs = planned_jobs(plan)
    models = len(list((project / "models").glob("*/config.json")))
    # 512 shards from Wikipedia + BookCorpus; the 4096 set adds a third of Stories and of RealNews
    assert jobs == Counter({
        "extract_documents": 4, "build_tokenizer": 1, "build_shards": 2, "pretrain_model": models,
        "finetune_glue": models * len(tasks) * 2 * 4 * 3, "select_glue": models * len(tasks),
        "generate_listops": 1, "train_lra": models * 5 * 3, "gather_lra": models * 5, "report": 1, "all": 1,
    })
    long_shards = next(line for line in plan.splitlines() if "effbert shards" in line and "4096" in line)
    assert "text/stories data-preprocessing/text/realnews" in long_shards
    assert "--sample_probs 1.0 1.0 0.333 0.333" in long_shards
    # the 4096 model starts from the 512 one: its pretraining waits for that model's
    inputs = re.search(r"input: (.*)\n\s*output: models/nystrom-4096/pretrain.json", plan).group(1)
    assert "models/nystrom-512/pretrain.json" in inputs


@pytest.mark.slow
def test_demo_dag_end_to_end(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    demo = ["--configfile", "config/demo.yaml", "--cores", "2"]
    snakemake(project, *demo)

    results = project / "demo/out/results"
    pretrain = pd.read_csv(results / "pretrain.csv")
    glue = pd.read_csv(results / "glue.csv")
    lra = pd.read_csv(results / "lra.csv")
    assert sorted(pretrain.model) == ["nystrom", "softmax"]
    assert set(zip(glue.model, glue.task, strict=True)) == {
        (m, t) for m in ("nystrom", "softmax") for t in ("SST-2", "MRPC")}
    assert sorted(lra.model) == ["nystrom", "softmax"] and set(lra.task) == {"listops"}
    # the tiny models learn something: far above the chance of guessing one of ~2000 tokens
    assert (pretrain["MLM acc"] > 10).all()
    assert (glue[glue.task == "SST-2"].score > 70).all()
    assert lra.published.tolist() == [37.15 if m == "nystrom" else 37.10 for m in lra.model]
    assert "| model" in (results / "glue.md").read_text()
    # each score aggregates the two seeds of the better of the two learning rates
    selected = json.loads((project / "demo/models/softmax/glue/SST-2.json").read_text())
    assert selected["selected"]["seeds"] == [0, 1] and selected["selected"]["lr"] in (5e-4, 1e-3)
    assert (project / "demo/models/softmax/glue/submission/SST-2.tsv").is_file()

    # rerunning does nothing
    assert "Nothing to be done" in snakemake(project, *demo, "-n")

    # editing one model's config.json reruns only that model's jobs (and the report)
    config_path = project / "demo/models/nystrom/config.json"
    cfg = json.loads(config_path.read_text())
    cfg["pretraining"]["lr"] = cfg["pretraining"]["lr"] / 2
    config_path.write_text(json.dumps(cfg, indent=2))
    plan = snakemake(project, *demo, "-n", "--printshellcmds")
    jobs = planned_jobs(plan)
    assert jobs == Counter({"pretrain_model": 1, "finetune_glue": 2 * 4, "select_glue": 2, "train_lra": 1,
                            "gather_lra": 1, "report": 1, "all": 1})
    commands = [line for line in plan.splitlines() if "effbert " in line and "effbert report" not in line]
    assert commands and all("demo/models/nystrom" in c and "demo/models/softmax" not in c for c in commands)
