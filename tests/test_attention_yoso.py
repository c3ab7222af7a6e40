"""YOSO against independent truth: the closed-form kernel (numpy), dense evaluations of the sampled matrix
and of the paper's backward with the same hash draws (uniform, skewed and single-bucket codes), Sylvester's
Hadamard matrix, convergence in the number of hashes, padding, mask None, bf16."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import effbert.attention.yoso as yoso
from effbert.attention.yoso import LshCumulation, YosoAttention, fast_hash, gaussian_hash, hadamard_transform
from effbert.config import parse_config
from helpers import random_qkv as qkv
from reference import lengths_mask


def build(hidden=32, heads=2, **options):
    cfg = parse_config({"model": {"hidden_size": hidden, "num_heads": heads,
                                  "attention": {"type": "yoso", **options}}}, "test").model
    return YosoAttention(cfg)




def hadamard(size: int) -> torch.Tensor:
    """Sylvester's construction, H_2s = [[H_s, H_s], [H_s, -H_s]], as a dense float64 matrix."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_yoso_e(q, k, v, mask, tau):
    """(1 - arccos(q.k)/pi)^tau on unit vectors, padded keys weightless, rows L2-normalised."""
    q, k, v, mask = (t.numpy() for t in (q, k, v, mask))
    weights = (1 - np.arccos(np.clip(unit(q) @ unit(k).swapaxes(-1, -2), -1, 1)) / np.pi) ** tau
    out = (weights * mask[:, None, None, :]) @ v
    return unit(out)


def test_expectation_is_the_closed_form():
    q, k, v = qkv()
    mask = lengths_mask([13, 6], 13)
    out = build(hash_bits=5, expectation=True)(q, k, v, mask)
    expected = numpy_yoso_e(q, k, v, mask, 5)
    real = mask[:, None, :, None].expand_as(out).numpy()
    np.testing.assert_allclose(out.numpy()[real], expected[real], rtol=1e-10, atol=1e-12)
    assert torch.isfinite(out).all()


def test_conv_variant_adds_a_depthwise_convolution_of_masked_values():
    q, k, v = qkv(n=11)
    mask = lengths_mask([11, 7], 11)
    with_conv = build(hash_bits=3, expectation=True, conv_kernel=5).double()
    torch.nn.init.normal_(with_conv.conv.weight)
    skip = (with_conv(q, k, v, mask) - build(hash_bits=3, expectation=True)(q, k, v, mask)).detach().numpy()
    w = with_conv.conv.weight.detach().numpy()[:, 0, :, 0]  # (heads, 5)
    vm = np.pad((v * mask[:, None, :, None]).numpy(), ((0, 0), (0, 0), (2, 2), (0, 0)))
    expected = sum(w[None, :, t, None, None] * vm[:, :, t:t + 11] for t in range(5))
    np.testing.assert_allclose(skip, expected, atol=1e-10)


def dense_collisions(q_codes, k_codes):
    return (q_codes[:, :, None, :] == k_codes[:, None, :, :]).double().mean(-1)  # (BH, Nq, Nk)


def dense_paper_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad):
    """Y = B V and the paper's gradients with B built densely from the codes: the O(n^2) reference."""
    b = dense_collisions(q_codes, k_codes)
    if q_mask is not None:
        b = b * q_mask[:, :, None]
    if k_mask is not None:
        b = b * k_mask[:, None, :]
    s = (grad @ v.transpose(1, 2)) * b * (tau / 2)
    return b @ v, s @ k, s.transpose(1, 2) @ q, b.transpose(1, 2) @ grad


