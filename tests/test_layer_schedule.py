"""model.layer_attention: a per-layer attention schedule (MASFormer-style hybrids).

Truths: the registry's classes and each config's options (what every layer must hold), the plain model built
from the same seed (a schedule naming one mechanism everywhere is that model), hand-counted costs and the
config's digests before the key existed."""

from __future__ import annotations

import json

import pytest
import torch

from effbert.attention import REGISTRY
from effbert.config import ModelConfig, parse_config
from effbert.errors import InputError
from effbert.model.pretraining import PretrainingModel
from effbert.report.attention_cost import attention_flops
from effbert.report.comparable import compare, glue_setup
from effbert.train.checkpoints import read_checkpoint
from effbert.train.convert_norm import convert_state
from effbert.train.hf_import import import_hf_bert
from effbert.train.identity import digest, lra_run_settings, pretraining_settings
from effbert.train.initialise import initialise_from
from effbert.train.lra import model_config as lra_model_config
from effbert.train.lra_protocol import task_protocol
from effbert.train.pretrain import pretrain
from helpers import model_folder

VOCAB = 40
TINY = {"hidden_size": 24, "num_layers": 4, "num_heads": 4, "ffn_size": 40, "max_seq_len": 16,
        "dropout": 0.0, "attention_dropout": 0.0}
NYSTROM = {"type": "nystrom", "num_landmarks": 4}


def _model(seed: int = 0, **model) -> tuple[ModelConfig, PretrainingModel]:
    cfg = parse_config({"model": TINY | model}, "test").model
    torch.manual_seed(seed)
    return cfg, PretrainingModel(cfg, VOCAB).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    return ids, mask


def test_a_schedule_builds_the_mechanisms_it_names_layer_by_layer():
    cfg, net = _model(attention=NYSTROM, layer_attention=[
        {"layers": [0, 0], "attention": {"type": "linformer", "k": 8}},
        {"layers": [2, 3], "attention": {"type": "softmax"}},
    ])
    wanted = [("linformer", {"k": 8}), ("nystrom", {"num_landmarks": 4}), ("softmax", {}), ("softmax", {})]
    for block, (kind, options) in zip(net.encoder.blocks, wanted, strict=True):
        mechanism = block.attention.mechanism
        assert type(mechanism) is REGISTRY[kind]
        for key, value in options.items():  # each layer got its own entry's options
            assert getattr(mechanism, key) == value
    assert [a.type for a in cfg.layer_attentions()] == [kind for kind, _ in wanted]
    assert cfg.attention_name == "linformer[0]+nystrom[1]+softmax[2-3]"


@pytest.mark.parametrize("attention", [
    {"type": "performer", "num_features": 8},  # random features drawn at construction: the same draws in order
    {"type": "linformer", "k": 8, "share": "layers"},  # one projection tied across every layer
])
def test_a_schedule_naming_one_mechanism_everywhere_is_the_plain_model(attention):
    _, plain = _model(attention=attention)
    _, scheduled = _model(attention={"type": "softmax"}, layer_attention=[
        {"layers": [0, 1], "attention": attention}, {"layers": [2, 3], "attention": attention}])
    expected, got = plain.state_dict(), scheduled.state_dict()
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    ids, mask = _batch()
    with torch.no_grad():
        torch.manual_seed(2)
        want = plain.encoder(ids, mask)
        torch.manual_seed(2)
        torch.testing.assert_close(scheduled.encoder(ids, mask), want, rtol=0, atol=0)
    if attention.get("share") == "layers":
        tied = {b.attention.mechanism.proj_k.data_ptr() for b in scheduled.encoder.blocks}
        assert len(tied) == 1


def test_shared_parameters_are_shared_only_by_layers_of_the_same_attention():
    # the base ties one (k=8) projection; the schedule's layers 2-3 tie another of their own (k=4) shape
    _, net = _model(attention={"type": "linformer", "k": 8, "share": "layers"}, layer_attention=[
        {"layers": [2, 3], "attention": {"type": "linformer", "k": 4, "share": "layers"}}])
    projections = [b.attention.mechanism.proj_k for b in net.encoder.blocks]
    assert projections[0] is projections[1] and projections[2] is projections[3]
    assert projections[1] is not projections[2]
    assert [tuple(p.shape) for p in projections] == [(8, 16), (8, 16), (4, 16), (4, 16)]


@pytest.mark.parametrize(("schedule", "message"), [
    ([{"layers": [3, 4], "attention": {"type": "softmax"}}], r"layer_attention\[0\]\.layers: \[3, 4\] goes past "
                                                             r"the last layer 3"),
    ([{"layers": [0, 2], "attention": {"type": "softmax"}}, {"layers": [2, 3], "attention": {"type": "linear"}}],
     r"layer_attention\[1\]\.layers: \[2, 3\] overlaps layer_attention\[0\]"),
    ([{"layers": [2, 1], "attention": {"type": "softmax"}}], r"model\.layer_attention\.0: layers must be \[from, to\]"),
    ([{"layers": [1], "attention": {"type": "softmax"}}], r"model\.layer_attention\.0\.layers: List should have at "
                                                          r"least 2 items"),
    ([{"layers": [1, 1], "attention": {"type": "nystrom", "landmarks": 4}}],
     r"model\.layer_attention\.0\.attention\.landmarks: unknown key"),
    ([{"layers": [1, 1], "attention": {"type": "nystrum"}}],
     r"model\.layer_attention\.0\.attention: unknown attention type 'nystrum'"),
    ([{"layers": [1, 1]}], r"model\.layer_attention\.0\.attention: Field required"),
])
def test_a_bad_schedule_is_an_error_naming_the_key(schedule, message):
    with pytest.raises(InputError, match=message):
        parse_config({"model": TINY | {"layer_attention": schedule}}, "config.json")


