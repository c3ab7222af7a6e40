"""Every attention type a config.json may name through the same checks: float32 and bfloat16 forward and
backward at awkward lengths with padding, padding invariance where the mechanism defines it, and a whole
encoder built on it. A type the config accepts but nothing builds fails here; so does one the README's
table of mechanisms leaves out."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import ROOT
from effbert.attention import REGISTRY, build_attention
from effbert.config import ATTENTION_TYPES, parse_config
from effbert.model.pretraining import PretrainingModel

MECHANISMS = sorted(ATTENTION_TYPES)  # what a user can configure, each of which must build and run


def model_cfg(name: str, **model):
    # small settings so that every approximation is exercised (landmarks, features, buckets < n)
    small = {"nystrom": {"num_landmarks": 8}, "yoso": {"hash_bits": 4, "num_hashes": 4},
             "linformer": {"k": 8}, "performer": {"num_features": 16}, "reformer": {"bucket_size": 8},
             "local": {"window": 5}, "block_softmax": {"block_size": 5}}
    attention = {"type": name, **small.get(name, {})}
    return parse_config({"model": {"hidden_size": 32, "num_heads": 2, "max_seq_len": 64, "attention": attention,
                                   **model}}, "test").model


def call(attn, inputs, mask):
    if getattr(attn, "mixes_hidden_states", False):
        b, h, n, d = inputs[0].shape
        return attn(inputs[0].transpose(1, 2).reshape(b, n, h * d), mask)
    return attn(*inputs, mask)


def test_the_readme_documents_every_attention_type():
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert set(MECHANISMS) <= documented, f"README.md's mechanism table lacks {set(MECHANISMS) - documented}"


@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_backward_any_length_with_padding(name, dtype):
    torch.manual_seed(0)
    attn = build_attention(model_cfg(name)).to(dtype)
    for n in (1, 7, 37):
        inputs = [torch.randn(2, 2, n, 16, dtype=dtype, requires_grad=True) for _ in range(3)]
        mask = torch.arange(n)[None, :] < torch.tensor([n, max(1, n // 2)])[:, None]
        out = call(attn, inputs, mask)
        assert out.dtype == dtype and torch.isfinite(out.float()).all()
        out.float().sum().backward()
        for t in inputs:
            assert t.grad is None or torch.isfinite(t.grad.float()).all()


@pytest.mark.parametrize("name", [m for m in MECHANISMS if getattr(REGISTRY[m], "padding_invariant", True)])
def test_padding_never_changes_real_outputs(name):
    attn = build_attention(model_cfg(name)).double().eval()
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 2, 29, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    torch.manual_seed(0)
    alone = call(attn, inputs, torch.ones(1, 29, dtype=torch.bool))
    padded = [torch.cat([t, 7 * torch.randn(1, 2, 10, 16, generator=g, dtype=torch.float64)], 2) for t in inputs]
    torch.manual_seed(0)
    out = call(attn, padded, torch.arange(39)[None, :] < 29)
    torch.testing.assert_close(out[..., :29, :] if out.dim() == 4 else out[:, :29], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", MECHANISMS)
def test_no_mask_is_the_all_real_mask(name):
    """The encoder passes None for a batch without padding; every mechanism must read it as all real."""
    attn = build_attention(model_cfg(name)).double().train()  # training mode: the sampling paths
    g = torch.Generator().manual_seed(2)
    for n in (7, 40):  # shorter and longer than the small settings' landmarks, buckets and windows
        inputs = [torch.randn(2, 2, n, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        results = []
        for mask in (None, torch.ones(2, n, dtype=torch.bool)):
            torch.manual_seed(0)  # the same random draws (hashes, features) for both
            if hasattr(attn, "calls"):
                attn.calls = 0
            out = call(attn, inputs, mask)
            results.append((out, *torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)))
        for a, b in zip(*results, strict=True):
            if a is not None or b is not None:
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # Nystrom: other rounding, same math


@pytest.mark.parametrize("name", MECHANISMS)
def test_encoder_trains_on_every_mechanism(name):
    torch.manual_seed(0)
    model = PretrainingModel(model_cfg(name, num_layers=2), vocab_size=50)
    batch = {"input_ids": torch.randint(5, 50, (3, 20)), "token_type_ids": torch.zeros(3, 20, dtype=torch.long),
             "attention_mask": torch.arange(20)[None, :] < torch.tensor([[20], [13], [4]]).squeeze(1)[:, None],
             "sop_labels": torch.tensor([0, 1, 0])}
    batch["mlm_labels"] = torch.where(torch.rand(3, 20) < 0.3, batch["input_ids"], -100)
    batch["mlm_labels"][:, 1] = batch["input_ids"][:, 1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
