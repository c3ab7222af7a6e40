# Helpers only (no rules): paths from the config, the model folders' own config.json (read through effbert.config),
# every rule's resources, and the functions the rule files call, by stage.
#
# Rules take no config.json as input. Each job's `identity` param is the digest of exactly the settings its
# run reads (effbert.train.identity), so an edit reruns the jobs whose settings it changes (and what depends
# on their outputs), and a bare `touch` reruns nothing. profiles/default keeps the rerun triggers to mtime,
# params and input: a new release of a rule's command line does not rerun GPU-weeks of finished work.
import functools
import importlib
import os
import sys
from pathlib import Path

from effbert import layout
from effbert.config import load_config
from effbert.data.shard_files import MANIFEST
from effbert.errors import InputError
from effbert.layout import GlueRun
from effbert.pipeline_config import ShardSettings, parse_pipeline_config
from effbert.train.glue_protocol import grid
from effbert.train.identity import (
    digest,
    glue_run_settings,
    glue_selection_settings,
    import_settings,
    lra_run_settings,
    pretraining_settings,
)


def load_settings():
    """The Snakemake config with every default filled in (effbert.pipeline_config), the models to run and their
    config.json, every cross-reference checked. A problem of the user's making ends the run here on one line
    naming the file and key, not in Snakemake's traceback of this file."""
    source = ", ".join(os.path.relpath(p) for p in workflow.configfiles) or "the Snakemake config"
    try:
        pipeline = parse_pipeline_config(config, source)
        models = pipeline.models_dir
        names = pipeline.models or sorted(p.parent.name for p in Path(models).glob(f"*/{layout.CONFIG_FILE}"))
        if not names:  # else an empty report, exit 0: a misspelt models_dir would look like success
            raise InputError(f"{source}: models_dir {models}: " + (
                f"no model folder (<name>/{layout.CONFIG_FILE}) in it" if Path(models).is_dir() else "no such folder"))
        configs = {name: load_config(Path(models) / name) for name in names}
        for name, cfg in configs.items():
            if "pretrain" in cfg.stages and cfg.pretraining.tokenizer not in pipeline.tokenizers:
                raise InputError(f"{models}/{name}/{layout.CONFIG_FILE}: pretraining.tokenizer: tokenizer "
                                 f"{cfg.pretraining.tokenizer!r} is not in the Snakemake config's tokenizers "
                                 f"{sorted(pipeline.tokenizers)}")
    except InputError as e:
        sys.exit(f"error: {e}")
    return pipeline, names, configs


PIPELINE, MODEL_NAMES, MODEL_CONFIGS = load_settings()
DATA = PIPELINE.data_dir
MODELS = PIPELINE.models_dir
RESULTS = PIPELINE.results_dir
GLUE_DIR = PIPELINE.glue.dir
LRA_DIR = PIPELINE.lra.dir
LOGS = PIPELINE.logs_dir


def with_stage(stage, models=MODEL_NAMES):
    """The models whose config.json `stages` include `stage` (pretrain, glue, lra)."""
    return [name for name in models if stage in MODEL_CONFIGS[name].stages]



def model_file(model, path_of, *args):
    """A path in a model folder, from effbert.layout (model may be the wildcard "{model}"), as Snakemake's string."""
    return str(path_of(f"{MODELS}/{model}", *args))


def tokenizer_spec(name, model=None):
    try:
        return PIPELINE.tokenizers[name]
    except KeyError:
        where = f"{MODELS}/{model}/config.json: pretraining.tokenizer" if model else "a model's pretraining.tokenizer"
        raise ValueError(f"{where}: tokenizer {name!r} is not in the Snakemake config's tokenizers "
                         f"{sorted(PIPELINE.tokenizers)}") from None


def source_texts(sources):
    return [str(layout.text_dir(DATA, source)) for source in sources]


def shards_for(model):
    """A model's shard set: its max_seq_len and tokenizer name, as the seeds' 512-roberta."""
    cfg = MODEL_CONFIGS[model]
    tokenizer_spec(cfg.pretraining.tokenizer, model)
    return str(layout.shards_dir(DATA, cfg.model.max_seq_len, cfg.pretraining.tokenizer))


def from_cp_inputs(wildcards):
    """A model initialised from another model folder's checkpoint waits for that model's pretraining (or import)."""
    from_cp = MODEL_CONFIGS[wildcards.model].from_cp
    if not from_cp:
        return []
    source = (Path(MODELS) / wildcards.model / from_cp).resolve()
    for name in MODEL_NAMES:
        if (Path(MODELS) / name).resolve() in source.parents and name != wildcards.model:
            return [weights_of(name)]
    return [str(source)]


