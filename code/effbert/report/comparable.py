"""Whether a result may stand beside a published number: the matching rules of the result tables.

A result's setup is read from what the run saved (an LRA result's `attention` and `protocol`) and from its model
folder's config.json where the result does not say; it is a flat dict whose keys are those of the anchors'
setups (effbert.report.published). A published value stands beside ours only when every option and setting the
anchor names is the same in our setup (`compare`); otherwise the reason names what differs, e.g.
"num_landmarks 16 (paper 64)".

Demo scale: a run whose training budget (steps x batch x sequence length: the task's for LRA, pretraining's
for GLUE) is under DEMO_SHARE of the published setup's is a smoke test of the pipeline, not a measurement; it
never gets a published value and its rows are marked.

GLUE's pretraining steps are those of the checkpoint the result was fine-tuned from (glue.checkpoint may name an
early one: "cp-1000.pt" of a 500k-step run is 1000 steps of pretraining, not 500k), as the runs recorded it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from effbert.config import Config, ModelConfig
from effbert.files import read_json
from effbert.layout import CHECKPOINT_PATTERN, GlueRun, glue_run_path
from effbert.report.published import ANCHORS, GLUE_TABLE2_SETUP, LRA_PROTOCOL_KEYS, Anchor
from effbert.train.lra_protocol import POOLING, PROTOCOLS, SCHEDULE, task_protocol

DEMO_SHARE = 0.02
# the settings whose product is a run's training budget, per benchmark
BUDGET_KEYS = {"lra": ("steps", "batch_size", "max_len"),
               "glue": ("pretraining.steps", "pretraining.batch_size", "model.max_seq_len")}
SHOWN_DIFFERENCES = 4  # a reason lists this many differences, then how many more
# facts of our LRA training that the protocol row does not record (effbert.train.lra_protocol declares them)
LRA_FIXED = {"pooling": POOLING, "schedule": SCHEDULE}
GLUE_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "ffn_size", "max_seq_len", "norm")


@dataclass(frozen=True)
class Comparison:
    published: float | None  # the published value, when the setups match
    source: str | None  # the anchor it comes from
    reason: str | None  # why there is no published value
    demo: bool  # the run is demo-scale


def _attention(options: dict) -> dict[str, object]:
    return {f"attention.{key}": value for key, value in options.items()}


def lra_setup(cfg: Config, task: str, result: dict) -> dict[str, object]:
    """What an LRA result was trained under: the result's saved attention and protocol over the config's."""
    protocol = dataclasses.asdict(task_protocol(cfg.lra, task)) | (result.get("protocol") or {})
    attention = cfg.lra_attention(task).model_dump()
    saved = result.get("attention") or {}
    attention = (attention | saved) if saved.get("type", attention["type"]) == attention["type"] else saved
    model = cfg.model.model_copy(update={"attention": cfg.lra_attention(task), "num_layers": protocol["num_layers"]})
    return (_attention(attention) | _schedule(model) | {key: protocol.get(key) for key in LRA_PROTOCOL_KEYS}
            | LRA_FIXED)


def _schedule(model: ModelConfig) -> dict[str, object]:
    """Under model.layer_attention the mechanism is the schedule ("nystrom[0-9]+softmax[10-11]"), which no
    published row of one mechanism matches; "layer_attention" lists each layer's options (for its cost)."""
    if not model.layer_attention:
        return {}
    return {"attention.type": model.attention_name,
            "layer_attention": [a.model_dump(mode="json") for a in model.layer_attentions()]}


def glue_setup(cfg: Config, pretrain_summary: dict | None = None, *, result: dict | None = None,
               model_dir: str | Path | None = None) -> dict[str, object]:
    """What a model's GLUE results stand on: its shape, attention and pretraining, whose steps are those of the
    checkpoint `result` (a GLUE result: a run's, or glue/<TASK>.json's selection, whose runs are read from
    `model_dir`) was fine-tuned from (`glue_checkpoint_step`)."""
    setup = _attention(cfg.model.attention.model_dump()) | _schedule(cfg.model)
    setup |= {f"model.{key}": getattr(cfg.model, key) for key in GLUE_MODEL_KEYS}
    if cfg.import_hf:  # imported weights (cp-0000.pt): no pretraining here, so no budget and no demo scale
        setup["pretraining"] = f"imported from {cfg.import_hf}"
    elif "pretrain" in cfg.stages:
        p = cfg.pretraining
        objective = "MLM+SOP" if p.sop else "MLM"
        setup["pretraining"] = objective if cfg.from_cp is None else f"{objective}, continued from {cfg.from_cp}"
        setup["pretraining.batch_size"] = p.batch_size
        setup["pretraining.steps"] = glue_checkpoint_step(cfg, pretrain_summary, result, model_dir)
    return setup


