# Every model's scores -> results/{pretrain,glue,lra}.{csv,md,html}, published numbers beside ours, and the plots
# drawn from them (results/{pretrain-loss,lra-accuracy,lra-cost}.png). Each output is flagged for Snakemake's HTML
# report, with its caption from workflow/report/: `snakemake --report results/report.html` makes one file to send.

REPORT_TABLES = [str(layout.report_table(RESULTS, table, ext))
                 for table in layout.REPORT_TABLES for ext in layout.REPORT_TABLE_FORMATS]
REPORT_PLOTS = [str(layout.report_plot(RESULTS, plot)) for plot in layout.REPORT_PLOTS]


rule report:
    input:
        model_outputs(MODEL_NAMES),
    output:
        # flagged for the HTML report, each captioned by workflow/report/<its name>.rst
        [report(p, caption=f"../report/{Path(p).stem}.rst", category="Tables", subcategory=Path(p).stem)
         for p in REPORT_TABLES],
        [report(p, caption=f"../report/{Path(p).stem}.rst", category="Plots") for p in REPORT_PLOTS],
    params:
        models=" ".join(f"{MODELS}/{name}" for name in MODEL_NAMES),
        # the configured tasks only: a result left by a task since dropped is no row (and the edit reruns this)
        tasks=f"--glue-tasks {' '.join(PIPELINE.glue.tasks)} --lra-tasks {' '.join(PIPELINE.lra.tasks)}",
        out=lambda wc, output: Path(output[0]).parent,
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{LOGS}/report.benchmark.tsv"
    resources:
        **rule_resources("report"),
    shell:
        "effbert report --models {params.models} {params.tasks} --out {params.out} > {log} 2>&1"
