# The attention benchmark -> results/efficiency.{csv,png} (`effbert bench attention`: every mechanism's forward +
# backward time and peak memory against n, torch's SDPA and the explicit O(n^2) softmax in the same run) and
# results/efficiency.md, our numbers beside the Nystromformer paper's Table 1 (effbert.report.efficiency).
# A timing run on whatever machine runs it: only when asked for (`snakemake efficiency`), not part of `all`.
# Settings: the config's `efficiency` section (effbert.pipeline_config.EfficiencyConfig): lengths, mechanisms,
# repeats, threads, and variants, labelled option sets measured as rows of their own (config/config.yaml adds
# nystrom-32 beside nystrom's default 64 landmarks, so both of Table 1's Nystromformer rows are filled). Left unset,
# lengths and mechanisms are the bench's device defaults (effbert.bench.attention): CPU n 512..4096, 4 heads,
# float32; a GPU n 512..16384, 16 heads, bf16. config/demo.yaml runs it in seconds (n 256 and 512, repeats 1).

EFFICIENCY = {ext: str(layout.efficiency_file(RESULTS, ext)) for ext in layout.EFFICIENCY_FORMATS}
EFFICIENCY_SETTINGS = PIPELINE.efficiency


rule bench_attention:
    output:
        # flagged for the HTML report, which carries them when asked for with the target:
        # `snakemake --report results/report.html all efficiency` after `snakemake efficiency` has run
        **{ext: report(path, caption="../report/efficiency.rst", category="Efficiency")
           for ext, path in EFFICIENCY.items()},
    params:
        # a param, so that editing the section reruns the benchmark (profiles/default: rerun-triggers params)
        settings=EFFICIENCY_SETTINGS.bench_command_args(),
    log:
        f"{LOGS}/efficiency.log",
    benchmark:
        f"{LOGS}/efficiency.benchmark.tsv"
    resources:
        **rule_resources("bench_attention"),
    threads: EFFICIENCY_SETTINGS.threads
    shell:
        "effbert bench attention {params.settings} --out {output.csv} --plot {output.png} --threads {threads}"
        " > {log} 2>&1 && python -m effbert.report.efficiency {output.csv} {output.md} >> {log} 2>&1"


rule efficiency:
    localrule: True
    input:
        list(EFFICIENCY.values()),
