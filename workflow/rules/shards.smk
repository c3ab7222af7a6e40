# Documents + tokenizer -> fixed-length MLM + SOP instances: <data>/<max_seq_len>-<tokenizer>/.
# Work goes to <data>/<len>-<tokenizer>.work/ (kept across a killed job, so the rerun resumes).


rule build_shards:
    input:
        tokenizer=str(layout.tokenizer_file(DATA, "{tokenizer}")),
        text=lambda wc: source_texts(shard_settings(wc.length).sources),
    output:
        str(layout.shards_dir(DATA, "{length}", "{tokenizer}") / MANIFEST),
    wildcard_constraints:
        length=r"\d+",
    params:
        out=lambda wc: layout.shards_dir(DATA, wc.length, wc.tokenizer),
        options=shard_options,
    resources:
        **rule_resources("build_shards"),
    threads: SHARDS.workers
    log:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.log",
    benchmark:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.benchmark.tsv"
    shell:
        "effbert shards --text {input.text} --tokenizer {input.tokenizer} --out {params.out}"
        " --max_seq_len {wildcards.length} --workers {threads} {params.options} > {log} 2>&1"
