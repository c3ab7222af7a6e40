"""The workflow as a cluster sees it: `snakemake --lint` is clean, the SLURM profile's dry run lists every job
with its resources (GPUs per node as sbatch's gres, torchrun on the job's GPUs), the named targets plan the
jobs they promise, and every target the docs name exists in the Snakefile."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_project, planned_jobs, snakemake
from effbert.config import load_config

TARGETS = {"shards", "pretrain", "glue", "lra", "report", "all"}
# rules that only gather other jobs' outputs: no software, no resources of their own
TARGET_RULES = TARGETS - {"report"}


def place_raw_data(project: Path, *args: str) -> str:
    """Create the folders the user places (raw dumps, GLUE, LRA release) until the dry run plans; its output."""
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    for source in config["sources"].values():
        (project / source["input"]).mkdir(parents=True, exist_ok=True)
    for task in config["glue"]["tasks"]:
        (project / config["glue"]["dir"] / task).mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # the rest (LRA release folders), as the dry run names them
        done = snakemake(project, *args, check=False)
        if done.returncode == 0:
            return done.stdout + done.stderr
        missing = re.search(r"affected files:\n((?: {8}\S+\n)+)", done.stdout + done.stderr)
        assert missing, done.stdout[-4000:] + done.stderr[-4000:]
        for path in missing.group(1).split():
            (project / path).mkdir(parents=True, exist_ok=True)
    raise AssertionError("the dry run kept asking for more input folders")


def planned(output: str) -> list[dict]:
    """Every job of a dry run: rule, resources (parsed) and shell command."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", output):
        head = re.search(r"^(?:local)?rule (\S+):", block, re.M)
        if not head:
            continue
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs.append({
            "rule": head.group(1),
            "resources": dict(item.split("=", 1) for item in resources.group(1).split(", ")) if resources else {},
            "threads": int(threads.group(1)) if threads else 1,
            "shell": shell.group(1) if shell else "",
        })
    return jobs


def test_lint_is_clean(tmp_path):
    for configfile in ("config/config.yaml", "config/demo.yaml"):
        done = snakemake(copy_project(tmp_path / Path(configfile).stem, ["demo", "models"]), "--configfile",
                         configfile, "--lint", check=False)
        assert done.returncode == 0, f"snakemake --lint ({configfile}):\n{done.stdout[-6000:]}{done.stderr[-2000:]}"


