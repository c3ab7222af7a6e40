# A HuggingFace BERT folder (config.json's import_hf) -> models/<name>/checkpoints/cp-0000.pt with the folder's
# attention: the weights GLUE fine-tunes in a folder without pretraining (the FNet-from-BERT experiment).
# Reruns when the source folder is newer or the import's settings (source, attention, seed) change.


rule import_hf:
    input:
        import_source,
    output:
        model_file("{model}", layout.imported_checkpoint),
    wildcard_constraints:
        model="|".join(name for name in MODEL_NAMES if MODEL_CONFIGS[name].import_hf) or "(?!)",
    params:
        identity=import_identity,
        model=lambda wc: f"{MODELS}/{wc.model}",
    log:
        f"{LOGS}/import/{{model}}.log",
    benchmark:
        f"{LOGS}/import/{{model}}.benchmark.tsv"
    resources:
        **rule_resources("import_hf"),
    shell:
        "effbert import-hf --from {input} --model {params.model} > {log} 2>&1"