def run_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = LshCumulation.apply(q, k, v, q_codes, k_codes, q_mask, k_mask, tau)
    (out * grad).sum().backward()
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("hash_fn", [gaussian_hash, fast_hash])
def test_custom_backward_is_the_papers_formula_with_the_same_draws(hash_fn):
    # dense O(n^2) evaluation of Y = B V and of the paper's gradients with the very hash codes the op used
    torch.manual_seed(0)
    bh, n, d, tau, m = 4, 19, 8, 3, 6
    q, k = (F.normalize(torch.randn(bh, n, d, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(bh, n, d, dtype=torch.float64)
    q_mask = (torch.arange(n) < 15)[None, :].expand(bh, n)
    k_mask = (torch.arange(n) < 12)[None, :].expand(bh, n)
    q_codes, k_codes = hash_fn(q, k, m, tau)
    assert q_codes.shape == (bh, n, m) and 0 <= int(q_codes.min()) and int(q_codes.max()) < 2 ** tau
    grad = torch.randn(bh, n, d, dtype=torch.float64)
    got = run_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad)
    for a, b in zip(got, dense_paper_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad), strict=True):
        torch.testing.assert_close(a, b)
    assert (got[2][:, 12:] == 0).all() and (got[3][:, 12:] == 0).all()  # padded keys get nothing


def skewed_codes(shape, tau, share, generator):
    """Codes of which a `share` sit in bucket 0 and the rest are uniform: a trained model's kind of skew."""
    codes = torch.randint(0, 2 ** tau, shape, generator=generator)
    return torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < share, 0, codes)


@pytest.mark.parametrize("case", ["uniform", "skewed", "one bucket", "wide codes", "no pairs"])
@pytest.mark.parametrize("batch_elements", [None, 1])
def test_vectorised_cumulations_match_the_dense_reference(case, batch_elements, monkeypatch):
    # the sorted-bucket layout, its pairwise blocks of every width and its d x d tables for large buckets,
    # against B built densely from the codes; padding differs between queries and keys, float64 throughout
    if batch_elements is not None:  # one hash per layout, one block or large bucket per step
        monkeypatch.setattr(yoso, "_BATCH_ELEMENTS", batch_elements)
    g = torch.Generator().manual_seed(11)
    bh, n, d, m = 3, 150, 16, 5
    tau = 24 if case == "wide codes" else 4
    q, k = (F.normalize(torch.randn(bh, n, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(2))
    v, grad = (torch.randn(bh, n, d, generator=g, dtype=torch.float64) for _ in range(2))
    q_mask = torch.rand(bh, n, generator=g) < 0.8
    k_mask = torch.rand(bh, n, generator=g) < 0.7
    if case == "uniform":
        q_codes, k_codes = (torch.randint(0, 2 ** tau, (bh, n, m), generator=g) for _ in range(2))
    elif case == "skewed":
        q_codes, k_codes = (skewed_codes((bh, n, m), tau, 0.6, g) for _ in range(2))
    elif case == "one bucket":
        q_codes = k_codes = torch.full((bh, n, m), 2 ** tau - 1)
    elif case == "wide codes":  # 2^24 possible buckets, a few of them shared: no table of 2^tau rows
        q_codes, k_codes = (2 ** 23 + 2 ** 20 * torch.randint(0, 3, (bh, n, m), generator=g) for _ in range(2))
    else:  # queries and keys never share a bucket
        q_codes, k_codes = torch.zeros(bh, n, m, dtype=torch.long), torch.ones(bh, n, m, dtype=torch.long)
    got = run_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad)
    want = dense_paper_op(q, k, v, q_codes, k_codes, q_mask, k_mask, tau, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if case == "no pairs":
        assert all((a == 0).all() for a in got)
    if case == "skewed":  # both ways of summing a bucket ran: pairwise blocks and d x d tables
        layout = yoso.bucket_layout(q_codes, k_codes, q_mask, k_mask, tau, d)
        assert layout.blocks and layout.pieces.numel()
    # without masks, every token is real
    got = run_op(q, k, v, q_codes, k_codes, None, None, tau, grad)
    for a, b in zip(got, dense_paper_op(q, k, v, q_codes, k_codes, None, None, tau, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 24, 30])
def test_codes_weigh_bit_t_by_two_to_the_t(bits):
    positive = torch.rand(5, 7, bits) < 0.5
    want = [sum(1 << t for t in range(bits) if row[t]) for row in positive.flatten(0, 1).tolist()]
    assert yoso._to_codes(positive).flatten().tolist() == want


@pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 64, 256])
def test_hadamard_transform_is_sylvesters_matrix(size):
    x = torch.randn(3, 5, size, dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x), x @ hadamard(size), rtol=1e-12, atol=1e-12)
    h = hadamard(size)
    assert torch.equal(h @ h.T, size * torch.eye(size, dtype=torch.float64))  # the truth is a Hadamard matrix


