# effbert: raw dumps -> documents -> tokenizer -> shards -> pretrain -> GLUE and LRA -> result tables.
# Real scale: `snakemake --cores N` (config/config.yaml). The bundled tiny default: `./run demo`.
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/documents.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/glue.smk"
include: "workflow/rules/lra.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_TABLES,
