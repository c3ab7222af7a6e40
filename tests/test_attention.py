"""Softmax and Nystrom attention against reference computations and their exact limits."""


from functools import partial

import pytest
import torch

from effbert.attention import build_attention
from effbert.attention.nystrom import iterative_pinv, segment_means_weights
from effbert.config import parse_config
from helpers import random_qkv
from reference import conv_skip, lengths_mask, naive_softmax, nystrom


def model_cfg(**attention):
    return parse_config({"model": {"hidden_size": 64, "num_heads": 2, "attention": attention or {"type": "softmax"}}},
                        "test").model



qkv = partial(random_qkv, d=32, scale=0.5, dtype=torch.float32)



def test_softmax_matches_naive_with_padding():
    q, k, v = qkv()
    mask = lengths_mask([13, 7], 13)
    attn = build_attention(model_cfg()).eval()
    torch.testing.assert_close(attn(q, k, v, mask), naive_softmax(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_segment_means_follow_the_extended_rule():
    # n=10 real tokens, m=4: 10 = 2*2 + 2*3, so the first two landmarks average 2 tokens, the last two 3
    mask = lengths_mask([10, 3], 13)
    weights, real = segment_means_weights(mask, 4)
    sizes = (weights[0] > 0).sum(-1).tolist()
    assert sizes == [2, 2, 3, 3]
    assert torch.allclose(weights[0, 0, :2], torch.full((2,), 0.5))
    assert (weights[:, :, 10:] == 0).all()  # padding never enters a landmark
    # n=3 < m=4: one landmark per token, the first left empty
    assert real[1].tolist() == [False, True, True, True]
    assert ((weights[1] > 0).sum(-1)).tolist() == [0, 1, 1, 1]


def test_iterative_pinv_approaches_torch_pinv():
    a = torch.softmax(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), -1).double()
    errors = [float((iterative_pinv(a, it, per_head) - torch.linalg.pinv(a)).abs().max())
              for per_head in (False, True) for it in (2, 6, 20)]
    assert errors[2] < 1e-6 and errors[5] < 1e-6
    assert errors[0] > errors[2] and errors[3] > errors[5]


@pytest.mark.parametrize("n", [8, 12])
def test_nystrom_is_softmax_when_landmarks_cover_the_sequence(n):
    """Each token its own landmark: F = A = B = the softmax matrix, so F A^+ B V = softmax V once the pseudoinverse
    has converged. The layer computes softmax directly then; its Nystrom path must agree (empty landmarks too)."""
    q, k, v = (t.double() for t in qkv(n=n))
    mask = lengths_mask([n, n - 3], n)
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=12, pinv_iterations=40, pinv_init="per_head"))
    truth = naive_softmax(q, k, v, mask)
    torch.testing.assert_close(attn(q, k, v, mask), truth, atol=1e-12, rtol=0)
    torch.testing.assert_close(attn._nystrom(q, k, v, mask), truth, atol=1e-10, rtol=0)


def test_nystrom_short_sequence_in_long_batch_is_exact():
    # batch padded to 40 > m = 16, but the second sequence has 5 real tokens: every landmark is a token
    q, k, v = qkv(n=40)
    mask = lengths_mask([40, 5], 40)
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=16, pinv_iterations=30, pinv_init="per_head"))
    torch.testing.assert_close(attn(q, k, v, mask)[1, :, :5], naive_softmax(q, k, v, mask)[1, :, :5],
                               atol=1e-4, rtol=1e-4)


