"""Linformer against its formula written plainly, its exact limit (k = n, E = F = I), sharing and padding."""

import math

import pytest
import torch
from torch import nn

from effbert.attention.linformer import SHARED_KEY, LinformerAttention
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask, naive_softmax

SHARES = ["none", "heads", "kv", "layers"]


def linformer(k=8, share="heads", max_seq_len=32, shared=None, dropout=0.0):
    cfg = parse_config({"model": {"hidden_size": 32, "num_heads": 2, "max_seq_len": max_seq_len,
                                  "attention_dropout": dropout,
                                  "attention": {"type": "linformer", "k": k, "share": share}}}, "test").model
    return LinformerAttention(cfg, shared)






def plain_linformer(q, k, v, mask, e, f):
    """eq. (7) one batch row and head at a time: softmax(Q (E K)^T / sqrt(d)) (F V), padded rows of K, V zeroed."""
    b, h, n, d = q.shape
    out = torch.zeros_like(q)
    for i in range(b):
        for j in range(h):
            ej = (e[j] if e.dim() == 3 else e)[:, :n]
            fj = (f[j] if f.dim() == 3 else f)[:, :n]
            real = mask[i].double()[:, None]
            out[i, j] = naive_softmax(q[i, j], ej @ (k[i, j] * real), fj @ (v[i, j] * real))
    return out


@pytest.mark.parametrize("share", SHARES)
def test_identity_projections_give_softmax(share):
    # k = n and E = F = I (the first n of the max_seq_len columns): Linformer is exact softmax attention
    attn = linformer(k=12, share=share).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.eye(12, 32, dtype=torch.float64).expand_as(p))
    q, k, v = qkv(n=12)
    out = attn(q, k, v, torch.ones(2, 12, dtype=torch.bool))
    torch.testing.assert_close(out, naive_softmax(q, k, v), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("share", SHARES)
@pytest.mark.parametrize("k", [5, 20])  # k < n and k > n (projected to k rows anyway)
def test_matches_the_formula_with_padding(share, k):
    attn = linformer(k=k, share=share).double()
    q, k_, v = qkv(n=13)
    mask = lengths_mask([13, 6], 13)
    e = attn.proj_k.detach()
    f = e if attn.proj_v is None else attn.proj_v.detach()
    torch.testing.assert_close(attn(q, k_, v, mask), plain_linformer(q, k_, v, mask, e, f), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("share", SHARES)
def test_padding_never_changes_real_outputs(share):
    attn = linformer(share=share).double()
    q, k, v = qkv(b=1, n=17)
    alone = attn(q, k, v, torch.ones(1, 17, dtype=torch.bool))
    junk = qkv(b=1, n=9, seed=5)
    padded = [torch.cat([t, 100 * j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = attn(*padded, lengths_mask([17], 26))
    torch.testing.assert_close(out[:, :, :17], alone, atol=1e-10, rtol=1e-10)


def test_sharing_shapes_and_init():
    shapes = {share: [tuple(p.shape) for p in linformer(k=64, share=share, max_seq_len=512).parameters()]
              for share in SHARES}
    assert shapes == {"none": [(2, 64, 512)] * 2, "heads": [(64, 512)] * 2, "kv": [(64, 512)], "layers": [(64, 512)]}
    torch.manual_seed(0)
    e = linformer(k=64, share="kv", max_seq_len=512).proj_k
    assert abs(e.std().item() - 1 / math.sqrt(64)) < 0.005 and abs(e.mean().item()) < 0.005  # N(0, 1/k)


def test_layers_share_one_parameter_through_the_shared_dict():
    shared = {}
    layers = nn.ModuleList(linformer(share="layers", shared=shared) for _ in range(3))
    assert all(layer.proj_k is shared[SHARED_KEY] for layer in layers)
    assert len(list(layers.parameters())) == 1  # the optimizer sees it once
    assert len(layers.state_dict()) == 3  # every layer's module lists it under its own name
    # the tie survives a dtype change and a state-dict round trip
    layers.double()
    assert layers[0].proj_k is layers[2].proj_k and layers[1].proj_k.dtype == torch.float64
    fresh_shared = {}
    fresh = nn.ModuleList(linformer(share="layers", shared=fresh_shared) for _ in range(3)).double()
    fresh.load_state_dict(layers.state_dict())
    assert fresh[0].proj_k is fresh[2].proj_k and torch.equal(fresh[1].proj_k, layers[0].proj_k)
    # separate models (separate dicts) do not share
    assert linformer(share="layers").proj_k is not linformer(share="layers").proj_k


def test_longer_than_max_seq_len_is_an_error():
    q, k, v = qkv(b=1, n=40)
    with pytest.raises(ValueError, match="max_seq_len"):
        linformer().double()(q, k, v, torch.ones(1, 40, dtype=torch.bool))


def test_dropout_only_in_training():
    attn = linformer(dropout=0.5).double()
    q, k, v = qkv()
    mask = torch.ones(2, 13, dtype=torch.bool)
    attn.eval()
    torch.testing.assert_close(attn(q, k, v, mask), attn(q, k, v, mask))
    attn.train()
    assert not torch.allclose(attn(q, k, v, mask), attn.eval()(q, k, v, mask))


def test_bfloat16_in_bfloat16_out_close_to_float64():
    """The policy: bf16 end to end (projections and SDPA), within bf16's rounding of the float64 result."""
    attn = linformer().double()
    q, k, v = qkv()
    mask = lengths_mask([13, 4], 13)
    exact = attn(q, k, v, mask)
    out = attn.to(torch.bfloat16)(*(t.to(torch.bfloat16) for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), exact, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("share", ["none", "layers"])
def test_gradcheck_float64(share):
    attn = linformer(k=4, share=share).double()
    q, k, v = (t.requires_grad_() for t in qkv(b=1, n=7, d=4))
    mask = lengths_mask([5], 7)
    assert torch.autograd.gradcheck(lambda a, b, c, e: attn(a, b, c, mask), (q, k, v, attn.proj_k))
