# Documents + tokenizer -> fixed-length MLM + SOP instances: <data>/<max_seq_len>-<tokenizer>/.
# Work goes to <data>/<len>-<tokenizer>.work/ (kept across a killed job, so the rerun resumes).

SHARDS = config["shards"]


rule build_shards:
    input:
        tokenizer=f"{DATA}/tokenizers/{{tokenizer}}/tokenizer.json",
        text=source_texts(SHARDS["sources"]),
    output:
        f"{DATA}/{{length}}-{{tokenizer}}/manifest.json",
    wildcard_constraints:
        length=r"\d+",
    params:
        out=lambda wc: f"{DATA}/{wc.length}-{wc.tokenizer}",
        options=(
            f"--dev_fraction {SHARDS.get('dev_fraction', 0.01)} --dupe_factor {SHARDS.get('dupe_factor', 1)}"
            f" --seed {SHARDS.get('seed', 0)} --sample_probs "
            + " ".join(str(SHARDS.get("sample_probs", {}).get(source, 1.0)) for source in SHARDS["sources"])
        ),
    threads: SHARDS.get("workers", 1)
    log:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.log",
    benchmark:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.benchmark.tsv"
    shell:
        "effbert shards --text {input.text} --tokenizer {input.tokenizer} --out {params.out}"
        " --max_seq_len {wildcards.length} --workers {threads} {params.options} > {log} 2>&1"
