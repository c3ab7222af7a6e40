"""Performer FAVOR+: unbiased positive features, orthogonal draws, convergence to softmax, padding, redrawing,
and the chunked form against the explicit n x n computation, with features recomputed in the backward."""

import math
from functools import partial

import pytest
import torch

from effbert.attention.performer import PerformerAttention, orthogonal_gaussian, softmax_kernel_exponent
from effbert.config import parse_config
from helpers import random_qkv
from reference import lengths_mask, naive_softmax, saved_bytes


def performer(num_features=64, kernel="softmax", redraw_interval=None, head_dim=16, seed=0, chunk=None):
    cfg = parse_config({"model": {"hidden_size": 2 * head_dim, "num_heads": 2,
                                  "attention": {"type": "performer", "num_features": num_features, "kernel": kernel,
                                                "redraw_interval": redraw_interval}}}, "test").model
    torch.manual_seed(seed)  # the features are drawn from torch's global RNG
    attn = PerformerAttention(cfg).double()
    if chunk is not None:
        attn.chunk = chunk
    return attn


def naive_performer(q, k, v, mask, w, kernel):
    """D^-1 A V with A = phi(Q) phi(K)^T explicit (N x N), the paper's features without any stabiliser."""
    if kernel == "relu":
        phi_q, phi_k = (torch.relu(t @ w.T) + 1e-3 for t in (q, k))
    else:
        scale = q.shape[-1] ** -0.25
        phi_q, phi_k = (torch.exp((t * scale) @ w.T - (t * scale).square().sum(-1, keepdim=True) / 2)
                        / math.sqrt(w.shape[0]) for t in (q, k))
    a = phi_q @ phi_k.transpose(-1, -2)
    if mask is not None:
        a = a * mask[:, None, None, :]
    return a / a.sum(-1, keepdim=True) @ v


qkv = partial(random_qkv, scale=0.5)




def test_orthogonal_features_are_orthogonal_blocks_with_chi_norms():
    torch.manual_seed(0)
    w = orthogonal_gaussian(20, 8).double()  # two full blocks of 8 rows and one of 4
    for block in (w[:8], w[8:16], w[16:]):
        gram = block @ block.T
        torch.testing.assert_close(gram, torch.diag(torch.diagonal(gram)), atol=1e-5, rtol=0)
    norms2 = torch.cat([orthogonal_gaussian(64, 8) for _ in range(200)]).double().square().sum(-1)
    assert abs(norms2.mean().item() - 8) < 0.2  # E|w|^2 = d: each row is marginally N(0, I_d)


def test_positive_features_estimate_the_softmax_kernel_without_bias():
    # Lemma 1: E_w[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x.y); average phi(x).phi(y) over many draws
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(8, generator=g, dtype=torch.float64) * 0.4 for _ in range(2))
    torch.manual_seed(1)
    estimates = []
    for _ in range(400):
        w = orthogonal_gaussian(32, 8).double()
        phi_x, phi_y = (torch.exp(softmax_kernel_exponent(t[None], w)) / math.sqrt(32) for t in (x, y))
        estimates.append((phi_x * phi_y).sum())
    estimates = torch.stack(estimates)
    assert (estimates > 0).all()  # positive features: never a negative weight
    standard_error = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - math.exp(x @ y)) < 4 * standard_error + 1e-3