def weights_of(model):
    """What stands for a model's weights being ready: its pretraining summary, or its imported checkpoint."""
    if "pretrain" in MODEL_CONFIGS[model].stages:
        return pretrain_summary(model)
    return model_file(model, layout.imported_checkpoint)


def pretrain_summary(model):
    return f"{MODELS}/{model}/{layout.PRETRAIN_SUMMARY}"


def pretrain_identity(wc):
    return digest(pretraining_settings(MODEL_CONFIGS[wc.model]))


# import.smk: a HuggingFace BERT folder (config.json's import_hf, relative to the model folder) -> cp-0000.pt


def import_source(wc):
    given = MODEL_CONFIGS[wc.model].import_hf
    return given if os.path.isabs(given) else os.path.normpath(f"{MODELS}/{wc.model}/{given}")


def import_identity(wc):
    return digest(import_settings(MODEL_CONFIGS[wc.model]))


# Per-rule resources in one place (gpus per node, nodes, mem_mb, runtime in minutes); each rule takes its
# own with `resources: **rule_resources(name)`; a profile's set-resources overrides them (profiles/gpu,
# profiles/slurm), and its set-threads the rules' threads. GPUs default to 0: a plain `snakemake --cores N` runs
# every job as one process, which uses the first GPU when there is one.
SMALL_JOB = {"mem_mb": 4_000, "runtime": 60}
RESOURCES = {
    "extract_documents": {"mem_mb": 16_000, "runtime": 24 * 60},
    "build_tokenizer": {"mem_mb": 64_000, "runtime": 12 * 60},
    "build_shards": {"mem_mb": 64_000, "runtime": 24 * 60},
    "import_hf": {"mem_mb": 16_000, "runtime": 60},
    "pretrain_model": {"gpus": 0, "nodes": 1, "mem_mb": 64_000, "runtime": 7 * 24 * 60},
    "finetune_glue": {"gpus": 0, "mem_mb": 32_000, "runtime": 12 * 60},
    "train_lra": {"gpus": 0, "mem_mb": 32_000, "runtime": 24 * 60},
    "generate_listops": {"mem_mb": 8_000, "runtime": 2 * 60},
    "generate_pathfinder": {"mem_mb": 8_000, "runtime": 12 * 60},
    "generate_pathx": {"mem_mb": 8_000, "runtime": 12 * 60},
    "bench_attention": {"mem_mb": 16_000, "runtime": 2 * 60},  # naive softmax's n x n matrices at the longest n
    "swap_eval": {"mem_mb": 16_000, "runtime": 6 * 60},  # a BERT-base per variant, adaptation steps on the CPU
}


def rule_resources(rule):
    """A rule's resource defaults; every job lists gpus (0 for CPU work), mem_mb and runtime."""
    return {"gpus": 0, **RESOURCES.get(rule, SMALL_JOB)}


CLAIM_GPUS = Path(workflow.basedir) / "workflow" / "scripts" / "claim-gpus.sh"


def on_gpus(wildcards, resources):
    """A GPU job's command prefix: which of this machine's GPUs it gets (a lock per GPU; SLURM's own choice stands)."""
    return f"bash '{CLAIM_GPUS}' {resources.gpus}" if resources.gpus > 0 else ""


# tokenizer.smk


def tokenizer_inputs(wc):
    spec = tokenizer_spec(wc.tokenizer)
    return [spec.file] if hasattr(spec, "file") else source_texts(spec.sources)


def tokenizer_args(wc, input):
    spec = tokenizer_spec(wc.tokenizer)
    if hasattr(spec, "file"):
        return f"--from {spec.file}"
    lower = " --lowercase" if spec.lowercase else ""
    return f"--kind {spec.kind} --vocab_size {spec.vocab_size} --text {' '.join(input)}{lower}"


# shards.smk

SHARDS = PIPELINE.shards


def shard_settings(length):
    """The shard settings for one length: the defaults, overridden by shards.by_length[<length>] (the seeds'
    4096-token set added Stories and RealNews at one third)."""
    return SHARDS.for_length(length)


def shard_options(wc):
    s = shard_settings(wc.length)
    probs = " ".join(str(s.sample_probs.get(source, 1.0)) for source in s.sources)
    options = f"--dev_fraction {s.dev_fraction} --dupe_factor {s.dupe_factor} --seed {s.seed} --sample_probs {probs}"
    # settings the DAG passes only away from their defaults, so that the command line of a shard set built
    # before they could be set (a rule's rerun trigger) stays as it was
    for key in ("masked_lm_prob", "short_seq_prob"):
        if getattr(s, key) != ShardSettings.model_fields[key].default:
            options += f" --{key} {getattr(s, key)}"
    return options


