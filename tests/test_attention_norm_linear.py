"""TransNormer's NormAttention against its formula with the n x n matrix written out and the norms computed
by hand, padding, precision, gradients and memory."""

import pytest
import torch

from effbert.attention.norm_linear import NormLinearAttention
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask, saved_bytes


def norm_linear(kernel="1+elu", norm="srmsnorm", head_dim=16):
    cfg = parse_config({"model": {"hidden_size": 2 * head_dim, "num_heads": 2,
                                  "attention": {"type": "norm_linear", "kernel": kernel, "norm": norm}}},
                       "test").model
    return NormLinearAttention(cfg).double()


def naive_norm_linear(q, k, v, mask, kernel, norm, weight=None, bias=None):
    """(phi(q_i).phi(k_j)) over real keys, an n x n matrix, times V, unscaled; then per token, over its heads
    side by side: x / (sqrt(mean x^2) + 1e-8), or (x - mean) / sqrt(var + 1e-5) * weight + bias."""
    def phi(x):
        elu = torch.where(x > 0, x, torch.exp(x) - 1)
        return elu + 1 if kernel == "1+elu" else elu

    scores = phi(q) @ phi(k).transpose(-1, -2) * mask[:, None, None, :]
    out = scores @ v  # (B, H, N, D)
    b, h, n, d = out.shape
    x = out.permute(0, 2, 1, 3).reshape(b, n, h * d)
    if norm == "srmsnorm":
        x = x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8)
    else:
        centred = x - x.mean(-1, keepdim=True)
        x = centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * weight + bias
    return x.reshape(b, n, h, d).permute(0, 2, 1, 3)


@pytest.mark.parametrize("kernel", ["1+elu", "elu"])
@pytest.mark.parametrize("norm", ["srmsnorm", "layernorm"])
def test_equals_the_explicit_formula_with_padding(kernel, norm):
    q, k, v = qkv(n=13)
    mask = lengths_mask([13, 6], 13)
    attn = norm_linear(kernel, norm)
    weight = bias = None
    if norm == "layernorm":
        torch.manual_seed(0)
        torch.nn.init.normal_(attn.norm.layer_norm.weight)
        torch.nn.init.normal_(attn.norm.layer_norm.bias)
        weight, bias = attn.norm.layer_norm.weight.detach(), attn.norm.layer_norm.bias.detach()
    expected = naive_norm_linear(q, k, v, mask, kernel, norm, weight, bias)
    real = mask[:, None, :, None]
    torch.testing.assert_close(attn(q, k, v, mask) * real, expected * real, atol=1e-12, rtol=1e-12)


def test_the_norm_sets_the_scale_per_token():
    # no row sums: the norm alone fixes each token's scale (rms 1 over its heads), so scaling V changes nothing
    q, k, v = qkv(n=9)
    attn = norm_linear()
    out = attn(q, k, v, None)
    torch.testing.assert_close(attn(q, k, 3 * v, None), out, atol=1e-8, rtol=0)  # the 1e-8 aside
    rms = out.permute(0, 2, 1, 3).flatten(2).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-6, rtol=0)


def test_no_mask_equals_an_all_real_mask():
    q, k, v = qkv()
    attn = norm_linear()
    torch.testing.assert_close(attn(q, k, v, None), attn(q, k, v, torch.ones(2, 13, dtype=torch.bool)),
                               atol=0, rtol=0)


@pytest.mark.parametrize("norm", ["srmsnorm", "layernorm"])
def test_padding_never_changes_real_outputs(norm):
    q, k, v = qkv(b=1, n=17)
    attn = norm_linear(norm=norm)
    alone = attn(q, k, v, None)
    junk = qkv(b=1, n=9, seed=5)
    padded = [torch.cat([t, 100 * j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    torch.testing.assert_close(attn(*padded, lengths_mask([17], 26))[:, :, :17], alone, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("norm", ["srmsnorm", "layernorm"])
@pytest.mark.parametrize("lengths", [None, [7, 4]], ids=["no-mask", "padding"])
def test_gradcheck_float64(norm, lengths):
    q, k, v = (t.requires_grad_() for t in qkv(b=2, n=7, d=4))
    mask = None if lengths is None else lengths_mask(lengths, 7)
    attn = norm_linear(norm=norm, head_dim=4)
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, mask), (q, k, v))


def test_a_sequence_of_padding_only_gives_zero_and_finite_gradients():
    q, k, v = (t.requires_grad_() for t in qkv(n=9))
    out = norm_linear()(q, k, v, lengths_mask([9, 0], 9))
    out.square().sum().backward()
    assert (out[1] == 0).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("n", [1, 7, 300])
def test_bfloat16_in_bfloat16_out_close_to_float64(n):
    q, k, v = qkv(n=n)
    mask = lengths_mask([n, max(1, n // 3)], n)
    attn = norm_linear(norm="layernorm")
    expected = attn(q, k, v, mask)
    out = attn.bfloat16()(*(t.bfloat16() for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    real = mask[:, None, :, None]
    torch.testing.assert_close(out.double() * real, expected * real, atol=0.05, rtol=0.05)


def test_backward_keeps_memory_linear_in_n():
    b, h, n, d = 1, 2, 512, 16
    q, k, v = (t.float().requires_grad_() for t in qkv(b=b, n=n, d=d))
    kept = saved_bytes(norm_linear(head_dim=d).float(), q, k, v, lengths_mask([200], n))
    assert 0 < kept <= 12 * b * h * n * d * 4 < b * h * n * n * 4  # n x d tensors only, no n x n