def test_error_to_softmax_falls_as_features_grow():
    q, k, v = qkv(b=1, n=64)
    mask = torch.ones(1, 64, dtype=torch.bool)
    ref = naive_softmax(q, k, v, mask)
    errors = []
    for m in (16, 128, 1024):
        runs = [(performer(m, seed=s).eval()(q, k, v, mask) - ref).abs().mean().item() for s in range(4)]
        errors.append(sum(runs) / len(runs))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 3


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_equals_the_quadratic_computation_with_padding(kernel, chunk):
    attn = performer(kernel=kernel, chunk=chunk).eval()
    q, k, v = qkv()
    mask = lengths_mask([13, 5], 13)
    ref = naive_performer(q, k, v, mask, attn.features, kernel)
    torch.testing.assert_close(attn(q, k, v, mask), ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_no_mask_equals_an_all_real_mask(kernel):
    attn = performer(kernel=kernel, chunk=4).eval()
    q, k, v = qkv()
    torch.testing.assert_close(attn(q, k, v, None), attn(q, k, v, torch.ones(2, 13, dtype=torch.bool)),
                               atol=1e-15, rtol=1e-13)


@pytest.mark.parametrize("far_first", [True, False])
def test_keys_max_kept_across_chunks_in_float32(far_first):
    # keys of norm ~40 have exponents near -200: exp underflows in float32 unless the shared max is
    # subtracted, and the two halves' maxima differ, so each chunk's sums must be rescaled to the final max
    attn = performer(chunk=8).eval()
    q, k, v = qkv(b=1, n=16)
    norms = torch.tensor([40.0] * 8 + [36.0] * 8, dtype=torch.float64)
    k = k / k.norm(dim=-1, keepdim=True) * (norms if far_first else norms.flip(0))[:, None]
    ref = naive_performer(q, k, v, None, attn.features, "softmax")
    out = attn.float()(q.float(), k.float(), v.float(), None)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


def log_domain_performer(q, k, v, mask, w):
    """naive_performer's softmax kernel with every product kept as a logarithm: log A_ij = logsumexp over the
    features of (a_im + b_jm), then a softmax over the real keys. Exact in float64 at any size of the logits."""
    scale = q.shape[-1] ** -0.25
    a, b = ((t * scale) @ w.T - (t * scale).square().sum(-1, keepdim=True) / 2 for t in (q, k))
    log_a = torch.logsumexp(a[..., :, None, :] + b[..., None, :, :], -1)  # (B, H, N, N)
    log_a = log_a.masked_fill(~mask[:, None, None, :], -math.inf)
    return torch.softmax(log_a, -1) @ v


def test_large_logits_in_float32_keep_every_query_and_a_finite_gradient():
    """q and k of standard deviation 30 (exponents in the thousands): per-feature stabilisers give every query
    with a real key a normaliser of at least 1. One shared key maximum left queries whose features only
    far-below-it keys share with a normaliser of 0 (their output 0, their gradient inf or NaN)."""
    attn = performer(num_features=32, chunk=16).eval()
    q, k, v = qkv(b=2, n=40, scale=1.0)
    q, k = q * 30, k * 30
    mask = lengths_mask([40, 23], 40)
    truth = log_domain_performer(q, k, v, mask, attn.features)
    q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
    out = attn.float()(q32, k32, v32, mask)
    torch.testing.assert_close(out.double(), truth, atol=1e-3, rtol=1e-3)
    grads = torch.autograd.grad(out, (q32, k32, v32), torch.randn_like(out))
    assert all(g.isfinite().all() for g in grads)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_padding_never_changes_real_outputs(kernel):
    # padded keys must leave the normaliser too (zeroing only their values would not pass this)
    attn = performer(kernel=kernel, chunk=8).eval()
    q, k, v = qkv(b=1, n=17)
    alone = attn(q, k, v, torch.ones(1, 17, dtype=torch.bool))
    junk = qkv(b=1, n=9, seed=5, scale=5.0)
    padded = [torch.cat([t, j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = attn(*padded, lengths_mask([17], 26))
    torch.testing.assert_close(out[:, :, :17], alone, atol=1e-10, rtol=1e-10)


def test_output_is_a_positive_weighted_average_of_real_values():
    # positive features give convex weights: with v = 1 at real tokens the output is exactly 1
    q, k, _ = qkv(n=20, scale=2.0)
    mask = lengths_mask([20, 9], 20)
    for kernel in ("softmax", "relu"):
        out = performer(kernel=kernel, chunk=8).eval()(q, k, torch.ones(2, 2, 20, 3, dtype=torch.float64), mask)
        torch.testing.assert_close(out, torch.ones_like(out), atol=1e-10, rtol=1e-10)


def test_features_redraw_every_interval_in_training_only():
    attn = performer(redraw_interval=2)
    q, k, v = qkv()
    mask = torch.ones(2, 13, dtype=torch.bool)
    seen = []
    for _ in range(5):
        attn(q, k, v, mask)
        seen.append(attn.features.clone())
    # calls 1-2 use the initial draw, 3-4 a second, 5 a third
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[2], seen[3]) and not torch.equal(seen[3], seen[4])
    attn.eval()
    for _ in range(4):
        attn(q, k, v, mask)
    assert torch.equal(attn.features, seen[4])
    # the draws come from torch's global RNG: the same seed gives the same features
    assert torch.equal(performer(seed=3).features, performer(seed=3).features)
    assert not torch.equal(performer(seed=3).features, performer(seed=4).features)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_bfloat16_in_bfloat16_out_close_to_float64(kernel):
    attn = performer(kernel=kernel, chunk=16).eval().to(torch.bfloat16)
    q, k, v = qkv(n=40)
    mask = lengths_mask([40, 3], 40)
    out = attn(*(t.bfloat16() for t in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    ref = naive_performer(q, k, v, mask, attn.features.double(), kernel)  # the same bf16-rounded draw
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
@pytest.mark.parametrize("lengths", [None, [7, 5], [3, 0]], ids=["no-mask", "padding", "all-padding-row"])
def test_gradcheck_float64_over_several_chunks(kernel, lengths):
    attn = performer(num_features=8, kernel=kernel, head_dim=4, chunk=3).eval()  # fixed features
    q, k, v = (t.requires_grad_() for t in qkv(b=2, n=7, d=4))
    mask = None if lengths is None else lengths_mask(lengths, 7)
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, mask), (q, k, v))


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_backward_keeps_inputs_and_output_not_features(kernel):
    # autograd would keep several (n x M) feature tensors; the chunked form recomputes them, so it keeps
    # q, k, v, the output, one normaliser per query, the M x (d + 1) context, the keys' max per feature, the mask
    b, h, n, d, m = 2, 2, 512, 8, 256
    attn = performer(num_features=m, kernel=kernel, head_dim=d, chunk=64).eval()
    q, k, v = (t.requires_grad_() for t in qkv(b=b, n=n, d=d))
    mask = lengths_mask([n, 100], n)
    kept = saved_bytes(attn, q, k, v, mask)
    assert 0 < kept <= b * h * (4 * n * d + n + m * (d + 1) + m) * q.element_size() + mask.numel()
    assert kept < b * h * n * m * q.element_size()  # less than one feature tensor