@pytest.mark.slow
def test_slurm_profile_dry_run_lists_every_job_with_its_resources(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")
    project = copy_project(tmp_path, ["models"])
    output = place_raw_data(project, "--profile", "profiles/slurm", "-n", "all")
    jobs = planned(output)
    stats = planned_jobs(output)
    assert Counter(job["rule"] for job in jobs) == stats  # one block per job, none missing
    pretraining = [p for p in (project / "models").glob("*/config.json") if "pretrain" in load_config(p).stages]
    assert stats["pretrain_model"] == len(pretraining) > 0
    for job in jobs:
        if job["rule"] in TARGET_RULES:
            continue
        res = job["resources"]
        assert {"gpus", "mem_mb", "runtime", "slurm_partition"} <= res.keys(), job
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, job
        gpus = int(res["gpus"])
        # sbatch learns of GPUs through gres (per node); torchrun through gpus: they must agree
        assert res.get("gres", "") == (f"gpu:{gpus}" if gpus else ""), job
        assert res["slurm_partition"] == ("gpu" if gpus else "cpu"), job
    pretrain = [job for job in jobs if job["rule"] == "pretrain_model"]
    for job in pretrain:
        gpus, threads = int(job["resources"]["gpus"]), job["threads"]
        assert gpus == 8 and threads == 32
        assert f"torchrun --standalone --nnodes 1 --nproc_per_node {gpus} -m effbert pretrain" in job["shell"]
        assert f"--threads {threads // gpus}" in job["shell"]
    assert {int(job["resources"]["gpus"]) for job in jobs if job["rule"] == "finetune_glue"} == {1}


def test_pretraining_across_nodes_runs_one_torchrun_per_node(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")
    project = copy_project(tmp_path, ["models"])
    profile = project / "profiles/slurm/config.yaml"
    text = profile.read_text()
    assert "    nodes: 1\n" in text
    profile.write_text(text.replace("    nodes: 1\n", "    nodes: 4\n"))
    output = place_raw_data(project, "--profile", "profiles/slurm", "-n", "pretrain")
    jobs = [job for job in planned(output) if job["rule"] == "pretrain_model"]
    assert jobs
    for job in jobs:
        assert job["resources"]["nodes"] == "4"
        assert re.search(r"srun --overlap --nodes 4 --ntasks-per-node 1 .*torchrun --nnodes 4 --nproc_per_node 8 "
                         r".*--rdzv_backend c10d --rdzv_endpoint .*-m effbert pretrain", job["shell"]), job["shell"]


def test_cpu_run_pretrains_without_torchrun(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    output = snakemake(project, "--configfile", "config/demo.yaml", "-n", "-p", "--cores", "2", "pretrain").stdout
    commands = [job["shell"] for job in planned(output) if job["rule"] == "pretrain_model"]
    demo_models = len(list((ROOT / "demo/models").glob("*/config.json")))
    assert len(commands) == demo_models and all(cmd.startswith("effbert pretrain ") for cmd in commands)
    # appended: a refused second launch leaves the live run's log whole, a resumed run's log goes on
    assert all(" >> demo/out/logs/pretrain/" in cmd for cmd in commands)


def test_named_targets_plan_what_they_promise(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    demo = ["--configfile", "config/demo.yaml", "-n", "--cores", "2"]
    models = sorted(p.parent.name for p in (project / "demo/models").glob("*/config.json"))

    def rules(target: str) -> set[str]:
        return set(planned_jobs(snakemake(project, *demo, target).stdout))

    assert rules("shards") == {"extract_documents", "build_tokenizer", "build_shards", "shards"}
    assert "pretrain_model" in rules("pretrain") and "finetune_glue" not in rules("pretrain")
    assert {"finetune_glue", "select_glue"} <= rules("glue") and "train_lra" not in rules("glue")
    assert "train_lra" in rules("lra") and "finetune_glue" not in rules("lra")
    assert "report" in rules("report") and "report" in rules("all")
    # a model's own target: only that model's jobs
    per_model = snakemake(project, *demo, models[0]).stdout
    assert planned_jobs(per_model)["pretrain_model"] == 1
    assert f"demo/models/{models[1]}/" not in per_model


def documented_targets() -> set[str]:
    """Targets the docs show: rows of the targets table (`| \\`name\\` |`) and `docker run ... effbert <target>`."""
    names = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        section = re.search(r"<!-- targets -->(.*?)<!-- /targets -->", text, re.S)
        if section:
            names |= set(re.findall(r"^\| `([\w.-]+)` \|", section.group(1), re.M))
        names |= set(re.findall(r"docker run [^`\n]*?\beffbert ([a-z][\w.-]*)(?=[\s`])", text))
    return names


def test_targets_named_in_the_docs_exist(tmp_path):
    project = copy_project(tmp_path, ["models"])
    rules = set(snakemake(project, "--list-rules").stdout.split())
    named = documented_targets()
    assert TARGETS <= named, f"targets the docs should name: {sorted(TARGETS - named)}"
    models = {p.parent.name for p in (ROOT / "models").glob("*/config.json")}
    assert named - {"effbert", "bash", "snakemake"} <= rules, f"not in the Snakefile: {sorted(named - rules)}"
    assert models <= rules  # one target per model folder


def test_gpu_jobs_on_one_machine_get_different_gpus(tmp_path):
    """workflow/scripts/claim-gpus.sh: jobs running side by side get disjoint GPUs; one that wants more than are
    free waits until they are; no GPUs asked, or SLURM's choice already made, changes nothing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nfor i in 0 1 2 3; do echo \"GPU $i: NVIDIA H100\"; done\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
           "EFFBERT_GPU_LOCKS": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    claim = str(ROOT / "workflow/scripts/claim-gpus.sh")

    def start(n: int, seconds: float, extra: dict | None = None) -> subprocess.Popen:
        script = f'echo "$CUDA_VISIBLE_DEVICES"; sleep {seconds}'
        return subprocess.Popen(["bash", claim, str(n), "sh", "-c", script], env={**env, **(extra or {})},
                                stdout=subprocess.PIPE, text=True)

    holders = [start(1, 3) for _ in range(3)]
    time.sleep(1)
    began = time.monotonic()
    waiting = start(2, 0)  # only one GPU is free: waits for the others to finish
    got = sorted(p.communicate()[0].strip() for p in holders)
    pair = waiting.communicate()[0].strip().split(",")
    assert got == ["0", "1", "2"]
    assert len(set(pair)) == 2 and time.monotonic() - began > 1.5
    assert start(0, 0).communicate()[0].strip() == ""
    assert start(2, 0, {"CUDA_VISIBLE_DEVICES": "5,7"}).communicate()[0].strip() == "5,7"


def test_an_unknown_tokenizer_names_the_model_folder(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    config = project / "demo/models/nystrom/config.json"
    config.write_text(config.read_text().replace('"demo-bpe"', '"no-such-tokenizer"'))
    done = snakemake(project, "--configfile", "config/demo.yaml", "-n", "--cores", "1", check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert ("demo/models/nystrom/config.json: pretraining.tokenizer: tokenizer 'no-such-tokenizer' is not in the "
            "Snakemake config's tokenizers [") in output and "'demo-bpe'" in output


def test_a_models_dir_without_models_is_an_error_not_an_empty_report(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    (project / "demo/empty").mkdir()
    for where, says in (("demo/no-such-models", "no such folder"), ("demo/empty", "no model folder")):
        done = snakemake(project, "--configfile", "config/demo.yaml", "--config", f"models_dir={where}", "-n",
                         "--cores", "1", check=False)
        assert done.returncode != 0 and f"models_dir {where}: {says}" in done.stdout + done.stderr


@pytest.mark.parametrize("where, edit, says", [
    ("config/demo.yaml", ("dev_fraction: 0.15", "dev_fraction: 1.5"),
     "config/demo.yaml: invalid config: shards.dev_fraction: Input should be less than 1 (got 1.5)"),
    ("config/demo.yaml", ("seed: 0\n", "seed: 0\n  sample_size: 3\n"),
     "config/demo.yaml: invalid config: shards.sample_size: unknown key"),
    ("demo/models/nystrom/config.json", ('"max_seq_len": ', '"max_seq_len": "long", "x": '),
     "demo/models/nystrom/config.json: invalid config: model.max_seq_len: Input should be a valid integer"),
])
def test_a_bad_config_ends_the_run_on_one_line(tmp_path, where, edit, says):
    """A config problem is one line naming the file and the key, and exit 1: not Snakemake's traceback of the
    Snakefile, nor the whole JSON schema of the setting."""
    project = copy_project(tmp_path, ["demo"])
    path = project / where
    assert edit[0] in path.read_text()
    path.write_text(path.read_text().replace(edit[0], edit[1], 1))
    done = snakemake(project, "--configfile", "config/demo.yaml", "-n", "--cores", "1", check=False)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("Using workflow specific profile")]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {says}"), done.stderr[-3000:]


def test_a_configfile_replaces_config_yaml_whole(tmp_path):
    """--configfile names the whole config: what it leaves out is not taken from config/config.yaml (whose
    ListOps is generated at real scale), so a demo config without lra.generate asks for the ListOps files."""
    project = copy_project(tmp_path, ["demo"])
    config = yaml.safe_load((project / "config/demo.yaml").read_text())
    del config["lra"]["generate"]
    (project / "config/mine.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(project, "--configfile", "config/mine.yaml", "-n", "-p", "--cores", "1", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "listops-1000/basic_train.tsv" in output and "lra-data" not in output


def test_the_committed_schema_is_generated_from_the_pipeline_config():
    from effbert.pipeline_config import schema_yaml

    committed = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    assert committed == schema_yaml(), (
        "workflow/schemas/config.schema.yaml is stale: python -m effbert.pipeline_config > it")


def test_a_shard_length_overrides_any_shard_setting_within_its_bounds():
    """shards.by_length.<n> takes every setting of a shard set, None by default and with the same bounds: it is
    derived from the one declaration, so a new shard setting needs no second entry."""
    from pydantic import ValidationError

    from effbert.pipeline_config import ShardOverride, ShardsConfig, ShardSetSettings

    assert ShardOverride().model_dump() == dict.fromkeys(ShardSetSettings.model_fields)
    shards = ShardsConfig(sources=["wiki"], dupe_factor=2, by_length={4096: {"sources": ["wiki", "stories"],
                                                                              "sample_probs": {"stories": 0.333}}})
    long = shards.for_length(4096)
    assert (long.sources, long.sample_probs, long.dupe_factor) == (["wiki", "stories"], {"stories": 0.333}, 2)
    assert shards.for_length(512).sources == ["wiki"]
    # each outside its setting's meaning (a share below 1, a count of at least 1, a known source), or a typo
    for key, bad in (("dev_fraction", 1.0), ("masked_lm_prob", 0.0), ("short_seq_prob", 1.5), ("dupe_factor", 0),
                     ("workers", 0), ("sources", []), ("sample_probs", {"web": 1.0}), ("seeds", 1),
                     ("sample_probs", {"wiki": 0.0}), ("sample_probs", {"wiki": 1.5})):
        with pytest.raises(ValidationError, match=key):
            ShardsConfig(sources=["wiki"], by_length={512: {key: bad}})
    # a share for a source the set does not read: at the top and in a length's own settings
    with pytest.raises(ValidationError, match=r"sample_probs names \['stories'\], which sources \['wiki'\]"):
        ShardsConfig(sources=["wiki"], sample_probs={"stories": 0.3})
    with pytest.raises(ValidationError, match=r"by_length 4096: sample_probs names \['realnews'\]"):
        ShardsConfig(sources=["wiki"], by_length={4096: {"sources": ["wiki", "stories"], "sample_probs":
                                                          {"stories": 0.3, "realnews": 0.3}}})


def test_shard_settings_reach_the_command_only_when_set(tmp_path):
    """A setting declared once (effbert.pipeline_config) reaches `effbert shards` from the DAG; left at its
    default, it stays off the command line, so a shard set built before it existed is not rebuilt."""
    project = copy_project(tmp_path, ["demo"])
    args = ("--configfile", "config/demo.yaml", "-n", "-p", "--cores", "1", "--until", "build_shards")
    shell = [job["shell"] for job in planned(snakemake(project, *args).stdout) if job["rule"] == "build_shards"]
    assert len(shell) == 1 and "--dev_fraction 0.15 --dupe_factor 4 --seed 0 --sample_probs 1.0 >" in shell[0]
    config = yaml.safe_load((project / "config/demo.yaml").read_text())
    config["shards"]["masked_lm_prob"] = 0.2
    (project / "config/demo.yaml").write_text(yaml.safe_dump(config))
    shell = [job["shell"] for job in planned(snakemake(project, *args).stdout) if job["rule"] == "build_shards"]
    assert "--sample_probs 1.0 --masked_lm_prob 0.2 >" in shell[0]
    config["shards"]["masked_lm_prob"] = 1.5
    (project / "config/demo.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(project, *args, check=False)
    assert done.returncode != 0 and "masked_lm_prob" in done.stdout + done.stderr


def test_efficiency_is_an_opt_in_target_and_imdb_reads_aclimdb(tmp_path):
    project = copy_project(tmp_path, ["demo"])
    demo = ["--configfile", "config/demo.yaml", "-n", "-p", "--cores", "2"]
    jobs = planned(snakemake(project, *demo, "efficiency").stdout)
    bench = next(job for job in jobs if job["rule"] == "bench_attention")
    assert {job["rule"] for job in jobs} == {"bench_attention", "efficiency"}
    assert f"--threads {bench['threads']}" in bench["shell"]
    assert "--out demo/out/results/efficiency.csv --plot demo/out/results/efficiency.png" in bench["shell"]
    assert "effbert.report.efficiency demo/out/results/efficiency.csv demo/out/results/efficiency.md" in bench["shell"]
    assert "bench_attention" not in planned_jobs(snakemake(project, *demo, "all").stdout)  # a timing run: asked for

    # IMDB beside GLUE: its runs read <lra.dir>/aclImdb (the files LRA Text reads) unless glue.imdb_dir says where
    config = yaml.safe_load((project / "config/demo.yaml").read_text())
    config["glue"]["tasks"].append("IMDB")
    (project / "config/imdb.yaml").write_text(yaml.safe_dump(config))
    (project / config["lra"]["dir"] / "aclImdb").mkdir(parents=True)
    imdb = ["--configfile", "config/imdb.yaml", "-n", "-p", "--cores", "2", "glue"]
    runs = [job["shell"] for job in planned(snakemake(project, *imdb).stdout) if job["rule"] == "finetune_glue"]
    assert any(f"--task IMDB --glue_dir {config['lra']['dir']} " in shell for shell in runs)
    assert any("--task SST-2 --glue_dir demo/glue " in shell for shell in runs)
