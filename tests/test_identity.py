"""Run identities: which edits of a config.json change which stage's runs (effbert.train.identity).

The property: an edit changes a stage's identity exactly when that stage's run reads the edited key."""

from __future__ import annotations

import pytest

from effbert.config import PretrainConfig, parse_config
from effbert.constants import LRA_TASKS
from effbert.train.glue_protocol import grid
from effbert.train.identity import (
    RUNTIME_KEYS,
    changes,
    digest,
    glue_run_settings,
    glue_selection_settings,
    lra_run_settings,
    pretraining_settings,
)

BASE = {"model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "ffn_size": 128,
                  "attention": {"type": "nystrom", "num_landmarks": 16}},
        "glue": {"batch_size": [16, 32], "lr": [1e-4, 2e-4], "seeds": [0, 1]},
        "lra": {"seeds": [0, 1]}}


def _with(section: str, key: str, value: object) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    data.setdefault(section, {})[key] = value
    return data


def _digests(data: dict) -> dict[str, object]:
    """Every stage's identity digests for one config: pretraining, each GLUE run, each selection, each LRA run."""
    cfg = parse_config(data, "test")
    base_runs = grid(parse_config(BASE, "base").glue)  # the same runs named, whatever the edit
    return {
        "pretrain": digest(pretraining_settings(cfg)),
        "glue_runs": [digest(glue_run_settings(cfg, "MRPC", run)) for run in base_runs],
        "glue_selection": digest(glue_selection_settings(cfg, "MRPC")),
        "lra": {task: digest(lra_run_settings(cfg, task, 0)) for task in LRA_TASKS},
    }


def _changed(edit: dict) -> set[str]:
    before, after = _digests(BASE), _digests(edit)
    return {stage for stage in before if before[stage] != after[stage]}


ALTERED = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2, str: lambda v: v}


@pytest.mark.parametrize("key", sorted(PretrainConfig.model_fields))
def test_a_pretraining_key_changes_pretraining_and_glue_unless_it_only_watches_the_run(key):
    default = getattr(PretrainConfig(), key)
    value = {"tokenizer": "other", "precision": "bf16", "schedule": "cosine", "on_change": "continue",
             "micro_batch_size": 8, "masking": "dynamic", "keep_checkpoints": 2}.get(key)
    if value is None:
        value = ALTERED[type(default)](default)
    changed = _changed(_with("pretraining", key, value))
    if key in RUNTIME_KEYS:
        assert changed == set()
    else:  # the weights change, so does every GLUE run that fine-tunes them; LRA never reads them
        assert changed == {"pretrain", "glue_runs"}


def test_model_edits_change_pretraining_and_lra_only_through_the_attention():
    assert _changed(_with("model", "num_layers", 3)) == {"pretrain", "glue_runs"}  # LRA takes its own sizes
    attention = {"type": "nystrom", "num_landmarks": 32}
    assert _changed(_with("model", "attention", attention)) == {"pretrain", "glue_runs", "lra"}


def test_glue_edits_change_only_the_runs_they_touch():
    assert _changed(_with("glue", "selection", "max")) == {"glue_selection"}
    assert _changed(_with("glue", "weight_decay", 0.0)) == {"glue_runs"}
    # a new learning rate adds runs and changes the selection; the runs already named keep their identity
    edit = _with("glue", "lr", [1e-4, 2e-4, 3e-4])
    assert _changed(edit) == {"glue_selection"}
    assert len(grid(parse_config(edit, "edit").glue)) == 12


def test_lra_edits_change_only_the_tasks_they_touch():
    assert _changed(_with("lra", "seeds", [0, 1, 2])) == set()  # seed 0's run stands; a new seed is a new run
    before, after = _digests(BASE)["lra"], _digests(_with("lra", "listops", {"steps": 7}))["lra"]
    assert {task for task in LRA_TASKS if before[task] != after[task]} == {"listops"}
    edit = _with("lra", "text", {"attention": {"num_landmarks": 64}})
    after = _digests(edit)["lra"]
    assert {task for task in LRA_TASKS if before[task] != after[task]} == {"text"}
    assert parse_config(edit, "edit").lra_attention("text").num_landmarks == 64


def test_folders_with_the_same_lra_attention_share_their_runs():
    other = {"model": {"hidden_size": 768, "num_layers": 12, "num_heads": 12,
                       "attention": {"type": "nystrom", "num_landmarks": 16}},
             "pretraining": {"lr": 5e-4}, "stages": ["lra"]}
    assert _digests(other)["lra"] == _digests(BASE)["lra"]


def test_changes_lists_every_differing_leaf():
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": None}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2]}, "f": True}
    assert changes(old, new) == [("b.c", 2, 3), ("f", None, True)]  # a null and an absent key read alike
    assert digest({"x": 1, "y": 2}) == digest({"y": 2, "x": 1}) != digest({"x": 1, "y": 3})
