# effbert: raw dumps -> documents -> tokenizer -> shards -> pretrain -> GLUE and LRA -> result tables.
# Real scale: `snakemake --cores N` (config/config.yaml). The bundled tiny default: `./run demo`.
from snakemake.utils import min_version

min_version("8.0")


# the config: config/config.yaml by default (profiles/default), or the one --configfile names, whole. Not a
# configfile: directive here, which --configfile would update key by key: a config for a smaller run would get
# config.yaml's real-scale settings wherever it left a key out.


# the front page of `snakemake --report results/report.html` (the results it carries: workflow/rules/report.smk)
report: "workflow/report/workflow.rst"


# the config and every model's config.json, validated (effbert.pipeline_config, effbert.config)
include: "workflow/rules/common.smk"


# the software of every rule: this project's image (Dockerfile), used with --software-deployment-method apptainer
container: PIPELINE.container


include: "workflow/rules/documents.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/glue.smk"
include: "workflow/rules/lra.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/efficiency.smk"  # opt-in (`snakemake efficiency`): a timing run, not in `all`
include: "workflow/rules/swap.smk"  # opt-in (`snakemake swap`, with swap.hf_dir set): docs/swap.md


# Named targets (`snakemake <target>`, `docker run ... effbert <target>`); each runs what it needs first.
localrules:
    all,
    shards,
    pretrain,
    glue,
    lra,
    report,


rule all:
    input:
        REPORT_TABLES,
        REPORT_PLOTS,


rule shards:
    input:
        sorted({f"{shards_for(model)}/manifest.json" for model in with_stage("pretrain")}),


rule pretrain:
    input:
        pretrained(MODEL_NAMES),


rule glue:
    input:
        glue_scores(MODEL_NAMES),


rule lra:
    input:
        lra_scores(MODEL_NAMES),


# one target per model folder, named as the folder (e.g. `snakemake nystrom-512`): the stages it lists
for _model in MODEL_NAMES:

    rule:
        name:
            _model
        localrule: True
        input:
            model_outputs([_model]),
