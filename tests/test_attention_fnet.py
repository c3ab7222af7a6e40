"""FNet mixing against numpy's 2-D DFT, and what its padding does and does not promise."""

import numpy as np
import pytest
import torch

from effbert.attention.fnet import FnetMixing
from effbert.config import parse_config
from reference import lengths_mask


def fnet():
    cfg = parse_config({"model": {"hidden_size": 24, "num_heads": 2, "attention": {"type": "fnet"}}}, "test").model
    return FnetMixing(cfg)


def hidden(b=2, n=13, width=24, seed=0, dtype=torch.float64):
    return torch.randn(b, n, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)



def test_replaces_the_sublayer_without_parameters():
    mixing = fnet()
    assert FnetMixing.mixes_hidden_states is True
    assert not list(mixing.parameters())


@pytest.mark.parametrize("n", [13, 16])
def test_matches_numpy_fft2_real(n):
    x = hidden(n=n)
    out = fnet()(x, torch.ones(2, n, dtype=torch.bool))
    ref = np.fft.fft2(x.numpy()).real  # numpy's fft2 transforms the last two axes: (sequence, hidden)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10, rtol=1e-10)


def test_padded_tokens_are_zeroed_before_the_transform():
    x = hidden(n=13)
    mask = lengths_mask([13, 8], 13)
    out = fnet()(x, mask)
    ref = np.fft.fft2(x.numpy() * mask.numpy()[..., None]).real
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10, rtol=1e-10)
    # padding values never matter
    junk = x.clone()
    junk[1, 8:] = 1e3
    torch.testing.assert_close(fnet()(junk, mask), out)


def test_not_padding_invariant_the_dft_length_is_the_padded_length():
    # documented behaviour: outputs at real tokens change with the amount of padding (the paper pads to a fixed n)
    x = hidden(b=1, n=10)
    short = fnet()(x, torch.ones(1, 10, dtype=torch.bool))
    padded = fnet()(torch.cat([x, hidden(b=1, n=6, seed=1)], 1), lengths_mask([10], 16))
    assert not torch.allclose(padded[:, :10], short, atol=1e-3)


def test_gradcheck():
    x = hidden(n=7, width=6).requires_grad_()
    mask = lengths_mask([7, 5], 7)
    assert torch.autograd.gradcheck(lambda x: fnet()(x, mask), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_backward(dtype):
    x = hidden(n=29, dtype=dtype).requires_grad_()
    mask = lengths_mask([29, 11], 29)
    out = fnet()(x, mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    ref = fnet()(x.detach().double(), mask)
    # entries are sums of 29 * 24 terms of size ~1: compare relative to their scale
    assert ((out.double() - ref).abs().max() / ref.abs().max()) < (2e-2 if dtype == torch.bfloat16 else 1e-5)
