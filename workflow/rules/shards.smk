# Documents + tokenizer -> fixed-length MLM + SOP instances: <data>/<max_seq_len>-<tokenizer>/.
# Work goes to <data>/<len>-<tokenizer>.work/ (kept across a killed job, so the rerun resumes).

SHARDS = config["shards"]


def shard_settings(length):
    """The shard settings for one length: the defaults, overridden by shards.by_length[<length>] (the seeds'
    4096-token set added Stories and RealNews at one third)."""
    override = (SHARDS.get("by_length") or {}).get(int(length), {})
    return {**{k: v for k, v in SHARDS.items() if k != "by_length"}, **override}


def shard_options(wc):
    s = shard_settings(wc.length)
    probs = " ".join(str(s.get("sample_probs", {}).get(source, 1.0)) for source in s["sources"])
    return (f"--dev_fraction {s.get('dev_fraction', 0.01)} --dupe_factor {s.get('dupe_factor', 1)}"
            f" --seed {s.get('seed', 0)} --sample_probs {probs}")


rule build_shards:
    input:
        tokenizer=f"{DATA}/tokenizers/{{tokenizer}}/tokenizer.json",
        text=lambda wc: source_texts(shard_settings(wc.length)["sources"]),
    output:
        f"{DATA}/{{length}}-{{tokenizer}}/manifest.json",
    wildcard_constraints:
        length=r"\d+",
    params:
        out=lambda wc: f"{DATA}/{wc.length}-{wc.tokenizer}",
        options=shard_options,
    threads: SHARDS.get("workers", 1)
    log:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.log",
    benchmark:
        f"{LOGS}/shards/{{length}}-{{tokenizer}}.benchmark.tsv"
    shell:
        "effbert shards --text {input.text} --tokenizer {input.tokenizer} --out {params.out}"
        " --max_seq_len {wildcards.length} --workers {threads} {params.options} > {log} 2>&1"
