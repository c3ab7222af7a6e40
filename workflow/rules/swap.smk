# Drop-in deployment: a pretrained HuggingFace BERT folder with each attention mechanism swapped in, compared
# with the original on one source's documents -> results/swap.{csv,md,png} (`effbert swap-eval`; docs/swap.md).
# Only when asked for (`snakemake swap`) and only with config's swap.hf_dir set: not part of `all`.
# Cost with MiniLM on 2 shared CPU cores: ~4 minutes zero-shot (11 variants, 32 passages), ~17 with adapt_steps 20.

from effbert.data.glue import get_task

SWAP = PIPELINE.swap
STS_B = get_task("STS-B")  # with swap.sts: <glue.dir>/STS-B/dev.tsv, the file effbert.data.glue reads for --sts
SWAP_OUTPUTS = [str(layout.report_table(RESULTS, layout.SWAP_TABLE, ext)) for ext in ("csv", "md", "png")]


rule swap_eval:
    input:
        hf=SWAP.hf_dir or [],
        text=str(layout.text_dir(DATA, SWAP.source)),
        sts=str(Path(GLUE_DIR) / STS_B.folder / STS_B.file_name("dev")) if SWAP.sts else [],
    output:
        SWAP_OUTPUTS,
    params:
        variants=" ".join(SWAP.variants),
        sts=f"--sts {GLUE_DIR}" if SWAP.sts else "",
        settings=f"--passages {SWAP.passages} --adapt_steps {SWAP.adapt_steps} --cost_length {SWAP.cost_length}",
        out=lambda wc, output: Path(output[0]).parent,
    log:
        f"{LOGS}/swap.log",
    benchmark:
        f"{LOGS}/swap.benchmark.tsv"
    resources:
        **rule_resources("swap_eval"),
    threads: 2
    shell:
        "effbert swap-eval --from {input.hf} --text {input.text} --variants {params.variants}"
        " {params.settings} {params.sts} --threads {threads} --out {params.out} > {log} 2>&1"


rule swap:
    localrule: True
    input:
        SWAP_OUTPUTS if SWAP.hf_dir else [],
