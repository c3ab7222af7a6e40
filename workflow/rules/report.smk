# Every model's scores -> results/{pretrain,glue,lra}.{csv,md} with the published numbers beside ours.

REPORT_TABLES = [f"{RESULTS}/{table}.{ext}" for table in ("pretrain", "glue", "lra") for ext in ("csv", "md")]


rule report:
    input:
        expand(f"{MODELS}/{{model}}/pretrain.json", model=MODEL_NAMES),
        expand(f"{MODELS}/{{model}}/glue/{{task}}.json", model=MODEL_NAMES, task=config["glue"]["tasks"]),
        expand(f"{MODELS}/{{model}}/lra/{{task}}.json", model=MODEL_NAMES, task=config["lra"]["tasks"]),
    output:
        REPORT_TABLES,
    params:
        models=" ".join(f"{MODELS}/{name}" for name in MODEL_NAMES),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{LOGS}/report.benchmark.tsv"
    shell:
        "effbert report --models {params.models} --out {RESULTS} > {log} 2>&1"
