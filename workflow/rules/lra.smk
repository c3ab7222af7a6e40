# Long Range Arena: the release's files (or ListOps / Pathfinder generated in the release's layout)
# -> one run per task and seed (models/<m>/lra/<task>/seed-<s>.json) -> the gather, models/<m>/lra/<task>.json
# (mean and spread over the seeds; the report reads it). Seeds: the model's config.json lra.seeds.

from effbert.config import LRA_TASKS
from effbert.data.lra.protocol import PROTOCOLS

GENERATE = config["lra"].get("generate") or {}
LISTOPS = f"{LRA_DIR}/listops-1000"
LISTOPS_FILES = [f"{LISTOPS}/basic_{split}.tsv" for split in ("train", "val", "test")]
RELEASE_FOLDERS = {"text": "aclImdb", "retrieval": "tsv_data", "image": "cifar-10-batches-py"}


def pathfinder_folder(task):
    """<lra_dir>/pathfinder<res>/<difficulty>, as the task's protocol row names it."""
    options = dict(PROTOCOLS[task].options)
    return f"{LRA_DIR}/pathfinder{options['resolution']}/{options['difficulty']}"


def lra_task_inputs(wc):
    """What a task reads: generated files (the DAG makes them), else the release's folder (you place it)."""
    task = wc.task
    if task == "listops":
        return LISTOPS_FILES
    if task in ("pathfinder", "pathx"):
        folder = pathfinder_folder(task)
        return [f"{folder}/stats.json"] if task in GENERATE else [f"{folder}/metadata"]
    return [f"{LRA_DIR}/{RELEASE_FOLDERS[task]}"]


def lra_seed_results(wc):
    seeds = MODEL_CONFIGS[wc.model].lra.task_seeds(wc.task)
    return [f"{MODELS}/{wc.model}/lra/{wc.task}/seed-{seed}.json" for seed in seeds]


if "listops" in GENERATE:

    rule generate_listops:
        output:
            LISTOPS_FILES,
        params:
            options=" ".join(f"--{key} {value}" for key, value in GENERATE["listops"].items()),
        log:
            f"{LOGS}/lra/generate-listops.log",
        benchmark:
            f"{LOGS}/lra/generate-listops.benchmark.tsv"
        shell:
            "effbert lra-data --out {LISTOPS} {params.options} > {log} 2>&1"


for _task in ("pathfinder", "pathx"):
    if _task in GENERATE:

        rule:
            name:
                f"generate_{_task}"
            output:
                f"{pathfinder_folder(_task)}/stats.json",
            params:
                folder=pathfinder_folder(_task),
                resolution=dict(PROTOCOLS[_task].options)["resolution"],
                difficulty=dict(PROTOCOLS[_task].options)["difficulty"],
                options=" ".join(f"--{key} {value}" for key, value in GENERATE[_task].items()),
            log:
                f"{LOGS}/lra/generate-{_task}.log",
            benchmark:
                f"{LOGS}/lra/generate-{_task}.benchmark.tsv"
            threads: GENERATE[_task].get("workers", 1)
            shell:
                "effbert lra-data --task pathfinder --out {params.folder} --resolution {params.resolution}"
                " --difficulty {params.difficulty} {params.options} > {log} 2>&1"


rule train_lra:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        data=lra_task_inputs,
    output:
        f"{MODELS}/{{model}}/lra/{{task}}/seed-{{seed}}.json",
    wildcard_constraints:
        model=r"[^/]+",
        task="|".join(LRA_TASKS),
        seed=r"-?\d+",
    log:
        f"{LOGS}/lra/{{model}}-{{task}}-seed-{{seed}}.log",
    benchmark:
        f"{LOGS}/lra/{{model}}-{{task}}-seed-{{seed}}.benchmark.tsv"
    threads: 1
    shell:
        "effbert lra --model {MODELS}/{wildcards.model} --task {wildcards.task} --lra_dir {LRA_DIR}"
        " --seed {wildcards.seed} --threads {threads} > {log} 2>&1"


rule gather_lra:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        runs=lra_seed_results,
    output:
        f"{MODELS}/{{model}}/lra/{{task}}.json",
    wildcard_constraints:
        model=r"[^/]+",
        task="|".join(LRA_TASKS),
    log:
        f"{LOGS}/lra/{{model}}-{{task}}.log",
    shell:
        "effbert lra --model {MODELS}/{wildcards.model} --task {wildcards.task} --gather > {log} 2>&1"