def test_hadamard_transform_in_batches(monkeypatch):
    monkeypatch.setattr(yoso, "_BATCH_ELEMENTS", 64)  # rows of 32 in batches of 2
    x = torch.randn(7, 32, dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x), x @ hadamard(32), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard_transform(torch.randn(2, 12))


def test_backward_estimates_the_lower_bound_gradient_of_the_expectation():
    # many hashes: B -> E[B] = (1 - arccos(q.k)/pi)^tau, so dL/dQ -> ((G V^T) * (tau/2) E[B]) K
    torch.manual_seed(1)
    bh, n, d, tau = 2, 16, 8, 2
    q, k = (F.normalize(torch.randn(bh, n, d, dtype=torch.float64), dim=-1).requires_grad_() for _ in range(2))
    v = torch.randn(bh, n, d, dtype=torch.float64)
    codes = gaussian_hash(q.detach(), k.detach(), 8192, tau)
    grad = torch.randn(bh, n, d, dtype=torch.float64)
    (LshCumulation.apply(q, k, v, *codes, None, None, tau) * grad).sum().backward()
    qn, kn = q.detach().numpy(), k.detach().numpy()
    e = (1 - np.arccos(np.clip(qn @ kn.swapaxes(1, 2), -1, 1)) / np.pi) ** tau
    s = (grad.numpy() @ v.numpy().swapaxes(1, 2)) * e * tau / 2
    for got, want in ((q.grad, s @ kn), (k.grad, s.swapaxes(1, 2) @ qn)):
        assert np.linalg.norm(got.numpy() - want) / np.linalg.norm(want) < 0.05


def test_batched_steps_give_the_same_result(monkeypatch):
    torch.manual_seed(2)
    q, k, v = (t.requires_grad_() for t in qkv(n=17))
    mask = lengths_mask([17, 9], 17)
    attn = build(hash_bits=4, num_hashes=5)
    results = []
    for limit in (yoso._BATCH_ELEMENTS, 1):  # 1: one hash per layout, one block or bucket per step
        monkeypatch.setattr(yoso, "_BATCH_ELEMENTS", limit)
        torch.manual_seed(3)
        out = attn(q, k, v, mask)
        results.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v))])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_gaussian_codes_collide_with_the_closed_form_probability():
    torch.manual_seed(4)
    q, k = (F.normalize(torch.randn(2, 12, 8, dtype=torch.float64), dim=-1) for _ in range(2))
    tau = 3
    b = dense_collisions(*gaussian_hash(q, k, 8192, tau))
    e = (1 - torch.arccos((q @ k.transpose(1, 2)).clamp(-1, 1)) / math.pi) ** tau
    assert float((b - e).abs().max()) < 0.03


def test_fast_hash_bits_are_unbiased_and_any_width_works():
    # one bit per code: each Hadamard output is a hyperplane through the origin, so P(collide) = 1 - angle/pi
    torch.manual_seed(5)
    q, k = (F.normalize(torch.randn(2, 12, 16, dtype=torch.float64), dim=-1) for _ in range(2))
    b = dense_collisions(*fast_hash(q, k, 8192, 1))
    e = 1 - torch.arccos((q @ k.transpose(1, 2)).clamp(-1, 1)) / math.pi
    assert float((b - e).abs().max()) < 0.03
    # width 12 (not a power of two) and tau > width: zero-padded to 16, codes stay in range and scale-free
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    torch.manual_seed(6)
    codes = fast_hash(x, x, 9, 13)[0]
    torch.manual_seed(6)
    assert codes.shape == (3, 7, 9) and int(codes.max()) < 2 ** 13
    assert torch.equal(codes, fast_hash(5 * x, x, 9, 13)[0])


