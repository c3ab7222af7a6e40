"""SLAB's simplified linear attention against its O(n^2) formula written out, the depthwise convolution
against an explicit sum, padding, precision, gradients and memory."""

import pytest
import torch

from effbert.attention.slab_linear import SlabLinearAttention
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask, saved_bytes


def slab(conv_kernel=5, head_dim=16):
    cfg = parse_config({"model": {"hidden_size": 2 * head_dim, "num_heads": 2,
                                  "attention": {"type": "slab_linear", "conv_kernel": conv_kernel}}}, "test").model
    torch.manual_seed(0)
    return SlabLinearAttention(cfg).double()


def naive_slab(q, k, v, mask, weight=None, bias=None):
    """w_ij = relu(q_i).relu(k_j) over real keys (an n x n matrix), out_i = sum_j w_ij v_j / (sum_j w_ij + 1e-6),
    plus sum_t weight[c, t] v[i + t - r, c] + bias[c] over the real values, zero beyond the ends."""
    weights = torch.relu(q) @ torch.relu(k).transpose(-1, -2) * mask[:, None, None, :]  # (B, H, N, N)
    out = weights @ v / (weights.sum(-1, keepdim=True) + 1e-6)
    if weight is None:
        return out
    n, r = v.shape[2], weight.shape[1] // 2
    vm = v * mask[:, None, :, None]
    for i in range(n):
        for t in range(weight.shape[1]):
            j = i + t - r
            if 0 <= j < n:
                out[:, :, i] += weight[:, t] * vm[:, :, j]  # channel c of every head: weight[c, t]
        out[:, :, i] += bias
    return out


@pytest.mark.parametrize("conv_kernel", [None, 1, 5])
def test_equals_the_quadratic_formula_with_padding(conv_kernel):
    q, k, v = qkv(n=13)
    mask = lengths_mask([13, 6], 13)
    attn = slab(conv_kernel)
    if attn.conv is not None:
        torch.nn.init.normal_(attn.conv.weight)
        torch.nn.init.normal_(attn.conv.bias)
        expected = naive_slab(q, k, v, mask, attn.conv.weight.detach()[:, 0], attn.conv.bias.detach())
    else:
        expected = naive_slab(q, k, v, mask)
    real = mask[:, None, :, None]
    torch.testing.assert_close(attn(q, k, v, mask) * real, expected * real, atol=1e-12, rtol=1e-12)


def test_the_normaliser_epsilon_is_the_authors():
    # a query with no positive entry has zero features: 0 / (0 + 1e-6), the conv term alone remains
    q, k, v = qkv(n=5)
    q[0, 0, 2] = -1.0
    out = slab(conv_kernel=None)(q, k, v, None)
    assert (out[0, 0, 2] == 0).all()
    # a tiny normaliser meets the 1e-6: scaling q by 1e-9 is no longer divided out
    all_real = torch.ones(2, 5, dtype=torch.bool)
    small = slab(conv_kernel=None)(q * 1e-9, k, v, None)
    torch.testing.assert_close(small, naive_slab(q * 1e-9, k, v, all_real), atol=1e-12, rtol=1e-12)
    assert (small.abs() < 0.9 * out.abs()).any()


def test_no_mask_equals_an_all_real_mask():
    q, k, v = qkv()
    attn = slab()
    torch.testing.assert_close(attn(q, k, v, None), attn(q, k, v, torch.ones(2, 13, dtype=torch.bool)),
                               atol=0, rtol=0)


def test_padding_never_changes_real_outputs():
    q, k, v = qkv(b=1, n=17)
    attn = slab()
    alone = attn(q, k, v, None)
    junk = qkv(b=1, n=9, seed=5)
    padded = [torch.cat([t, 100 * j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    torch.testing.assert_close(attn(*padded, lengths_mask([17], 26))[:, :, :17], alone, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("lengths", [None, [7, 4], [3, 0]], ids=["no-mask", "padding", "all-padding-row"])
def test_gradcheck_float64(lengths):
    q, k, v = (t.requires_grad_() for t in qkv(b=2, n=7, d=4))
    mask = None if lengths is None else lengths_mask(lengths, 7)
    attn = slab(conv_kernel=3, head_dim=4)
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, mask), (q, k, v))


@pytest.mark.parametrize("n", [1, 7, 300])
def test_bfloat16_in_bfloat16_out_close_to_float64(n):
    q, k, v = qkv(n=n)
    mask = lengths_mask([n, max(1, n // 3)], n)
    attn = slab()
    expected = attn(q, k, v, mask)
    out = attn.bfloat16()(*(t.bfloat16() for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    real = mask[:, None, :, None]
    torch.testing.assert_close(out.double() * real, expected * real, atol=0.05, rtol=0.05)


def test_backward_keeps_memory_linear_in_n():
    # relu(Q), relu(K) and the rest are n x d each; an n x n matrix would be 512 x 512 per head
    b, h, n, d = 1, 2, 512, 16
    q, k, v = (t.float().requires_grad_() for t in qkv(b=b, n=n, d=d))
    attn = slab(head_dim=d).float()
    kept = saved_bytes(attn, q, k, v, lengths_mask([200], n))
    assert 0 < kept <= 12 * b * h * n * d * 4 < b * h * n * n * 4
