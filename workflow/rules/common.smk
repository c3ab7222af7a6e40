# Helpers only: paths from the config, and the model folders' own config.json (read through effbert.config).
from pathlib import Path

from effbert.config import load_config

DATA = config["data_dir"]
MODELS = config["models_dir"]
RESULTS = config["results_dir"]
GLUE_DIR = config["glue"]["dir"]
LRA_DIR = config["lra"]["dir"]
LOGS = config.get("logs_dir", "logs")

MODEL_NAMES = config.get("models") or sorted(p.parent.name for p in Path(MODELS).glob("*/config.json"))
MODEL_CONFIGS = {name: load_config(Path(MODELS) / name) for name in MODEL_NAMES}


def tokenizer_spec(name):
    try:
        return config["tokenizers"][name]
    except KeyError:
        raise ValueError(f"tokenizer {name!r} (a model's pretraining.tokenizer) is not in the config's tokenizers")


def source_texts(sources):
    return [f"{DATA}/text/{source}" for source in sources]


def shards_for(model):
    """A model's shard set: its max_seq_len and tokenizer name, as the seeds' 512-roberta."""
    cfg = MODEL_CONFIGS[model]
    tokenizer_spec(cfg.pretraining.tokenizer)
    return f"{DATA}/{cfg.model.max_seq_len}-{cfg.pretraining.tokenizer}"


def from_cp_inputs(wildcards):
    """A model initialised from another model folder's checkpoint waits for that model's pretraining."""
    from_cp = MODEL_CONFIGS[wildcards.model].from_cp
    if not from_cp:
        return []
    source = (Path(MODELS) / wildcards.model / from_cp).resolve()
    for name in MODEL_NAMES:
        if (Path(MODELS) / name).resolve() in source.parents and name != wildcards.model:
            return [f"{MODELS}/{name}/pretrain.json"]
    return [str(source)]