def glue_checkpoint_step(cfg: Config, pretrain_summary: dict | None = None, result: dict | None = None,
                         model_dir: str | Path | None = None) -> int:
    """The pretraining step of the checkpoint a GLUE result was fine-tuned from: first as the result's runs
    recorded it (what ran, whatever config.json says now); a result that records none (no result given, or
    files from before runs named their checkpoint, or a checkpoint not named cp-NNNN.pt) falls back to the step
    glue.checkpoint names, else pretraining's last step (pretrain.json's, else the config's: glue.checkpoint
    'last' fine-tunes the end of pretraining)."""
    recorded = _recorded_steps(result or {}, model_dir)
    if recorded:
        return min(recorded)  # the runs of one selection share a checkpoint; if not, the least pretrained counts
    if cfg.glue.checkpoint_step is not None:
        return cfg.glue.checkpoint_step
    return (pretrain_summary or {}).get("steps", cfg.pretraining.steps)


def _recorded_steps(result: dict, model_dir: str | Path | None) -> list[int]:
    """The checkpoint steps a GLUE result's runs recorded: a run's result names its checkpoint itself
    (effbert.train.glue: "checkpoints/cp-1000.pt"); a selection (effbert.train.glue_protocol) does not, so its
    selected grid point's runs are read from `model_dir`. Runs missing or naming no cp-NNNN.pt give nothing."""
    selected = result.get("selected") or {}
    if "checkpoint" in result:
        runs = [result]
    elif model_dir is not None and "task" in result and {"batch_size", "lr", "seeds"} <= set(selected):
        names = [GlueRun(selected["batch_size"], selected["lr"], seed).name for seed in selected["seeds"]]
        paths = [glue_run_path(model_dir, result["task"], name) for name in names]
        runs = [read_json(path) for path in paths if path.is_file()]
    else:
        runs = []
    found = [CHECKPOINT_PATTERN.search(str(run.get("checkpoint") or "")) for run in runs]
    return [int(m.group(1)) for m in found if m]


def _reference(benchmark: str, task: str) -> dict[str, object] | None:
    """The published setup a run's budget is measured against."""
    if benchmark == "glue":
        return GLUE_TABLE2_SETUP
    return dataclasses.asdict(PROTOCOLS[task]) if task in PROTOCOLS else None


def budget_share(benchmark: str, task: str, setup: dict[str, object]) -> float | None:
    """Our training budget over the published setup's; None where either is unknown (imported weights)."""
    reference = _reference(benchmark, task)
    keys = BUDGET_KEYS[benchmark]
    if reference is None or any(setup.get(k) is None or reference.get(k) is None for k in keys):
        return None
    return math.prod(setup[k] for k in keys) / math.prod(reference[k] for k in keys)


def is_demo(share: float | None) -> bool:
    return share is not None and share < DEMO_SHARE


def _show(value: object) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def differences(setup: dict[str, object], anchor: Anchor, task: str) -> list[str]:
    """Each setting the anchor names where ours differs: "num_landmarks 16 (paper 64)"."""
    wanted = _attention(anchor.attention) | anchor.setup.get(task, {})
    return [f"{key.split('.', 1)[-1] if key.startswith(('attention.', 'model.')) else key.replace('.', ' ')} "
            f"{_show(setup.get(key))} (paper {_show(value)})"
            for key, value in wanted.items() if setup.get(key) != value]


def _describe(found: list[str]) -> str:
    more = len(found) - SHOWN_DIFFERENCES
    return ", ".join(found[:SHOWN_DIFFERENCES]) + (f", +{more} more" if more > 0 else "")


def compare(benchmark: str, task: str, setup: dict[str, object]) -> Comparison:
    """The published value for `task` whose anchor's setup ours matches, else the reason there is none."""
    share = budget_share(benchmark, task, setup)
    demo = is_demo(share)
    scale = f"demo scale ({share:.2%} of the published training budget); " if demo else ""
    kind = setup.get("attention.type")
    candidates = [a for a in ANCHORS[benchmark] if a.attention["type"] == kind and task in a.scores]
    if not candidates:
        return Comparison(None, None, f"{scale}no published {task} number for {kind} attention", demo)
    found = [(differences(setup, a, task), a) for a in candidates]
    for diff, anchor in found:
        if not diff and not demo:
            source = f"{anchor.source}: {anchor.name}"
            if task in anchor.failed:
                return Comparison(None, source, f"{anchor.name} failed {task} in {anchor.source} (at chance)", demo)
            return Comparison(anchor.scores[task], source, None, demo)
    diff, closest = min(found, key=lambda pair: len(pair[0]))  # the first of equally close anchors
    setting = f"differs from {closest.source}: {closest.name}: {_describe(diff)}" if diff else "matches the setup"
    return Comparison(None, None, scale + setting, demo)
