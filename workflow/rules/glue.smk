# A pretrained checkpoint + a GLUE task folder (official layout) -> one run per grid point and seed
# (models/<name>/glue/<TASK>/<run>.json), then the selection among them -> models/<name>/glue/<TASK>.json.
# The grid (batch sizes x learning rates x seeds) is the model's config.json "glue" section.

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
    params:
        model=lambda wc, input: Path(input.config).parent,
        glue_dir=lambda wc, input: Path(input.task).parent,
        on_gpus=on_gpus,
    log:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.log",
    benchmark:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.benchmark.tsv"
    resources:
        **rule_resources("finetune_glue"),
    threads: 1
    shell:
        "{params.on_gpus} effbert glue --model {params.model} --task {wildcards.task} --glue_dir {params.glue_dir}"
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
    params:
        model=lambda wc, input: Path(input.config).parent,
    log:
        f"{LOGS}/glue/{{model}}-{{task}}.log",
    resources:
        **rule_resources("select_glue"),
    shell:
        "effbert glue-select --model {params.model} --task {wildcards.task} > {log} 2>&1"