@pytest.mark.parametrize("fast", [False, True])
def test_error_to_expectation_falls_with_hashes(fast):
    q, k, v = qkv(b=1, n=48, seed=7)
    mask = torch.ones(1, 48, dtype=torch.bool)
    exact = build(hash_bits=4, expectation=True)(q, k, v, mask)
    errors = []
    for m in (4, 32, 256):
        attn = build(hash_bits=4, num_hashes=m, fast_hash=fast)
        runs = []
        for seed in range(3):
            torch.manual_seed(seed)
            runs.append(float((attn(q, k, v, mask) - exact).norm() / exact.norm()))
        errors.append(sum(runs) / len(runs))
    # the Monte Carlo error falls as 1/sqrt(m) (8x fewer at m=256 than m=4); the fast hash's orthogonal bits
    # within a code add a small bias of their own, which only shows at much larger m
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 3


@pytest.mark.parametrize("options", [{"expectation": True},
                                     {"fast_hash": False},
                                     {"fast_hash": True},
                                     {"fast_hash": True, "conv_kernel": 5}])
def test_padding_never_changes_real_outputs(options):
    q, k, v = qkv(b=1, n=20, seed=8)
    attn = build(hash_bits=4, num_hashes=8, **options).double()
    torch.manual_seed(0)
    alone = attn(q, k, v, torch.ones(1, 20, dtype=torch.bool))
    junk = [5 * t for t in qkv(b=1, n=9, seed=9)]
    torch.manual_seed(0)
    padded = attn(*(torch.cat([t, j], 2) for t, j in zip((q, k, v), junk, strict=True)), lengths_mask([20], 29))
    torch.testing.assert_close(padded[:, :, :20], alone, atol=1e-12, rtol=1e-12)
    assert torch.isfinite(padded).all()


@pytest.mark.parametrize("options", [{"expectation": True}, {"fast_hash": False}, {"fast_hash": True, "conv_kernel": 3},
                                     {"fast_hash": False, "hash_bits": 24}, {"expectation": True, "hash_bits": 24}])
def test_mask_none_is_every_token_real(options):
    q, k, v = (t.requires_grad_() for t in qkv(n=16, seed=12))
    attn = build(hash_bits=options.pop("hash_bits", 4), num_hashes=8, **options).double()
    results = []
    for mask in (None, torch.ones(2, 16, dtype=torch.bool)):
        torch.manual_seed(0)
        out = attn(q, k, v, mask)
        results.append([out, *torch.autograd.grad((out * torch.arange(16.0)[:, None]).sum(), (q, k, v))])
    assert torch.isfinite(results[0][0]).all()
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv", [None, 3])
def test_gradcheck_expectation(conv):
    q, k, v = (t.requires_grad_() for t in qkv(b=1, n=6, d=4, seed=10))
    attn = build(hidden=8, hash_bits=3, expectation=True, conv_kernel=conv).double()
    mask = lengths_mask([4], 6)
    assert torch.autograd.gradcheck(lambda *t: attn(*t, mask), (q, k, v))


@pytest.mark.parametrize("options", [{"expectation": True}, {"fast_hash": True, "conv_kernel": 3},
                                     {"fast_hash": False}])
def test_bfloat16_in_bfloat16_out(options):
    q, k, v = (t.to(torch.bfloat16).requires_grad_() for t in qkv(n=23, dtype=torch.float32))
    attn = build(hash_bits=4, num_hashes=8, **options).to(torch.bfloat16)
    mask = lengths_mask([23, 11], 23)
    out = attn(q, k, v, mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().square().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all() for t in (q, k, v))
    if options.get("expectation"):  # deterministic: float32 math on the bf16 inputs, rounded once
        ref = attn.float()(q.float(), k.float(), v.float(), mask)
        torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


def test_gaussian_planes_are_one_draw_whatever_the_dtype():
    """One seed, one set of hyperplanes: a float64 run hashes as the float32 run does (a float64 draw would
    be other numbers)."""
    from effbert.attention.yoso import gaussian_planes

    x = torch.randn(2, 5, 8)
    torch.manual_seed(0)
    single = gaussian_planes(2, 8, 4, 3, x)
    torch.manual_seed(0)
    double = gaussian_planes(2, 8, 4, 3, x.double())
    assert double.dtype == torch.float64 and torch.equal(single.double(), double)
