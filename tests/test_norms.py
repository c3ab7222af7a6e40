"""The normalisation settings (effbert.model.norms) and the Pre-LN conversion (effbert.train.convert_norm).

Truths: torch's LayerNorm (the norms on zero-mean inputs), the Pre-LN model itself (its conversions must
compute the same function), LayerNorm's own statistics (Peri-LN's output norms), a reparametrisation
(LayerNorm Scaling), and a falling loss on the patterned corpus."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effbert.cli import main
from effbert.config import ModelConfig, parse_config
from effbert.errors import InputError
from effbert.model.encoder import Encoder
from effbert.model.norms import CRMSNorm, RMSNorm
from effbert.model.pretraining import PretrainingModel
from effbert.train.checkpoints import read_checkpoint, save_checkpoint
from effbert.train.convert_norm import convert_norm, convert_state
from effbert.train.identity import digest, lra_run_settings, pretraining_settings
from effbert.train.lra import model_config as lra_model_config
from effbert.train.lra_protocol import task_protocol
from effbert.train.pretrain import pretrain
from helpers import model_folder, pretrain_records

VOCAB = 40
TINY = {"hidden_size": 24, "num_layers": 3, "num_heads": 4, "ffn_size": 40, "max_seq_len": 16}


def _zero_mean(*shape: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 + 1
    return x - x.mean(-1, keepdim=True)


def _affine(width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(width, generator=g, dtype=torch.float64), torch.randn(width, generator=g, dtype=torch.float64)


def test_rmsnorm_equals_layernorm_on_zero_mean_inputs():
    x = _zero_mean(2, 5, 16)
    weight, bias = _affine(16, 1)
    norm = RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (16,), weight, bias, eps=1e-6), rtol=0, atol=1e-12)
    assert not torch.allclose(norm(x + 1), F.layer_norm(x + 1, (16,), weight, bias, eps=1e-6))  # only there


def test_crmsnorm_of_the_first_d_minus_1_entries_equals_layernorm_of_the_whole_vector():
    x = _zero_mean(2, 5, 16)
    weight, bias = _affine(16, 2)
    reference = F.layer_norm(x, (16,), weight, bias, eps=1e-6)
    compressed, whole = CRMSNorm(15, eps=1e-6).double(), CRMSNorm(15, eps=1e-6, decompress=True).double()
    with torch.no_grad():
        compressed.weight.copy_(weight[:-1])
        compressed.bias.copy_(bias[:-1])
        whole.weight.copy_(weight)
        whole.bias.copy_(bias)
    torch.testing.assert_close(compressed(x[..., :-1]), reference[..., :-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(whole(x[..., :-1]), reference, rtol=0, atol=1e-12)


def _random_pre_ln(**model) -> tuple[ModelConfig, PretrainingModel]:
    """A float64 Pre-LN model whose every weight is random (norms, biases and embeddings included)."""
    cfg = ModelConfig(**TINY, norm="pre", **model)
    torch.manual_seed(0)
    net = PretrainingModel(cfg, VOCAB).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return cfg, net


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (3, 13), generator=g)
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[1, 9:] = 0  # padding
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.randint(0, 2, (3, 13), generator=g)}


def _outputs(net: PretrainingModel, batch: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        hidden = net.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return {"hidden": hidden, "mlm": net.mlm(hidden), "sop": net.sop(hidden)}


@pytest.mark.parametrize("to", ["pre_rmsnorm", "pre_crmsnorm"])
@pytest.mark.parametrize("model", [{}, {"norm_scaling": True}, {"attention": {"type": "reformer", "bucket_size": 4}},
                                   {"attention": {"type": "nystrom", "num_landmarks": 4, "conv_kernel": 3}}])
def test_a_converted_pre_ln_model_computes_the_same_outputs(to, model):
    cfg, net = _random_pre_ln(**model)
    batch = _batch()
    if cfg.attention.type == "reformer":  # its hashing draws random rotations: the same for both models
        torch.manual_seed(5)
    expected = _outputs(net, batch)
    converted = PretrainingModel(cfg.model_copy(update={"norm": to}), VOCAB).double().eval()
    converted.load_state_dict(convert_state(net.state_dict(), cfg, to))
    if cfg.attention.type == "reformer":
        torch.manual_seed(5)
    got = _outputs(converted, batch)
    assert got["hidden"].shape == expected["hidden"].shape  # the heads read width d again
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)
    if to == "pre_crmsnorm":  # the residual stream is stored as d - 1 entries
        assert converted.encoder.blocks[0].ffn_out.out_features == cfg.hidden_size - 1


def test_convert_norm_writes_a_checkpoint_that_glue_style_loading_reads_back(tmp_path):
    cfg, net = _random_pre_ln(norm_scaling=True)
    config = parse_config({"model": cfg.model_dump(mode="json")}, "test")
    source = tmp_path / "cp-0007.pt"
    save_checkpoint(source, model=net.state_dict(), step=7, config=config.model_dump(mode="json"),
                    vocab_size=VOCAB, tokenizer="{}", identity={"pretend": 1})
    out = tmp_path / "crms.pt"
    assert main(["convert-norm", "--from", str(source), "--to", "pre_crmsnorm", "--out", str(out)]) == 0  # as the CLI
    state = read_checkpoint(tmp_path / "crms.pt")
    saved = parse_config(state["config"], "converted").model
    assert saved.norm == "pre_crmsnorm" and saved.norm_scaling and state["step"] == 7
    assert state["identity"] == {"converted": {"norm": "pre_crmsnorm", "source": digest({"pretend": 1})}}
    loaded = PretrainingModel(saved, state["vocab_size"]).double().eval()
    loaded.load_state_dict(state["model"])
    batch = _batch()
    torch.testing.assert_close(_outputs(loaded, batch)["mlm"], _outputs(net, batch)["mlm"], rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="would replace its source"):
        convert_norm(source, source, "pre_rmsnorm")


def test_what_cannot_be_converted_exactly_is_refused():
    cfg, net = _random_pre_ln(attention={"type": "fnet"})
    with pytest.raises(InputError, match="without an output projection"):
        convert_state(net.state_dict(), cfg, "pre_rmsnorm")
    post = ModelConfig(**TINY)
    with pytest.raises(InputError, match="converts a Pre-LN model"):
        convert_state(PretrainingModel(post, VOCAB).state_dict(), post, "pre_rmsnorm")


def test_peri_ln_normalises_each_sublayer_output_before_the_residual_sum():
    cfg = ModelConfig(**TINY, norm="peri", dropout=0.0, attention_dropout=0.0)
    block = Encoder(cfg, VOCAB).blocks[0].double().eval()
    with torch.no_grad():  # silence the FFN branch: what the block adds is the normalised attention output
        block.ffn_out_norm.weight.zero_()
    x = _zero_mean(2, 7, 24) + 5.0
    added = block(x, None) - x
    torch.testing.assert_close(added.mean(-1), torch.zeros(2, 7, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(added.var(-1, unbiased=False), torch.ones(2, 7, dtype=torch.float64),
                               rtol=0, atol=1e-6)


def test_layernorm_scaling_scales_layer_l_input_norms_by_one_over_sqrt_l():
    cfg, net = _random_pre_ln()
    scaled = PretrainingModel(cfg.model_copy(update={"norm_scaling": True}), VOCAB).double().eval()
    state = net.state_dict()
    scaled.load_state_dict(state)
    with torch.no_grad():  # the same function: the unscaled model with layer l's norm weights and biases / sqrt(l)
        for layer, block in enumerate(net.encoder.blocks, start=1):
            for norm in (block.attention_norm, block.ffn_norm):
                norm.weight.div_(layer ** 0.5)
                norm.bias.div_(layer ** 0.5)
    batch = _batch()
    torch.testing.assert_close(_outputs(scaled, batch)["hidden"], _outputs(net, batch)["hidden"], rtol=0,
                               atol=1e-10)


def test_norm_scaling_needs_a_pre_norm_and_leaves_existing_identities_alone():
    with pytest.raises(InputError, match="norm_scaling scales the norm on each sublayer's input"):
        parse_config({"model": {"norm_scaling": True}}, "config.json")
    base = parse_config({"model": {"norm": "pre"}}, "base")
    assert "norm_scaling" not in pretraining_settings(base)["model"]  # existing folders' digests unchanged
    scaled = parse_config({"model": {"norm": "pre", "norm_scaling": True}}, "scaled")
    assert digest(pretraining_settings(scaled)) != digest(pretraining_settings(base))
    for task in ("listops", "text"):  # LRA builds its own Pre-LN blocks from its protocol: no scaling there
        assert lra_run_settings(scaled, task, 0) == lra_run_settings(base, task, 0)
        assert not lra_model_config(scaled.model, task_protocol(scaled.lra, task), VOCAB, "test").norm_scaling


@pytest.mark.parametrize("model", [{"norm": "pre_rmsnorm"}, {"norm": "pre_crmsnorm"}, {"norm": "peri"},
                                   {"norm": "pre", "norm_scaling": True}])
def test_each_norm_setting_trains_on_the_patterned_corpus(tmp_path, shards, model):
    folder = model_folder(tmp_path, model, steps=60, eval_every=60, checkpoint_every=60, warmup_steps=5)
    pretrain(folder, shards, device="cpu", threads=1)
    train, dev = pretrain_records(folder)
    assert train[0]["mlm_loss"] > 3.5  # ~ln(120) at the start
    assert dev[-1]["mlm_loss"] < train[0]["mlm_loss"] - 1.0


def test_the_norm_benchmark_times_every_setting_against_pre_ln():
    from effbert.bench.norms import SETTINGS, bench_norm_layers, table

    times = bench_norm_layers(seq=4, repeats=2, calls=1)
    assert set(times) == set(SETTINGS) and all(len(t["train"]) == len(t["infer"]) == 2 for t in times.values())
    rows = table(times, unit="us").splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {norm}" for norm in SETTINGS]
    assert rows[0].split(" | ")[2] == "1.000, 1.000"  # Pre-LN against itself
