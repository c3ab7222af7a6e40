# Raw dumps -> documents: one sentence per line, a blank line between documents (BERT's input format).
# Work goes to <out>.work/ (not an output: it survives a killed job, and the rerun resumes from it).


rule extract_documents:
    input:
        lambda wc: config["sources"][wc.source]["input"],
    output:
        directory(str(layout.text_dir(DATA, "{source}"))),
    params:
        options=lambda wc: " ".join(
            f"--{key} {value}" for key, value in config["sources"][wc.source].items() if key != "input"
        ),
    log:
        f"{LOGS}/documents/{{source}}.log",
    benchmark:
        f"{LOGS}/documents/{{source}}.benchmark.tsv"
    resources:
        **rule_resources("extract_documents"),
    threads: workflow.cores
    shell:
        "effbert documents --source {wildcards.source} --input {input} --out {output}"
        " --processes {threads} {params.options} > {log} 2>&1"
