# A pretrained checkpoint + a GLUE task folder (official layout) -> models/<name>/glue/<TASK>.json.


rule finetune_glue:
    input:
        config=f"{MODELS}/{{model}}/config.json",
        pretrained=f"{MODELS}/{{model}}/pretrain.json",
        task=f"{GLUE_DIR}/{{task}}",
    output:
        f"{MODELS}/{{model}}/glue/{{task}}.json",
    log:
        f"{LOGS}/glue/{{model}}-{{task}}.log",
    benchmark:
        f"{LOGS}/glue/{{model}}-{{task}}.benchmark.tsv"
    threads: 1
    shell:
        "effbert glue --model {MODELS}/{wildcards.model} --task {wildcards.task} --glue_dir {GLUE_DIR}"
        " --threads {threads} > {log} 2>&1"
