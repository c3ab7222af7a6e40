# The attention benchmark -> results/efficiency.{csv,png} (`effbert bench attention`: every mechanism's forward +
# backward time and peak memory against n, torch's SDPA and the explicit O(n^2) softmax in the same run) and
# results/efficiency.md, our numbers beside the Nystromformer paper's Table 1 (effbert.report.efficiency).
# A timing run on whatever machine runs it: only when asked for (`snakemake efficiency`), not part of `all` or the
# demo. Defaults (effbert.bench.attention): CPU n 512..4096, 4 heads, float32; a GPU n 512..16384, 16 heads, bf16.

EFFICIENCY = {ext: str(layout.efficiency_file(RESULTS, ext)) for ext in layout.EFFICIENCY_FORMATS}


rule bench_attention:
    output:
        # flagged for the HTML report, which carries them when asked for with the target:
        # `snakemake --report results/report.html all efficiency` after `snakemake efficiency` has run
        **{ext: report(path, caption="../report/efficiency.rst", category="Efficiency")
           for ext, path in EFFICIENCY.items()},
    log:
        f"{LOGS}/efficiency.log",
    benchmark:
        f"{LOGS}/efficiency.benchmark.tsv"
    resources:
        **rule_resources("bench_attention"),
    threads: 4
    shell:
        "effbert bench attention --out {output.csv} --plot {output.png} --threads {threads} > {log} 2>&1"
        " && python -m effbert.report.efficiency {output.csv} {output.md} >> {log} 2>&1"


rule efficiency:
    localrule: True
    input:
        list(EFFICIENCY.values()),
