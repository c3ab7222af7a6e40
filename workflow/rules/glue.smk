# A pretrained checkpoint + a GLUE task folder (official layout) -> one run per grid point and seed
# (models/<name>/glue/<TASK>/<run>.json), then the selection among them -> models/<name>/glue/<TASK>.json.
# The grid (batch sizes x learning rates x seeds) is the model's config.json "glue" section.

from effbert.train.glue_protocol import grid


def glue_runs(wc):
    return [f"{MODELS}/{wc.model}/glue/{wc.task}/{run.name}.json" for run in grid(MODEL_CONFIGS[wc.model].glue)]


rule finetune_glue:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        pretrained=f"{MODELS}/{{model}}/pretrain.json",
        task=f"{GLUE_DIR}/{{task}}",
    output:
        f"{MODELS}/{{model}}/glue/{{task}}/{{run}}.json",
    wildcard_constraints:
        model=r"[^/]+",
        task=r"[^/]+",
        run=r"bs\d+-lr[^/]+-seed-?\d+",
    log:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.log",
    benchmark:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.benchmark.tsv"
    threads: 1
    shell:
        "effbert glue --model {MODELS}/{wildcards.model} --task {wildcards.task} --glue_dir {GLUE_DIR}"
        " --run {wildcards.run} --threads {threads} > {log} 2>&1"


rule select_glue:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        runs=glue_runs,
    output:
        f"{MODELS}/{{model}}/glue/{{task}}.json",
    wildcard_constraints:
        model=r"[^/]+",
        task=r"[^/]+",
    log:
        f"{LOGS}/glue/{{model}}-{{task}}.log",
    shell:
        "effbert glue-select --model {MODELS}/{wildcards.model} --task {wildcards.task} > {log} 2>&1"
