"""config.json validation: defaults, and errors that name the file and the key."""

import json
import math

import pytest

from effbert.config import load_config
from effbert.errors import InputError


def write(tmp_path, data) -> str:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(folder)


def test_defaults_are_bert_base(tmp_path):
    cfg = load_config(write(tmp_path, {}))
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads, cfg.model.ffn_size) == (768, 12, 12, 3072)
    assert cfg.model.attention.type == "softmax" and cfg.model.head_dim == 64
    assert cfg.pretraining.lr == 1e-4 and cfg.from_cp is None
    # GLUE: the papers' grid, three seeds, each task's own epochs
    assert cfg.glue.batch_size == [16, 32] and cfg.glue.lr == [2e-5, 3e-5, 4e-5, 5e-5]
    assert cfg.glue.seeds == [0, 1, 2] and cfg.glue.epochs is None and cfg.glue.selection == "mean"


def test_glue_grid_accepts_single_values(tmp_path):
    cfg = load_config(write(tmp_path, {"glue": {"batch_size": 32, "lr": 3e-5, "seeds": 7, "epochs": {"MRPC": 5}}}))
    assert (cfg.glue.batch_size, cfg.glue.lr, cfg.glue.seeds, cfg.glue.epochs) == ([32], [3e-5], [7], {"MRPC": 5})


def test_nystrom_options_and_int_for_float(tmp_path):
    cfg = load_config(write(tmp_path, {"model": {"attention": {"type": "nystrom", "num_landmarks": 32}},
                                       "pretraining": {"lr": 1}}))
    assert cfg.model.attention.num_landmarks == 32 and cfg.model.attention.pinv_iterations == 6
    assert cfg.pretraining.lr == 1.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": {"hidden_sise": 64}}, "model.hidden_sise: unknown key"),
        ({"modle": {}}, "modle: unknown key"),
        ({"model": {"hidden_size": "64"}}, "model.hidden_size: Input should be a valid integer"),
        ({"pretraining": {"sop": "yes"}}, "pretraining.sop: Input should be a valid boolean"),
        ({"model": {"hidden_size": 100, "num_heads": 3}}, "hidden_size (100) must be divisible by num_heads (3)"),
        ({"model": {"attention": {"type": "nystrom", "num_landmark": 8}}}, "model.attention.num_landmark: unknown key"),
        ({"model": {"attention": {"type": "bogus"}}}, "unknown attention type 'bogus'"),
        ({"model": {"attention": {"type": "nystrom", "conv_kernel": 4}}}, "conv_kernel"),
        ({"model": {"dropout": 1.5}}, "model.dropout"),
        ({"glue": {"epochs": 0}}, "glue.epochs"),
        ({"glue": {"epochs": {"MRCP": 3}}}, "epochs names unknown GLUE tasks ['MRCP']"),
        ({"glue": {"lr": [3e-5, 3e-5]}}, "lr lists a value twice"),
        ({"glue": {"batch_size": []}}, "glue.batch_size"),
        ({"glue": {"batch_size": [0]}}, "glue.batch_size.0"),
        ({"glue": {"selection": "best"}}, "glue.selection"),
        ({"pretraining": {"lr": math.inf}}, "pretraining.lr: Input should be a finite number"),  # json's Infinity
        ({"glue": {"checkpoint": "banana"}}, "glue.checkpoint 'banana': expected 'last', a step number"),
        ({"pretraining": {"steps": 1000, "checkpoint_every": 400}, "glue": {"checkpoint": "cp-0123.pt"}},
         "glue.checkpoint 'cp-0123.pt': pretraining saves steps 400, 800, ..."),
        ({"glue": {"lr": [math.nan]}}, "glue.lr.0: Input should be a finite number"),
        ({"pretraining": {"keep_checkpoints": 0}},
         "pretraining.keep_checkpoints: Input should be greater than or equal to 1 (got 0)"),
        ({"pretraining": {"keep_checkpoints": 2.5}}, "pretraining.keep_checkpoints: Input should be a valid integer"),
        ({"pretraining": {"keep_checkpoints": "3"}}, "pretraining.keep_checkpoints: Input should be a valid integer"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, data, expected):
    folder = write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_config(folder)
    assert f"{folder}/config.json" in str(e.value)
    assert expected in str(e.value)


@pytest.mark.parametrize(("pretraining", "kept"), [({}, None), ({"keep_checkpoints": None}, None),
                                                   ({"keep_checkpoints": 3}, 3)])
def test_keep_checkpoints_is_every_checkpoint_unless_given(tmp_path, pretraining, kept):
    assert load_config(write(tmp_path, {"pretraining": pretraining})).pretraining.keep_checkpoints == kept


def test_invalid_json_names_line(tmp_path):
    folder = write(tmp_path, '{\n  "model": {\n    "hidden_size": 64,\n  }\n}')
    with pytest.raises(InputError, match=r"config.json: line 4 column 3: invalid JSON"):
        load_config(folder)


def test_missing_config(tmp_path):
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path)


def test_shipped_model_folders_are_valid():
    from conftest import ROOT

    folders = sorted(ROOT.glob("models/*/config.json")) + sorted(ROOT.glob("demo/models/*/config.json"))
    assert len(folders) >= 4
    for path in folders:
        load_config(path)
