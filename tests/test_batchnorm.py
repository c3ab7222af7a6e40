"""model.norm "pre_batchnorm": SLAB's progressive re-parameterised BatchNorm (effbert.model.norms.PRepBN).

Truths: torch's nn.BatchNorm1d run on the real tokens alone (the masked statistics), the schedule's formula
at hand-picked steps, the Pre-LN model (gamma = 1 is LayerNorm), the same batch padded to another length
(padding changes nothing), and a falling loss on the patterned corpus."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig, parse_config
from effbert.errors import InputError
from effbert.model.norms import BATCHNORM_EPS, PRepBN, advance_norm_schedule
from effbert.model.pretraining import PretrainingModel
from effbert.train.checkpoints import read_checkpoint
from effbert.train.initialise import initialise_from
from effbert.train.pretrain import pretrain
from helpers import model_folder, pretrain_records

VOCAB = 40
TINY = {"hidden_size": 24, "num_layers": 3, "num_heads": 4, "ffn_size": 40, "max_seq_len": 24,
        "dropout": 0.0, "attention_dropout": 0.0}


def _norm(steps: int, warmup: int = 0, decay: int = 4, seed: int = 0) -> PRepBN:
    """A float64 PRepBN at `steps` with random affine parameters (eta too)."""
    norm = PRepBN(8, 1e-12, warmup, decay).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        norm.steps.fill_(steps)
    return norm


def _padded(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, 8, generator=g, dtype=torch.float64) * 2 + 1
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    x[~mask] = 1e3  # padding holds anything; it must not reach the statistics
    return x, mask


def test_batch_statistics_are_batchnorm_over_the_real_tokens_only():
    x, mask = _padded()
    norm = _norm(steps=4).train()  # gamma = 0: RepBN alone
    reference = nn.BatchNorm1d(8, eps=BATCHNORM_EPS).double().train()
    with torch.no_grad():
        reference.weight.copy_(norm.bn_weight)
        reference.bias.copy_(norm.bn_bias)
    real = x[mask]  # (real tokens, channels): what BatchNorm1d sees
    expected = reference(real) + norm.eta * real
    got = norm(x, mask)
    torch.testing.assert_close(got[mask], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(norm.running_mean, reference.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.running_var, reference.running_var, rtol=0, atol=1e-12)  # unbiased, as torch
    norm.eval(), reference.eval()  # evaluation: the running statistics, folded into one affine map
    torch.testing.assert_close(norm(x, mask)[mask], reference(real) + norm.eta * real, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("warmup", "decay", "expected"), [
    (0, 4, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]),
    (2, 4, [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]),
    (0, 1, [1.0, 0.0, 0.0]),
])
def test_gamma_follows_the_linear_schedule(warmup, decay, expected):
    # gamma(t) = 1 for t <= warmup, then 1 - (t - warmup) / decay down to 0 (t: optimizer steps taken)
    net = PretrainingModel(ModelConfig(**TINY, norm="pre_batchnorm", batchnorm_warmup=warmup,
                                       batchnorm_decay_steps=decay), VOCAB)
    norms = [m for m in net.modules() if isinstance(m, PRepBN)]
    assert len(norms) == 2 * TINY["num_layers"] + 1  # two per block and the final one; the embeddings keep LN
    seen = []
    for _ in expected:
        seen.append({float(m.gamma()) for m in norms})
        advance_norm_schedule(net)
    assert seen == [{g} for g in expected]


def test_the_mix_at_gamma_is_gamma_layernorm_plus_the_rest_repbn():
    x, mask = _padded(seed=1)
    norm = _norm(steps=1).train()  # gamma = 0.75
    repbn = _norm(steps=4).train()  # the same parameters at gamma = 0
    ln = F.layer_norm(x, (8,), norm.weight, norm.bias, eps=1e-12)
    torch.testing.assert_close(norm(x, mask), 0.75 * ln + 0.25 * repbn(x, mask), rtol=0, atol=1e-10)


def _batch(n: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (3, n), generator=g)
    mask = torch.ones(3, n, dtype=torch.long)
    mask[1, n - 5:] = 0
    mask[2, 3:] = 0
    if pad_to:
        ids = torch.cat([ids, torch.randint(0, VOCAB, (3, pad_to - n), generator=g)], 1)
        mask = torch.cat([mask, torch.zeros(3, pad_to - n, dtype=torch.long)], 1)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _random_pre_ln(norm: str) -> PretrainingModel:
    torch.manual_seed(0)
    net = PretrainingModel(ModelConfig(**TINY, norm=norm, batchnorm_decay_steps=4), VOCAB).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padding_changes_no_output_and_no_running_statistic(mode):
    outputs, stats = [], []
    for pad_to in (None, 20):
        net = _random_pre_ln("pre_batchnorm")
        advance_norm_schedule(net)
        advance_norm_schedule(net)  # gamma = 0.5: both branches at work
        net.train(mode == "train")
        batch = _batch(12, pad_to)
        with torch.no_grad():
            hidden = net.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        outputs.append(hidden[:, :12][batch["attention_mask"][:, :12].bool()])
        stats.append(torch.cat([m.running_var for m in net.modules() if isinstance(m, PRepBN)]))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(stats[1], stats[0], rtol=1e-12, atol=1e-12)


def test_at_gamma_one_the_model_is_the_pre_ln_model_whose_checkpoint_it_loads():
    pre = _random_pre_ln("pre")
    prepbn = PretrainingModel(ModelConfig(**TINY, norm="pre_batchnorm"), VOCAB).double()
    report = initialise_from(prepbn, pre.state_dict(), log=lambda _: None)  # from_cp: LayerNorm's names
    assert report["unused"] == [] and all(k.rsplit(".", 1)[-1] in {"bn_weight", "bn_bias", "eta", "running_mean",
                                                                      "running_var", "steps"} for k in report["fresh"])
    batch = _batch(12)
    for mode in (True, False):
        pre.train(mode), prepbn.train(mode)
        with torch.no_grad():
            want = pre.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            got = prepbn.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_the_schedule_keys_are_checked():
    with pytest.raises(InputError, match=r"model.batchnorm_decay_steps: Input should be greater than or equal to 1"):
        parse_config({"model": {"norm": "pre_batchnorm", "batchnorm_decay_steps": 0}}, "config.json")


def test_batchnorm_trains_on_the_patterned_corpus_and_its_norms_count_the_steps(tmp_path, shards):
    batchnorm = {"norm": "pre_batchnorm", "batchnorm_warmup": 5, "batchnorm_decay_steps": 30}
    folder = model_folder(tmp_path, batchnorm, steps=60, eval_every=60, checkpoint_every=60, warmup_steps=5)
    pretrain(folder, shards, device="cpu", threads=1)
    train, dev = pretrain_records(folder)
    assert train[0]["mlm_loss"] > 3.5  # ~ln(120) at the start
    assert dev[-1]["mlm_loss"] < train[0]["mlm_loss"] - 1.0  # evaluated at gamma = 0: RepBN alone
    state = read_checkpoint(folder / "checkpoints" / "cp-0060.pt")["model"]
    assert {int(v) for k, v in state.items() if k.endswith(".steps")} == {60}  # one count per optimizer step
