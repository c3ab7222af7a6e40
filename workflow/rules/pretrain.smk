# A model folder's config.json + its shard set -> checkpoints/cp-NNNN.pt, pretrain.jsonl, pretrain.json.
# Reruns when the pretraining identity changes (model, pretraining less its runtime keys, from_cp) or the shards
# are rebuilt; the job then resumes, or stops naming the changed keys (pretraining.on_change in config.json).
# With GPUs (resources gpus, per node) the job runs under torchrun, one process per GPU; with nodes > 1 (SLURM)
# srun starts one torchrun per node of the job, meeting at its first node. Without GPUs: plain `effbert pretrain`.


rule pretrain_model:
    input:
        shards=lambda wc: f"{shards_for(wc.model)}/{MANIFEST}",
        from_cp=from_cp_inputs,
    output:
        pretrain_summary("{model}"),
    params:
        identity=pretrain_identity,
        model=lambda wc: f"{MODELS}/{wc.model}",
        shards=lambda wc: shards_for(wc.model),
        launch=pretrain_launcher,
        threads=threads_per_process,
    log:
        f"{LOGS}/pretrain/{{model}}.log",
    benchmark:
        f"{LOGS}/pretrain/{{model}}.benchmark.tsv"
    resources:
        **rule_resources("pretrain_model"),
    threads: 1
    # the log is appended to: a second launch that the folder's lock refuses must not cut the live run's log,
    # and a resumed run's log goes on from the killed one's
    shell:
        "{params.launch} pretrain --model {params.model} --shards {params.shards}"
        " --threads {params.threads} >> {log} 2>&1"
