# A pretrained checkpoint + a GLUE task folder (official layout) -> one run per grid point and seed
# (models/<name>/glue/<TASK>/<run>.json), then the selection among them -> models/<name>/glue/<TASK>.json.
# The grid (batch sizes x learning rates x seeds) is the model's config.json "glue" section. A run reruns when
# its own settings change or its weights do (pretrain.json or the imported checkpoint is newer); the selection
# when the grid or the way of choosing does.
# IMDB (optional: list it in glue.tasks) reads the aclImdb folder under glue.imdb_dir, by default lra.dir's: the
# files LRA Text reads; `effbert glue --glue_dir` is then the folder holding aclImdb/ (effbert.data.glue).

from effbert.data.glue import get_task

IMDB_DIR = PIPELINE.glue.imdb_dir or LRA_DIR  # the folder holding aclImdb/


rule finetune_glue:
    input:
        weights=lambda wc: weights_of(wc.model),
        # <glue.dir>/<TASK>, or IMDB's <imdb_dir>/aclImdb
        task=lambda wc: f"{IMDB_DIR if wc.task == 'IMDB' else GLUE_DIR}/{get_task(wc.task).folder}",
    output:
        model_file("{model}", layout.glue_run_path, "{task}", "{run}"),
    wildcard_constraints:
        model=r"[^/]+",
        task=r"[^/]+",
        run=layout.GLUE_RUN_WILDCARD,
    params:
        identity=glue_run_identity,
        model=lambda wc: f"{MODELS}/{wc.model}",
        glue_dir=lambda wc, input: Path(input.task).parent,
        on_gpus=on_gpus,
    log:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.log",
    benchmark:
        f"{LOGS}/glue/{{model}}-{{task}}-{{run}}.benchmark.tsv"
    resources:
        **rule_resources("finetune_glue"),
    threads: 1
    shell:
        "{params.on_gpus} effbert glue --model {params.model} --task {wildcards.task} --glue_dir {params.glue_dir}"
        " --run {wildcards.run} --threads {threads} > {log} 2>&1"


rule select_glue:
    input:
        runs=glue_runs,
    output:
        model_file("{model}", layout.glue_result, "{task}"),
    wildcard_constraints:
        model=r"[^/]+",
        task=r"[^/]+",
    params:
        identity=glue_selection_identity,
        model=lambda wc: f"{MODELS}/{wc.model}",
    log:
        f"{LOGS}/glue/{{model}}-{{task}}.log",
    resources:
        **rule_resources("select_glue"),
    shell:
        "effbert glue-select --model {params.model} --task {wildcards.task} > {log} 2>&1"