def test_the_key_leaves_existing_identities_alone_and_a_schedule_changes_them():
    base = parse_config({"model": TINY | {"attention": NYSTROM}}, "base")
    settings = pretraining_settings(base)["model"]
    assert not {"layer_attention", "batchnorm_warmup", "batchnorm_decay_steps"} & set(settings)
    hybrid = parse_config({"model": TINY | {"attention": NYSTROM, "layer_attention": [
        {"layers": [3, 3], "attention": {"type": "softmax"}}]}, "lra": {"listops": {"num_layers": 4}}}, "hybrid")
    assert digest(pretraining_settings(hybrid)) != digest(pretraining_settings(base))
    assert "layer_attention" not in lra_run_settings(base, "listops", 0)  # recorded LRA runs keep their identity
    assert lra_run_settings(hybrid, "listops", 0)["layer_attention"][0]["layers"] == [3, 3]


def test_lra_takes_the_schedule_where_its_layers_fit_and_says_so_where_not():
    cfg = parse_config({"model": TINY | {"attention": NYSTROM, "layer_attention": [
        {"layers": [3, 3], "attention": {"type": "softmax"}}]}}, "config.json")
    protocol = task_protocol(cfg.lra, "listops")  # the published 2-layer model
    with pytest.raises(InputError, match=r"config.json: lra.listops: layer_attention\[0\].layers: \[3, 3\] goes past"):
        lra_model_config(cfg.model, protocol, VOCAB, "config.json")
    cfg = parse_config({"model": TINY | {"attention": NYSTROM, "layer_attention": [
        {"layers": [1, 1], "attention": {"type": "softmax"}}]}}, "config.json")
    lra = lra_model_config(cfg.model, protocol, VOCAB, "config.json")
    assert [a.type for a in lra.layer_attentions()] == ["nystrom"] * (protocol.num_layers - 1) + ["softmax"]


def test_a_softmax_checkpoint_starts_a_nystrom_softmax_schedule(tmp_path, shards):
    """from_cp across schedules: neither mechanism has parameters, so every tensor loads and outputs differ only
    where the mechanism does."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = model_folder(tmp_path / "a", steps=4, checkpoint_every=4, eval_every=4, warmup_steps=1)
    pretrain(source, shards, device="cpu", threads=1)
    target = model_folder(tmp_path / "b", steps=2, checkpoint_every=2, eval_every=2, warmup_steps=1)
    config = json.loads((target / "config.json").read_text())
    config["model"] |= {"attention": {"type": "nystrom", "num_landmarks": 4},
                        "layer_attention": [{"layers": [1, 1], "attention": {"type": "softmax"}}]}
    config["from_cp"] = str(source / "checkpoints" / "cp-0004.pt")
    (target / "config.json").write_text(json.dumps(config))
    state = read_checkpoint(source / "checkpoints" / "cp-0004.pt")["model"]
    cfg = parse_config(config, "b").model
    report = initialise_from(PretrainingModel(cfg, state["encoder.embeddings.word.weight"].shape[0]), state,
                             log=lambda _: None)
    assert report["fresh"] == [] and report["unused"] == []
    pretrain(target, shards, device="cpu", threads=1)  # the pipeline's path: from_cp, then training
    trained = read_checkpoint(target / "checkpoints" / "cp-0002.pt")
    assert parse_config(trained["config"], "b").model.attention_name == "nystrom[0]+softmax[1]"


def test_report_and_conversion_read_the_schedule():
    cfg = parse_config({"model": TINY | {"attention": NYSTROM, "layer_attention": [
        {"layers": [3, 3], "attention": {"type": "softmax"}}]}}, "c")
    setup = glue_setup(cfg)
    assert setup["attention.type"] == "nystrom[0-2]+softmax[3]"
    assert "no published" in compare("glue", "sst2", setup).reason  # no paper row is this hybrid
    shape = {"max_len": 64, "hidden_size": 24, "num_heads": 4}
    nystrom = attention_flops(shape | {"num_layers": 4} | {f"attention.{k}": v for k, v in
                                                          cfg.model.attention.model_dump().items()})
    softmax = attention_flops(shape | {"num_layers": 4, "attention.type": "softmax"})
    hybrid = attention_flops(shape | {"num_layers": 4, "layer_attention": [a.model_dump() for a in
                                                                           cfg.model.layer_attentions()]})
    assert hybrid == pytest.approx(nystrom * 3 / 4 + softmax / 4)
    pre = parse_config({"model": TINY | {"norm": "pre", "layer_attention": [
        {"layers": [2, 2], "attention": {"type": "fnet"}}]}}, "c").model
    with pytest.raises(InputError, match=r"attention 'fnet' \(layer 2\) writes the residual stream without"):
        convert_state(PretrainingModel(pre, VOCAB).state_dict(), pre, "pre_rmsnorm")


def test_an_import_refuses_a_schedule(tmp_path):
    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {"layer_attention": [
        {"layers": [0, 0], "attention": {"type": "softmax"}}]}, "stages": ["glue"], "import_hf": "bert"}))
    with pytest.raises(InputError, match="model.layer_attention: an import puts one attention"):
        import_hf_bert(tmp_path / "bert", folder, log=lambda _: None)
