"""The Snakemake DAG end to end: the demo runs to result tables, reruns nothing, and an edited model
folder reruns only that model's jobs; the real-scale config lists the whole DAG."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

import conftest
from conftest import copy_project, planned_jobs
from effbert.config import load_config
from effbert.layout import REPORT_PLOTS

DEMO_MODELS = sorted(p.parent.name for p in (conftest.ROOT / "demo/models").glob("*/config.json"))


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
    configs = {p.parent.name: load_config(p.parent) for p in (project / "models").glob("*/config.json")}
    for name, cfg in configs.items():  # the HuggingFace folders the importing models name
        if cfg.import_hf:
            (project / "models" / name / cfg.import_hf).mkdir(parents=True)
    plan = snakemake(project, "-n", "--cores", "1", "-p")
    jobs = planned_jobs(plan)
    staged = {stage: sum(stage in cfg.stages for cfg in configs.values()) for stage in ("pretrain", "glue", "lra")}
    assert staged == {"pretrain": 12, "glue": 13, "lra": 13}
    # 512 shards from Wikipedia + BookCorpus; the 4096 set adds a third of Stories and of RealNews; the
    # LRA-only folders need no shards; the FNet-from-BERT folder imports BERT instead of pretraining
    assert jobs == Counter({
        "extract_documents": 4, "build_tokenizer": 1, "build_shards": 2, "pretrain_model": 12, "import_hf": 1,
        "finetune_glue": 13 * len(tasks) * 2 * 4 * 3, "select_glue": 13 * len(tasks),
        "generate_listops": 1, "train_lra": 13 * 5 * 3, "gather_lra": 13 * 5, "report": 1, "all": 1,
    })
    long_shards = next(line for line in plan.splitlines() if "effbert shards" in line and "4096" in line)
    assert "text/stories data-preprocessing/text/realnews" in long_shards
    assert "--sample_probs 1.0 1.0 0.333 0.333" in long_shards
    # the 4096 models start from the 512 ones: their pretraining waits for those models'
    for model, source in (("nystrom-4096", "nystrom-512"), ("yoso-small-4096", "yoso-small-512")):
        inputs = re.search(rf"input: (.*)\n\s*output: models/{model}/pretrain.json", plan).group(1)
        assert f"models/{source}/pretrain.json" in inputs
    # GLUE of the importing folder fine-tunes the imported checkpoint
    assert re.search(r"input: models/fnet-from-bert/checkpoints/cp-0000.pt, glue/MRPC\n\s*output: "
                     r"models/fnet-from-bert/glue/MRPC/bs16-lr2e-05-seed0.json", plan)


def _write_config(project: Path, name: str, cfg: dict) -> None:
    folder = project / "demo/models" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def test_lra_only_folders_need_no_shards_and_share_runs_with_equal_settings(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    softmax = json.loads((project / "demo/models/softmax/config.json").read_text())
    local = {"stages": ["lra"], "model": {"attention": {"type": "local", "window": 8}}, "lra": softmax["lra"]}
    _write_config(project, "lra-local", local)
    twin = {"stages": ["lra"], "model": {"hidden_size": 256, "num_heads": 4, "attention": {"type": "softmax"}},
            "lra": softmax["lra"]}  # the LRA run reads only the attention: the same run as softmax's
    _write_config(project, "softmax-twin", twin)
    demo = ["--configfile", "config/demo.yaml", "--cores", "2", "-n", "-p"]
    assert planned_jobs(snakemake(project, *demo, "lra-local")) == Counter(
        {"generate_listops": 1, "train_lra": 1, "gather_lra": 1, "lra-local": 1})
    plan = snakemake(project, *demo, "softmax-twin")
    assert planned_jobs(plan) == Counter({"generate_listops": 1, "train_lra": 1, "gather_lra": 1, "softmax-twin": 1})
    assert "effbert lra --model demo/models/softmax --task listops --lra_dir demo/out/lra --seed 0" in plan
    assert "--gather --runs demo/models/softmax/lra/listops/seed-0.json" in plan
    # the whole DAG: the twin adds a gather only; the local folder its own run
    jobs = planned_jobs(snakemake(project, *demo))
    demo_models = len(DEMO_MODELS)
    assert jobs["train_lra"] == demo_models + 1 and jobs["gather_lra"] == demo_models + 2
    assert jobs["pretrain_model"] == demo_models
    # a folder added later that sorts first runs nothing the others have already run
    (project / "demo/models/softmax/lra/listops").mkdir(parents=True)
    (project / "demo/models/softmax/lra/listops/seed-0.json").write_text("{}")
    _write_config(project, "a-softmax", twin)
    plan = snakemake(project, *demo, "a-softmax")
    assert planned_jobs(plan) == Counter({"gather_lra": 1, "a-softmax": 1})
    assert "--gather --runs demo/models/softmax/lra/listops/seed-0.json" in plan


@pytest.mark.slow
def test_demo_dag_end_to_end(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    demo = ["--configfile", "config/demo.yaml", "--cores", "2"]
    snakemake(project, *demo)

    results = project / "demo/out/results"
    pretrain = pd.read_csv(results / "pretrain.csv")
    glue = pd.read_csv(results / "glue.csv")
    lra = pd.read_csv(results / "lra.csv")
    assert sorted(pretrain.model) == DEMO_MODELS
    assert set(zip(glue.model, glue.task, strict=True)) == {(m, t) for m in DEMO_MODELS for t in ("SST-2", "MRPC")}
    assert sorted(lra.model) == DEMO_MODELS and set(lra.task) == {"listops"}
    # the tiny models learn something: far above the chance of guessing one of ~2000 tokens
    assert (pretrain["MLM acc"] > 10).all()
    assert (glue[glue.task == "SST-2"].score > 70).all()
    # demo scale: no published number beside the tiny runs, and the reason says so
    assert lra.published.isna().all() and lra["demo scale"].all()
    assert all(reason.startswith("demo scale") for reason in lra["not comparable"])
    assert "| model" in (results / "glue.md").read_text()
    # the plots drawn from the result files, and the one HTML file that carries tables and plots
    for plot in REPORT_PLOTS:
        with Image.open(results / f"{plot}.png") as image:
            image.verify()
    assert (results / "lra.html").is_file()
    snakemake(project, *demo, "--report", "demo/out/results/report.html")
    page = (results / "report.html").read_text()
    for plot in REPORT_PLOTS:
        assert base64.b64encode((results / f"{plot}.png").read_bytes()).decode() in page
    # each score aggregates the two seeds of the better of the two learning rates
    selected = json.loads((project / "demo/models/softmax/glue/SST-2.json").read_text())
    assert selected["selected"]["seeds"] == [0, 1] and selected["selected"]["lr"] in (5e-4, 1e-3)
    assert (project / "demo/models/softmax/glue/submission/SST-2.tsv").is_file()

    check_edit_semantics(project, demo)


def check_edit_semantics(project: Path, demo: list[str]) -> None:
    """On a finished demo: what each kind of config.json edit reruns, and a changed pretraining setting's stop
    and continue (README, "What an edit reruns")."""
    # rerunning does nothing; nor does a touch, or an edit of how pretraining is watched
    assert "Nothing to be done" in snakemake(project, *demo, "-n")
    for model in DEMO_MODELS:
        (project / f"demo/models/{model}/config.json").touch()
    assert "Nothing to be done" in snakemake(project, *demo, "-n")
    nystrom = project / "demo/models/nystrom/config.json"
    original = json.loads(nystrom.read_text())

    def plan_after(edit) -> tuple[Counter, str]:
        cfg = json.loads(json.dumps(original))
        edit(cfg)
        nystrom.write_text(json.dumps(cfg, indent=2))
        plan = snakemake(project, *demo, "-n", "--printshellcmds")
        return planned_jobs(plan), plan

    jobs, _ = plan_after(lambda cfg: cfg["pretraining"].update(log_every=25, eval_every=100, eval_batches=5))
    assert jobs == Counter()
    # a GLUE learning rate: that model's runs at the new rate, its selections, the report
    jobs, plan = plan_after(lambda cfg: cfg["glue"].update(lr=[5e-4, 2e-3]))
    assert jobs == Counter({"finetune_glue": 2 * 2, "select_glue": 2, "report": 1, "all": 1})
    assert sorted(set(re.findall(r"--run (\S+)", plan))) == ["bs32-lr0.002-seed0", "bs32-lr0.002-seed1"]
    # an LRA seed: that seed's run and the gather
    jobs, _ = plan_after(lambda cfg: cfg["lra"].update(seeds=[0, 1]))
    assert jobs == Counter({"train_lra": 1, "gather_lra": 1, "report": 1, "all": 1})
    # the pretraining learning rate: that model's pretraining and GLUE, not its LRA (trained from scratch)
    jobs, plan = plan_after(lambda cfg: cfg["pretraining"].update(lr=cfg["pretraining"]["lr"] / 2))
    assert jobs == Counter({"pretrain_model": 1, "finetune_glue": 2 * 4, "select_glue": 2, "report": 1, "all": 1})
    commands = [line for line in plan.splitlines() if "effbert " in line and "effbert report" not in line]
    assert commands and all("demo/models/nystrom" in c and "demo/models/softmax" not in c for c in commands)

    # ... whose job stops, naming the key and the ways forward, and leaves the checkpoints as they were
    checkpoints = project / "demo/models/nystrom/checkpoints"
    kept = {p.name: p.read_bytes() for p in checkpoints.glob("cp-*.pt")}
    target = ["--configfile", "config/demo.yaml", "--cores", "2", "demo/models/nystrom/pretrain.json"]
    assert conftest.snakemake(project, *target, check=False).returncode != 0
    log = (project / "demo/out/logs/pretrain/nystrom.log").read_text()
    assert "pretraining.lr: 0.002 -> 0.001" in log and '"on_change": "continue"' in log
    assert {p.name: p.read_bytes() for p in checkpoints.glob("cp-*.pt")} == kept
    # with "continue" chosen (and 50 more steps) it goes on from the last checkpoint's step, not from 0
    cfg = json.loads(nystrom.read_text())
    cfg["pretraining"].update(on_change="continue", steps=850)
    nystrom.write_text(json.dumps(cfg, indent=2))
    snakemake(project, *target)
    summary = json.loads((project / "demo/models/nystrom/pretrain.json").read_text())
    assert summary["resumed_from"] == 800 and summary["steps"] == 850
    assert summary["history"][0]["changed"]["pretraining.lr"] == [0.002, 0.001]
    train = [json.loads(line) for line in (project / "demo/models/nystrom/pretrain.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train if r["split"] == "train"][-3:] == [750, 800, 850]


def _tiny_hf_bert(folder: Path, words: set[str]) -> None:
    """A HuggingFace BERT folder as save_pretrained writes it (config.json, model.safetensors) and a vocab.txt."""
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=128)
    transformers.BertForMaskedLM(config).save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")


@pytest.mark.slow
def test_a_glue_only_folder_imports_bert_and_fine_tunes_it(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    train = (project / "demo/glue/SST-2/train.tsv").read_text().lower()
    _tiny_hf_bert(project / "demo/models/from-bert/bert", set(re.findall(r"[a-z]+", train)))
    _write_config(project, "from-bert", {
        "stages": ["glue"], "import_hf": "bert", "model": {"attention": {"type": "fnet"}},
        "glue": {"batch_size": 32, "lr": 1e-3, "seeds": [0], "epochs": 1}})
    demo = ["--configfile", "config/demo.yaml", "--cores", "2", "from-bert"]
    assert planned_jobs(snakemake(project, *demo, "-n")) == Counter(
        {"import_hf": 1, "finetune_glue": 2, "select_glue": 2, "from-bert": 1})  # no documents, shards or pretraining
    snakemake(project, *demo)
    state = torch.load(project / "demo/models/from-bert/checkpoints/cp-0000.pt", weights_only=True, mmap=True)
    assert state["config"]["model"]["attention"]["type"] == "fnet" and state["config"]["model"]["hidden_size"] == 32
    run = json.loads((project / "demo/models/from-bert/glue/SST-2/bs32-lr0.001-seed0.json").read_text())
    assert run["checkpoint"] == "checkpoints/cp-0000.pt" and run["identity"]["starts_from"]
    assert json.loads((project / "demo/models/from-bert/glue/MRPC.json").read_text())["selected"]["seeds"] == [0]
    assert "Nothing to be done" in snakemake(project, *demo, "-n")
