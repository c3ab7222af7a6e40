"""Linear attention (elu + 1 features) against the O(n^2) computation it rewrites, padding and gradients."""

import pytest
import torch

from effbert.attention.linear import LinearAttention
from effbert.config import parse_config
from reference import lengths_mask


def linear():
    cfg = parse_config({"model": {"hidden_size": 32, "num_heads": 2, "attention": {"type": "linear"}}}, "test").model
    return LinearAttention(cfg)


def qkv(b=2, n=13, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 2, n, d, generator=g, dtype=dtype) for _ in range(3)]



def naive_linear(q, k, v, mask):
    """Weights w_ij = phi(q_i).phi(k_j) with phi(x) = elu(x) + 1, zero for padded keys, normalised per row."""
    phi_q = torch.where(q > 0, q + 1, torch.exp(q))
    phi_k = torch.where(k > 0, k + 1, torch.exp(k))
    weights = (phi_q @ phi_k.transpose(-1, -2)) * mask[:, None, None, :]  # (B, H, N, N)
    return weights / weights.sum(-1, keepdim=True) @ v


def test_equals_the_quadratic_computation_with_padding():
    q, k, v = qkv()
    mask = lengths_mask([13, 5], 13)
    torch.testing.assert_close(linear()(q, k, v, mask), naive_linear(q, k, v, mask), atol=1e-12, rtol=1e-12)


def test_padding_never_changes_real_outputs():
    q, k, v = qkv(b=1, n=17)
    alone = linear()(q, k, v, torch.ones(1, 17, dtype=torch.bool))
    junk = qkv(b=1, n=9, seed=5)
    padded = [torch.cat([t, 100 * j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = linear()(*padded, lengths_mask([17], 26))
    torch.testing.assert_close(out[:, :, :17], alone, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_bfloat16_in_bfloat16_out_close_to_float64(n):
    q, k, v = qkv(n=n)
    mask = lengths_mask([n, max(1, n // 3)], n)
    out = linear()(*(t.bfloat16() for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), naive_linear(q, k, v, mask), atol=0.05, rtol=0.05)


def test_gradcheck_float64():
    q, k, v = (t.requires_grad_() for t in qkv(b=1, n=7, d=4))
    mask = lengths_mask([5], 7)
    assert torch.autograd.gradcheck(lambda a, b, c: linear()(a, b, c, mask), (q, k, v))
