"""Block-diagonal softmax (TransNormer's DiagAttention) against full softmax with a block-diagonal mask
built here, its exact limit (one block: softmax), padding, all-padding blocks, precision, memory."""

import math

import pytest
import torch

from effbert.attention.block_softmax import BlockSoftmaxAttention
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask, naive_softmax


def block_softmax(block_size, norm="none", head_dim=16):
    cfg = parse_config({"model": {"hidden_size": 2 * head_dim, "num_heads": 2, "attention": {
        "type": "block_softmax", "block_size": block_size, "norm": norm}}}, "test").model
    return BlockSoftmaxAttention(cfg).double().eval()


def naive_block_diagonal(q, k, v, mask, block_size):
    n = q.shape[-2]
    block = torch.arange(n) // block_size
    same = block[:, None] == block[None, :]  # (N, N): i and j in one block
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~(same & mask[:, None, None, :]), -math.inf)
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize("block_size", [1, 4, 5, 8])
def test_matches_softmax_with_a_block_diagonal_mask(block_size):
    q, k, v = qkv(n=23)  # 23 is a multiple of none of the blocks but 1
    mask = lengths_mask([23, 14], 23)
    out, ref = block_softmax(block_size)(q, k, v, mask), naive_block_diagonal(q, k, v, mask, block_size)
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[1, :, :14], ref[1, :, :14], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("block_size", [23, 24, 64])
def test_a_block_covering_the_sequence_is_softmax(block_size):
    q, k, v = qkv(n=23)
    mask = lengths_mask([23, 9], 23)
    out, ref = block_softmax(block_size)(q, k, v, mask), naive_softmax(q, k, v, mask)
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[1, :, :9], ref[1, :, :9], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(block_softmax(block_size)(q, k, v, None), naive_softmax(q, k, v), atol=1e-12,
                               rtol=1e-12)


def test_the_norm_is_over_each_tokens_heads():
    q, k, v = qkv(n=11)
    mask = lengths_mask([11, 6], 11)
    out = block_softmax(4, norm="srmsnorm")(q, k, v, mask)
    ref = naive_block_diagonal(q, k, v, mask, 4).permute(0, 2, 1, 3).flatten(2)  # (B, N, H D)
    ref = (ref / (ref.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8)).unflatten(2, (2, 16)).permute(0, 2, 1, 3)
    torch.testing.assert_close(out[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[1, :, :6], ref[1, :, :6], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("block_size", [3, 8, 30])
def test_padding_never_changes_real_outputs(block_size):
    q, k, v = qkv(b=1, n=20)
    attn = block_softmax(block_size)
    real = attn(q, k, v, None)
    junk = [torch.randn(1, 2, 13, 16, dtype=torch.float64) * 5 for _ in range(3)]
    padded = [torch.cat([t, j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    torch.testing.assert_close(attn(*padded, lengths_mask([20], 33))[:, :, :20], real, atol=1e-12, rtol=1e-12)


def test_blocks_of_padding_only_stay_finite():
    # 4 real tokens and blocks of 4: the second and third blocks hold no real key; the second row none at all
    q, k, v = (t.requires_grad_() for t in qkv(n=12))
    out = block_softmax(4)(q, k, v, lengths_mask([4, 0], 12))
    out.square().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(n=10, d=4, seed=1))
    mask = lengths_mask([10, 6], 10)
    attn = block_softmax(3, norm="layernorm", head_dim=4)
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_backward(dtype):
    q, k, v = (t.requires_grad_() for t in qkv(n=31, dtype=dtype))
    mask = lengths_mask([31, 12], 31)
    out = block_softmax(8).to(dtype)(q, k, v, mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in (q, k, v))
    ref = naive_block_diagonal(*(t.detach().double() for t in (q, k, v)), mask, 8)
    assert (out.double() - ref)[1, :, :12].abs().max() < (0.05 if dtype == torch.bfloat16 else 1e-5)


def test_memory_is_blocked():
    # n = 4096, blocks of 8: scores hold n * 8 entries per head, an n x n matrix 16M
    q, k, v = qkv(b=1, n=4096, d=8, dtype=torch.float32)
    seen = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.numel()) or t, lambda t: t):
        block_softmax(8).float()(*(t.requires_grad_() for t in (q, k, v)), lengths_mask([4000], 4096))
    assert seen and max(seen) <= 2 * 4096 * 8 * 2  # (B C, H, c, c) for H = 2 heads: no tensor near n^2
