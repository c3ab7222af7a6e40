# Every model's scores -> results/{pretrain,glue,lra}.{csv,md} with the published numbers beside ours.

REPORT_TABLES = [str(layout.report_table(RESULTS, table, ext)) for table in layout.REPORT_TABLES for ext in ("csv", "md")]


rule report:
    input:
        model_outputs(MODEL_NAMES),
    output:
        REPORT_TABLES,
    params:
        models=" ".join(f"{MODELS}/{name}" for name in MODEL_NAMES),
        out=lambda wc, output: Path(output[0]).parent,
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{LOGS}/report.benchmark.tsv"
    resources:
        **rule_resources("report"),
    shell:
        "effbert report --models {params.models} --out {params.out} > {log} 2>&1"
