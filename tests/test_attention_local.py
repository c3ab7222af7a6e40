"""Sliding-window attention against naive softmax attention with a banded mask."""

import math
from functools import partial

import pytest
import torch

from effbert.attention.local import LocalAttention
from effbert.config import parse_config
from helpers import random_qkv
from reference import lengths_mask


def local(window):
    cfg = parse_config({"model": {"hidden_size": 64, "num_heads": 2,
                                  "attention": {"type": "local", "window": window}}}, "test").model
    return LocalAttention(cfg).eval()


qkv = partial(random_qkv, n=23)



def naive_banded(q, k, v, mask, window):
    n = q.shape[-2]
    pos = torch.arange(n)
    band = (pos[:, None] - pos[None, :]).abs() <= window  # (N, N)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~(band & mask[:, None, None, :]), float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize("window", [1, 3, 5, 8])
def test_matches_naive_banded_softmax(window):
    q, k, v = qkv(n=23)  # 23 is a multiple of none of the windows
    mask = lengths_mask([23, 14], 23)
    out, ref = local(window)(q, k, v, mask), naive_banded(q, k, v, mask, window)
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[1, :, :14], ref[1, :, :14], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("window", [22, 23, 64])
def test_window_covering_the_sequence_is_full_softmax(window):
    q, k, v = qkv(n=23)
    mask = lengths_mask([23, 9], 23)
    out = local(window)(q, k, v, mask)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(16)).masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = torch.softmax(scores, -1) @ v
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[1, :, :9], ref[1, :, :9], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("window", [2, 4, 30])
def test_padding_never_changes_real_outputs(window):
    q, k, v = qkv(b=1, n=20)
    attn = local(window)
    real = attn(q, k, v, torch.ones(1, 20, dtype=torch.bool))
    junk = [torch.randn(1, 2, 13, 16, dtype=torch.float64) * 5 for _ in range(3)]
    padded = [torch.cat([t, j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = attn(*padded, lengths_mask([20], 33))
    torch.testing.assert_close(out[:, :, :20], real, atol=1e-12, rtol=1e-12)


def test_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(n=10, d=4, seed=1))
    mask = lengths_mask([10, 6], 10)
    assert torch.autograd.gradcheck(lambda q, k, v: local(3)(q, k, v, mask), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_backward(dtype):
    q, k, v = (t.requires_grad_() for t in qkv(n=31, dtype=dtype))
    mask = lengths_mask([31, 12], 31)
    out = local(4)(q, k, v, mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in (q, k, v))
    ref = naive_banded(*(t.detach().double() for t in (q, k, v)), mask, 4)
    assert (out.double() - ref)[1, :, :12].abs().max() < (0.05 if dtype == torch.bfloat16 else 1e-5)


def test_memory_is_blocked():
    # n = 4096, window 8: the blocked scores hold n * 3 * window entries per head, an n x n mask 16M
    q, k, v = qkv(b=1, n=4096, d=8, dtype=torch.float32)
    seen = []
    handle = torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.numel()) or t, lambda t: t)
    with handle:
        local(8)(*(t.requires_grad_() for t in (q, k, v)), torch.ones(1, 4096, dtype=torch.bool))
    assert seen and max(seen) <= 2 * 4096 * 3 * 8 * 2  # (B, H, C, c, 3c) for H = 2 heads: no tensor near n^2
