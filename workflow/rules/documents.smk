# Raw dumps -> documents: one sentence per line, a blank line between documents (BERT's input format).


rule extract_documents:
    input:
        lambda wc: config["sources"][wc.source]["input"],
    output:
        directory(f"{DATA}/text/{{source}}"),
    params:
        min_words=lambda wc: (
            f"--min_words {config['sources'][wc.source]['min_words']}"
            if "min_words" in config["sources"][wc.source]
            else ""
        ),
    log:
        f"{LOGS}/documents/{{source}}.log",
    benchmark:
        f"{LOGS}/documents/{{source}}.benchmark.tsv"
    threads: 2
    shell:
        "effbert documents --source {wildcards.source} --input {input} --out {output}"
        " --processes {threads} {params.min_words} > {log} 2>&1"
