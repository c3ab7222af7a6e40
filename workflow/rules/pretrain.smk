# A model folder's config.json + its shard set -> checkpoints/cp-NNNN.pt, pretrain.jsonl, pretrain.json.


rule pretrain_model:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        shards=lambda wc: f"{shards_for(wc.model)}/manifest.json",
        from_cp=from_cp_inputs,
    output:
        f"{MODELS}/{{model}}/pretrain.json",
    params:
        shards=lambda wc: shards_for(wc.model),
    log:
        f"{LOGS}/pretrain/{{model}}.log",
    benchmark:
        f"{LOGS}/pretrain/{{model}}.benchmark.tsv"
    threads: 1
    shell:
        "effbert pretrain --model {MODELS}/{wildcards.model} --shards {params.shards}"
        " --threads {threads} > {log} 2>&1"
