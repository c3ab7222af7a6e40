# Long Range Arena: the release's files (or ListOps / Pathfinder generated in the release's layout)
# -> one run per task and seed (models/<m>/lra/<task>/seed-<s>.json) -> the gather, models/<m>/lra/<task>.json
# (mean and spread over the seeds; the report reads it). Seeds: the model's config.json lra.seeds.
# A run's identity is the task's attention, protocol and seed: folders that share it share the run (lra_run_owner
# says which folder runs it; the others' gathers read it there), and only its own edits rerun it.

if "listops" in GENERATE:

    rule generate_listops:
        output:
            LISTOPS_FILES,
        params:
            options=" ".join(f"--{key} {value}" for key, value in GENERATE["listops"].items()),
            out=lambda wc, output: Path(output[0]).parent,
        log:
            f"{LOGS}/lra/generate-listops.log",
        benchmark:
            f"{LOGS}/lra/generate-listops.benchmark.tsv"
        resources:
            **rule_resources("generate_listops"),
        shell:
            "effbert lra-data --out {params.out} {params.options} > {log} 2>&1"


for _task in ("pathfinder", "pathx"):
    if _task in GENERATE:

        rule:
            name:
                f"generate_{_task}"
            output:
                f"{pathfinder_folder(_task)}/stats.json",
            params:
                folder=pathfinder_folder(_task),
                resolution=dict(PROTOCOLS[_task].options)["resolution"],
                difficulty=dict(PROTOCOLS[_task].options)["difficulty"],
                options=" ".join(f"--{key} {value}" for key, value in GENERATE[_task].items()),
            log:
                f"{LOGS}/lra/generate-{_task}.log",
            benchmark:
                f"{LOGS}/lra/generate-{_task}.benchmark.tsv"
            resources:
                **rule_resources(f"generate_{_task}"),
            threads: getattr(PIPELINE.lra.generate, _task).workers
            shell:
                "effbert lra-data --task pathfinder --out {params.folder} --resolution {params.resolution}"
                " --difficulty {params.difficulty} {params.options} > {log} 2>&1"


rule train_lra:
    input:
        data=lra_task_inputs,
    output:
        model_file("{model}", layout.lra_seed_path, "{task}", "{seed}"),
    wildcard_constraints:
        model=r"[^/]+",
        task="|".join(LRA_TASKS),
        seed=r"-?\d+",
    params:
        identity=lra_run_identity,
        model=lambda wc: f"{MODELS}/{wc.model}",
        lra_dir=LRA_DIR,
        on_gpus=on_gpus,
    log:
        f"{LOGS}/lra/{{model}}-{{task}}-seed-{{seed}}.log",
    benchmark:
        f"{LOGS}/lra/{{model}}-{{task}}-seed-{{seed}}.benchmark.tsv"
    resources:
        **rule_resources("train_lra"),
    threads: 1
    shell:
        "{params.on_gpus} effbert lra --model {params.model} --task {wildcards.task} --lra_dir {params.lra_dir}"
        " --seed {wildcards.seed} --threads {threads} > {log} 2>&1"


rule gather_lra:
    input:
        runs=lra_seed_results,
    output:
        model_file("{model}", layout.lra_result, "{task}"),
    wildcard_constraints:
        model=r"[^/]+",
        task="|".join(LRA_TASKS),
    params:
        seeds=lambda wc: MODEL_CONFIGS[wc.model].lra.task_seeds(wc.task),
        model=lambda wc: f"{MODELS}/{wc.model}",
    log:
        f"{LOGS}/lra/{{model}}-{{task}}.log",
    resources:
        **rule_resources("gather_lra"),
    shell:
        "effbert lra --model {params.model} --task {wildcards.task} --gather --runs {input.runs} > {log} 2>&1"
