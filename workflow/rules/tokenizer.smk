# Documents -> a tokenizer: trained (byte-level BPE or WordPiece) or imported from a given file.


def tokenizer_inputs(wc):
    spec = tokenizer_spec(wc.tokenizer)
    return [spec["file"]] if "file" in spec else source_texts(spec["sources"])


def tokenizer_args(wc, input):
    spec = tokenizer_spec(wc.tokenizer)
    if "file" in spec:
        return f"--from {spec['file']}"
    lower = " --lowercase" if spec.get("lowercase") else ""
    return f"--kind {spec['kind']} --vocab_size {spec['vocab_size']} --text {' '.join(input)}{lower}"


rule build_tokenizer:
    input:
        tokenizer_inputs,
    output:
        f"{DATA}/tokenizers/{{tokenizer}}/tokenizer.json",
    params:
        args=tokenizer_args,
        out=lambda wc: f"{DATA}/tokenizers/{wc.tokenizer}",
    log:
        f"{LOGS}/tokenizer/{{tokenizer}}.log",
    benchmark:
        f"{LOGS}/tokenizer/{{tokenizer}}.benchmark.tsv"
    shell:
        "effbert tokenizer {params.args} --out {params.out} > {log} 2>&1"