# pretrain.smk: effbert, torchrun on the job's GPUs, or one torchrun per node under srun


def pretrain_launcher(wildcards, resources):
    gpus, nodes = resources.gpus, resources.nodes
    if gpus < 1:
        return "effbert"
    if nodes <= 1:
        return f"{on_gpus(wildcards, resources)} torchrun --standalone --nnodes 1 --nproc_per_node {gpus} -m effbert"
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    return (f"srun --overlap --nodes {nodes} --ntasks-per-node 1 --kill-on-bad-exit=1"
            f" torchrun --nnodes {nodes} --nproc_per_node {gpus} --rdzv_id \"$SLURM_JOB_ID\" --rdzv_backend c10d"
            f" --rdzv_endpoint \"{head}:29500\" -m effbert")


def threads_per_process(wildcards, threads, resources):
    return max(1, threads // max(1, resources.gpus))


# report.smk and the named targets: what each model's scores are


def pretrained(models):
    return expand(pretrain_summary("{model}"), model=with_stage("pretrain", models))


def glue_scores(models):
    return expand(model_file("{model}", layout.glue_result, "{task}"), model=with_stage("glue", models),
                  task=config["glue"]["tasks"])


def lra_scores(models):
    return expand(model_file("{model}", layout.lra_result, "{task}"), model=with_stage("lra", models),
                  task=config["lra"]["tasks"])


def model_outputs(models):
    return pretrained(models) + glue_scores(models) + lra_scores(models)


# glue.smk: one run per grid point and seed


def glue_runs(wc):
    return [model_file(wc.model, layout.glue_run_path, wc.task, run.name) for run in grid(MODEL_CONFIGS[wc.model].glue)]


def glue_run_identity(wc):
    return digest(glue_run_settings(MODEL_CONFIGS[wc.model], wc.task, GlueRun.parse(wc.run)))


def glue_selection_identity(wc):
    return digest(glue_selection_settings(MODEL_CONFIGS[wc.model], wc.task))


# lra.smk: generated or placed data, one run per task and seed

from effbert.constants import LRA_TASKS
from effbert.train.lra_protocol import PROTOCOLS

GENERATE = config["lra"].get("generate") or {}  # as given: the generators' command lines keep the user's keys
LISTOPS = f"{LRA_DIR}/listops-1000"
LISTOPS_FILES = [f"{LISTOPS}/basic_{split}.tsv" for split in ("train", "val", "test")]


def pathfinder_folder(task):
    """<lra_dir>/pathfinder<res>/<difficulty>, as the task's protocol row names it."""
    options = dict(PROTOCOLS[task].options)
    return f"{LRA_DIR}/pathfinder{options['resolution']}/{options['difficulty']}"


def lra_task_inputs(wc):
    """What a task reads: generated files (the DAG makes them), else the release's folder (you place it)."""
    task = wc.task
    if task == "listops":
        return LISTOPS_FILES
    if task in ("pathfinder", "pathx"):
        folder = pathfinder_folder(task)
        return [f"{folder}/stats.json"] if task in GENERATE else [f"{folder}/metadata"]
    loader = importlib.import_module(f"effbert.data.lra.{PROTOCOLS[task].loader}")
    return [f"{LRA_DIR}/{loader.RELEASE_DIR}"]  # the folder the task's loader reads


@functools.cache  # asked for once per folder, task and seed by every folder that may share the run
def lra_identity(model, task, seed):
    return digest(lra_run_settings(MODEL_CONFIGS[model], task, int(seed)))


def lra_run_owner(model, task, seed):
    """The folder that runs this task and seed, once, for every folder whose run has the same settings: one that
    has the run's result already (a folder added later, or renamed, never causes a rerun), else the first by name."""
    mine = lra_identity(model, task, seed)
    sharing = [name for name in with_stage("lra") if lra_identity(name, task, seed) == mine] or [model]
    done = [name for name in sharing if Path(model_file(name, layout.lra_seed_path, task, seed)).is_file()]
    return (done or sharing)[0]


def lra_seed_results(wc):
    seeds = MODEL_CONFIGS[wc.model].lra.task_seeds(wc.task)
    return [model_file(lra_run_owner(wc.model, wc.task, s), layout.lra_seed_path, wc.task, s) for s in seeds]


def lra_run_identity(wc):
    return lra_identity(wc.model, wc.task, wc.seed)