def test_nystrom_error_falls_with_landmarks():
    q, k, v = qkv(b=1, n=256, seed=3)
    mask = torch.ones(1, 256, dtype=torch.bool)
    ref = naive_softmax(q, k, v, mask)
    errors = []
    for m in (4, 32, 255):
        attn = build_attention(model_cfg(type="nystrom", num_landmarks=m, pinv_iterations=20, pinv_init="per_head"))
        errors.append(float((attn(q, k, v, mask) - ref).abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


@pytest.mark.parametrize("attention", [{"type": "softmax"},
                                       {"type": "nystrom", "num_landmarks": 8},
                                       {"type": "nystrom", "num_landmarks": 8, "conv_kernel": 5}])
def test_padding_never_changes_real_outputs(attention):
    q, k, v = qkv(b=1, n=20)
    attn = build_attention(model_cfg(**attention)).eval()
    real = attn(q, k, v, torch.ones(1, 20, dtype=torch.bool))
    junk = [torch.randn(1, 2, 11, 32) * 5 for _ in range(3)]
    padded = [torch.cat([t, j], 2) for t, j in zip((q, k, v), junk, strict=True)]
    out = attn(*padded, lengths_mask([20], 31))
    torch.testing.assert_close(out[:, :, :20], real, atol=1e-5, rtol=1e-5)


def test_nystrom_backward_is_finite():
    q, k, v = (t.requires_grad_() for t in qkv(n=30))
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=8))
    attn(q, k, v, lengths_mask([30, 17], 30)).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_nystrom_gradcheck_float64():
    q, k, v = (t.double().requires_grad_() for t in qkv(b=1, n=11, d=4))
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=3, pinv_iterations=4, conv_kernel=3)).double()
    mask = lengths_mask([9], 11)
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, mask), (q, k, v), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("conv", [None, 5])
def test_nystrom_fused_form_is_the_papers_explicit_formula(per_head, conv):
    """Two fused attentions around A^+ equal F A^+ B V written out, in float64, with padding (one sequence
    shorter than the landmarks), the conv skip and both initialisations; gradients included."""
    torch.manual_seed(0)  # the conv weights below
    q, k, v = (t.double().requires_grad_() for t in qkv(b=3, n=37, d=8, scale=1.0))
    mask = lengths_mask([37, 20, 5], 37)
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=8, pinv_iterations=8, conv_kernel=conv,
                                     pinv_init="per_head" if per_head else "original")).double()
    expected = nystrom(q, k, v, mask, 8, 8, per_head)
    if conv:
        torch.nn.init.normal_(attn.conv.weight)
        expected = expected + conv_skip(v, mask, attn.conv.weight.detach()[:, 0, :, 0])
    got = attn(q, k, v, mask)
    real = mask[:, None, :, None]
    torch.testing.assert_close(got * real, expected * real, atol=1e-12, rtol=0)  # float64 throughout: rounding only
    upstream = torch.randn_like(got) * real  # padded queries' outputs are never used
    grads = torch.autograd.grad(got, (q, k, v), upstream)
    truth = torch.autograd.grad(expected, (q, k, v), upstream)
    for g, t in zip(grads, truth, strict=True):  # gradients reach ~10 with N(0, 1) conv weights: relative too
        torch.testing.assert_close(g, t, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("landmarks", [8, 7])  # equal segments (a reshape with its own backward), unequal ones
def test_nystrom_without_a_mask_is_the_papers_formula(landmarks):
    torch.manual_seed(0)  # the upstream gradient below
    q, k, v = (t.double().requires_grad_() for t in qkv(b=2, n=40, d=8, scale=1.0))
    attn = build_attention(model_cfg(type="nystrom", num_landmarks=landmarks, pinv_iterations=8)).double()
    got = attn(q, k, v, None)
    expected = nystrom(q, k, v, torch.ones(2, 40, dtype=torch.bool), landmarks, 8, False)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    upstream = torch.randn_like(got)
    for g, t in zip(torch.autograd.grad(got, (q, k, v), upstream), torch.autograd.grad(expected, (q, k, v), upstream),
                    strict=True):
        torch.testing.assert_close(g, t, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("token_major", [True, False])
def test_conv_skip_is_each_heads_filter_over_the_masked_values(token_major):
    """The CPU form (each of the H * D channels its own group, the head's filter repeated) against the formula,
    values and the filter's gradient, for V laid out as the encoder gives it (token-major: (B, N, H, D) in
    memory) and contiguous; the output keeps the token-major layout, so the encoder's head merge is a view."""
    from effbert.attention.conv_skip import ConvSkip

    torch.manual_seed(0)
    b, h, n, d = 2, 3, 19, 4
    v = torch.randn(b, n, h, d, dtype=torch.float64).transpose(1, 2)
    v = (v if token_major else v.contiguous()).requires_grad_()
    mask = lengths_mask([19, 11], n)
    conv = ConvSkip(h, 5).double()
    torch.nn.init.normal_(conv.weight)
    got = conv(v, mask)
    expected = conv_skip(v, mask, conv.weight[:, 0, :, 0])
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert got.transpose(1, 2).is_contiguous()
    upstream = torch.randn_like(got)
    for g, t in zip(torch.autograd.grad(got, (v, conv.weight), upstream),
                    torch.autograd.grad(expected, (v, conv.weight), upstream), strict=True):
        torch.testing.assert_close(g, t, atol=1e-12, rtol=0)
