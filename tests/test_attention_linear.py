"""Linear attention (elu + 1 features) against the O(n^2) computation it rewrites, padding and gradients,
and the chunked form's recompute-in-backward (autograd keeps O(n d), never the features)."""

import pytest
import torch

from effbert.attention.linear import LinearAttention
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask, saved_bytes


def linear(chunk=None, head_dim=16):
    cfg = parse_config({"model": {"hidden_size": 2 * head_dim, "num_heads": 2, "attention": {"type": "linear"}}},
                       "test").model
    attn = LinearAttention(cfg)
    if chunk is not None:
        attn.chunk = chunk
    return attn




def naive_linear(q, k, v, mask):
    """Weights w_ij = phi(q_i).phi(k_j) with phi(x) = elu(x) + 1, zero for padded keys, normalised per row."""
    phi_q = torch.where(q > 0, q + 1, torch.exp(q))
    phi_k = torch.where(k > 0, k + 1, torch.exp(k))
    weights = (phi_q @ phi_k.transpose(-1, -2)) * mask[:, None, None, :]  # (B, H, N, N)
    return weights / weights.sum(-1, keepdim=True) @ v


@pytest.mark.parametrize("chunk", [1, 4, 13, 1024])
def test_equals_the_quadratic_computation_with_padding(chunk):
    q, k, v = qkv()
    mask = lengths_mask([13, 5], 13)
    out = linear(chunk)(q, k, v, mask)
    torch.testing.assert_close(out, naive_linear(q, k, v, mask), atol=1e-12, rtol=1e-12)


def test_no_mask_equals_an_all_real_mask():
    q, k, v = qkv()
    all_real = torch.ones(2, 13, dtype=torch.bool)
    attn = linear(chunk=4)
    torch.testing.assert_close(attn(q, k, v, None), attn(q, k, v, all_real), atol=0, rtol=0)
    torch.testing.assert_close(attn(q, k, v, None), naive_linear(q, k, v, all_real), atol=1e-12, rtol=1e-12)


def test_padding_never_changes_real_outputs():
    q, k, v = qkv(b=1, n=17)
    alone = linear(chunk=8)(q, k, v, None)
    junk = qkv(b=1, n=9, seed=5)
    padded = [torch.cat([t, 100 * j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = linear(chunk=8)(*padded, lengths_mask([17], 26))
    torch.testing.assert_close(out[:, :, :17], alone, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_bfloat16_in_bfloat16_out_close_to_float64(n):
    q, k, v = qkv(n=n)
    mask = lengths_mask([n, max(1, n // 3)], n)
    out = linear(chunk=64)(*(t.bfloat16() for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), naive_linear(q, k, v, mask), atol=0.05, rtol=0.05)


def test_bfloat16_gradients_close_to_float64():
    q, k, v = (t.requires_grad_() for t in qkv(n=200))
    mask = lengths_mask([200, 77], 200)
    naive_linear(q, k, v, mask).sin().sum().backward()
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    linear(chunk=64)(*low, mask).sin().sum().backward()
    for t, t_low in zip((q, k, v), low, strict=True):
        assert t_low.grad.dtype == torch.bfloat16
        torch.testing.assert_close(t_low.grad.double(), t.grad, atol=0.02, rtol=0.05)


@pytest.mark.parametrize("lengths", [None, [7, 5], [3, 0]], ids=["no-mask", "padding", "all-padding-row"])
def test_gradcheck_float64_over_several_chunks(lengths):
    q, k, v = (t.requires_grad_() for t in qkv(b=2, n=7, d=4))
    mask = None if lengths is None else lengths_mask(lengths, 7)
    assert torch.autograd.gradcheck(lambda a, b, c: linear(chunk=3)(a, b, c, mask), (q, k, v))


def test_a_sequence_of_padding_only_gives_zero_output_and_gradient():
    q, k, v = (t.requires_grad_() for t in qkv(n=9))
    out = linear(chunk=4)(q, k, v, lengths_mask([9, 0], 9))
    out.square().sum().backward()
    assert (out[1] == 0).all()
    assert all((t.grad[1] == 0).all() for t in (q, k, v))


def test_backward_keeps_inputs_and_output_not_features():
    # autograd would keep phi(Q), phi(K) and float32 copies; the chunked form recomputes the features, so it
    # keeps q, k, v, the output, one normaliser per query, the d x (d + 1) context and the mask: nothing else
    b, h, n, d = 2, 2, 256, 16
    q, k, v = (t.requires_grad_() for t in qkv(b=b, n=n, d=d))
    mask = lengths_mask([n, 100], n)
    kept = saved_bytes(linear(chunk=64, head_dim=d), q, k, v, mask)
    assert 0 < kept <= b * h * (4 * n * d + n + d * (d + 1)) * q.element_size() + mask.numel()


def test_autocast_does_not_lower_the_sums_below_float32():
    # bf16 inputs are upcast per chunk and autocast is off inside: the result is the one without autocast
    q, k, v = (t.bfloat16() for t in qkv(n=50))
    mask = lengths_mask([50, 20], 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = linear(chunk=16)(q, k, v, mask)
    torch.testing.assert_close(inside, linear(chunk=16)(q, k, v, mask), atol=0, rtol=0)
    torch.testing.assert_close(inside.double(), naive_linear(q.double(), k.double(), v.double(), mask),
                               atol=0.01, rtol=0.01)
