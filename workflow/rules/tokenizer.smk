# Documents -> a tokenizer: trained (byte-level BPE or WordPiece) or imported from a given file.


rule build_tokenizer:
    input:
        tokenizer_inputs,
    output:
        str(layout.tokenizer_file(DATA, "{tokenizer}")),
    params:
        args=tokenizer_args,
        out=lambda wc: layout.tokenizer_dir(DATA, wc.tokenizer),
    log:
        f"{LOGS}/tokenizer/{{tokenizer}}.log",
    benchmark:
        f"{LOGS}/tokenizer/{{tokenizer}}.benchmark.tsv"
    resources:
        **rule_resources("build_tokenizer"),
    shell:
        "effbert tokenizer {params.args} --out {params.out} > {log} 2>&1"
