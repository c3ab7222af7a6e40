"""Reformer LSH attention against plainly written shared-QK attention, its exact limit and its properties."""

import math

import pytest
import torch

from effbert.attention.reformer import ReformerAttention
from effbert.config import parse_config
from reference import lengths_mask


def reformer(num_hashes=1, bucket_size=4, max_seq_len=64):
    cfg = parse_config({"model": {"hidden_size": 64, "num_heads": 2, "max_seq_len": max_seq_len,
                                  "attention": {"type": "reformer", "num_hashes": num_hashes,
                                                "bucket_size": bucket_size}}}, "test").model
    return ReformerAttention(cfg).eval()


def qv(b=2, n=13, d=32, scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 2, n, d, generator=g, dtype=dtype) * s for s in (scale, 1.0)]



def shared_qk_softmax(q, v, mask):
    """Full attention with keys = length-normalised queries, a token's own score -1e5, padded keys excluded."""
    k = q / q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    scores = scores.masked_fill(torch.eye(q.shape[-2], dtype=torch.bool), -1e5)
    return torch.softmax(scores, -1) @ v


def run(attn, q, v, mask, seed=0):
    k = torch.randn_like(q)  # ignored: shared-QK
    torch.manual_seed(seed)  # the same random rotations for every call that is compared
    return attn(q, k, v, mask)


def lsh_by_hand(attn, q, v, mask, seed=0):
    """Loop form of the paper's Sec. 2: hash, sort by (bucket, position), chunk, look one chunk back."""
    b, h, n, d = q.shape
    torch.manual_seed(seed)  # the module draws its rotations as randn(H, d, rounds, n_buckets / 2)
    rotations = torch.randn(h, d, attn.num_hashes, attn.num_buckets // 2).double()
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            x = q[bi, hi]
            keys = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            rounds, lses = [], []
            for r in range(attn.num_hashes):
                proj = x @ rotations[hi, :, r]
                bucket = torch.cat([proj, -proj], -1).argmax(-1).tolist()
                bucket = [bk if mask[bi, i] else attn.num_buckets for i, bk in enumerate(bucket)]
                ranked = sorted(range(n), key=lambda i, bucket=bucket: (bucket[i], i))
                chunk = {pos: rank // attn.bucket_size for rank, pos in enumerate(ranked)}
                o, lse = torch.zeros(n, d, dtype=q.dtype), torch.zeros(n, dtype=q.dtype)
                for i in range(n):
                    near = [j for j in range(n) if chunk[j] in (chunk[i], chunk[i] - 1)]
                    scores = torch.stack([x[i] @ keys[j] / math.sqrt(d) if mask[bi, j] else torch.tensor(-1e9).double()
                                          for j in near])
                    scores[near.index(i)] = -1e5
                    lse[i] = scores.logsumexp(0)
                    o[i] = torch.softmax(scores, 0) @ v[bi, hi, near]
                rounds.append(o)
                lses.append(lse)
            weights = torch.softmax(torch.stack(lses), 0)[..., None]
            out[bi, hi] = (torch.stack(rounds) * weights).sum(0)
    return out


@pytest.mark.parametrize("num_hashes", [1, 3])
def test_one_chunk_is_shared_qk_softmax_without_self(num_hashes):
    # bucket_size >= n: one chunk holds every token, so hashing cannot split anything
    q, v = qv(n=13)
    mask = lengths_mask([13, 7], 13)
    out = run(reformer(num_hashes, bucket_size=16), q, v, mask)
    ref = shared_qk_softmax(q, v, mask)
    torch.testing.assert_close(out[0], ref[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[1, :, :7], ref[1, :, :7], atol=1e-10, rtol=1e-10)


def test_lone_token_attends_to_itself():
    q, v = qv(b=1, n=5)
    out = run(reformer(bucket_size=8), q, v, lengths_mask([1], 5))
    torch.testing.assert_close(out[0, :, 0], v[0, :, 0])


@pytest.mark.parametrize("num_hashes", [1, 2])
def test_chunks_match_a_loop_written_by_hand(num_hashes):
    # n = 21 is not a multiple of bucket_size 4; the second sequence is padded
    q, v = qv(n=21, d=8, seed=2)
    mask = lengths_mask([21, 15], 21)
    attn = reformer(num_hashes, bucket_size=4, max_seq_len=32)  # 16 buckets
    out, ref = run(attn, q, v, mask), lsh_by_hand(attn, q, v, mask)
    torch.testing.assert_close(out[0], ref[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[1, :, :15], ref[1, :, :15], atol=1e-10, rtol=1e-10)


def test_error_falls_with_hash_rounds():
    mask = torch.ones(1, 128, dtype=torch.bool)
    errors = []
    for rounds in (1, 4, 16):
        attn = reformer(rounds, bucket_size=16, max_seq_len=128)
        total = 0.0
        for seed in range(4):
            q, v = qv(b=1, n=128, seed=10 + seed, dtype=torch.float32)
            total += float((run(attn, q, v, mask, seed) - shared_qk_softmax(q, v, mask)).abs().mean())
        errors.append(total / 4)
    assert errors[0] > 1.5 * errors[1] > 2.25 * errors[2]


@pytest.mark.parametrize("n_real", [20, 24])
def test_padding_never_changes_real_outputs(n_real):
    q, v = qv(b=1, n=n_real, d=16, seed=3)
    attn = reformer(num_hashes=2, bucket_size=8, max_seq_len=64)
    real = run(attn, q, v, torch.ones(1, n_real, dtype=torch.bool))
    junk = [torch.randn(1, 2, 17, 16, dtype=torch.float64) * 5 for _ in range(2)]
    padded = [torch.cat([t, j], 2) for t, j in zip((q, v), junk, strict=True)]
    out = run(attn, *padded, lengths_mask([n_real], n_real + 17))
    torch.testing.assert_close(out[:, :, :n_real], real, atol=1e-12, rtol=1e-12)


def test_gradcheck_with_fixed_rotations():
    q, v = (t.requires_grad_() for t in qv(n=11, d=4, seed=4))
    mask = lengths_mask([11, 8], 11)
    attn = reformer(num_hashes=2, bucket_size=3, max_seq_len=12)

    def fn(q, v):
        return run(attn, q, v, mask) * mask[:, None, :, None]  # padded rows are not outputs

    assert torch.autograd.gradcheck(fn, (q, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_backward(dtype):
    q, v = (t.requires_grad_() for t in qv(n=29, dtype=dtype))
    mask = lengths_mask([29, 10], 29)
    out = run(reformer(num_hashes=2, bucket_size=8), q, v, mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert q.grad.dtype == dtype and torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    ref = run(reformer(num_hashes=2, bucket_size=8), q.detach().double(), v.detach().double(), mask)
    assert (out.double() - ref)[1, :, :10].abs().max() < (0.1 if dtype == torch.bfloat16 else 1e-4)
