"""Nystromformer's fused pseudoinverse kernels, run on the CPU by Triton's interpreter.

Against the eager chain of PinvStep's (the CPU path of iterative_pinv): outputs, and gradients w.r.t. both A
and Z0. Independent truth: with many steps on a well-conditioned A, A Z -> I.
"""

import os
import subprocess
import sys

import pytest
import torch

# Triton decides at import whether its kernels are interpreted; tests/conftest.py sets the switch for the
# session on machines without a GPU, before anything imports Triton
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("the kernels' CPU tests need TRITON_INTERPRET=1 from the start of the session (tests/conftest.py "
                "sets it where no GPU is present)", allow_module_level=True)
triton = pytest.importorskip("triton")

from effbert.attention import nystrom_pinv_triton as fused  # noqa: E402
from effbert.attention.nystrom import PinvStep, iterative_pinv  # noqa: E402

BATCH, ITERATIONS = 3, 6
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def softmax_kernel(m: int, real: int | None = None, seed: int = 0) -> torch.Tensor:
    """(BATCH, m, m) row-stochastic A as in Nystromformer; with `real`, the padded-landmark case
    [[A_real, 0], [0, I]] (masked columns, identity rows for the m - real empty landmarks)."""
    torch.manual_seed(seed)
    scores = torch.randn(BATCH, m, m, dtype=torch.float64) * 2
    if real is None:
        return torch.softmax(scores, -1).float()
    scores[..., real:] = float("-inf")
    a = torch.softmax(scores, -1)
    a[:, real:] = torch.eye(m, dtype=a.dtype)[real:]
    return a.float()


def initial(a: torch.Tensor) -> torch.Tensor:
    """Z0 = A^T / (||A||_1 ||A||_inf) per matrix, as iterative_pinv's per-head start."""
    scale = a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1)
    return (a.transpose(-1, -2) / scale[:, None, None]).contiguous()


def eager(a: torch.Tensor, z: torch.Tensor, iterations: int) -> torch.Tensor:
    m = a.shape[-1]
    eyes = torch.eye(m, device=a.device, dtype=a.dtype) * torch.tensor([7, 15, 13], device=a.device,
                                                                       dtype=a.dtype)[:, None, None]
    for _ in range(iterations):
        z = PinvStep.apply(a, z, eyes)
    return z


def outputs_and_grads(run, a: torch.Tensor, z0: torch.Tensor, upstream: torch.Tensor):
    a, z0 = a.to(DEVICE).requires_grad_(), z0.to(DEVICE).requires_grad_()
    z = run(a, z0, ITERATIONS)
    return (z, *torch.autograd.grad(z, (a, z0), upstream.to(DEVICE)))


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    err = (got.double().cpu() - want.double().cpu()).abs().max() / want.double().abs().max()
    assert err < 1e-4, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("m, real", [(16, None), (32, None), (32, 20), (64, None)])
def test_matches_eager_chain(m: int, real: int | None) -> None:
    a = softmax_kernel(m, real)
    z0 = initial(a)
    upstream = torch.randn(BATCH, m, m, generator=torch.Generator().manual_seed(1))
    want = outputs_and_grads(eager, a, z0, upstream)
    got = outputs_and_grads(fused.FusedPinv.apply, a, z0, upstream)
    for name, g, w in zip(("Z", "dA", "dZ0"), got, want, strict=True):
        assert g.shape == w.shape
        assert_close(g, w, name)


def test_padded_landmarks_stay_block_diagonal() -> None:
    # the empty landmarks' block of A^+ must stay exactly the identity, and the off-diagonal blocks zero
    m, real = 32, 20
    a = softmax_kernel(m, real, seed=3)
    z = fused.FusedPinv.apply(a.to(DEVICE), initial(a).to(DEVICE), ITERATIONS).cpu()
    assert z[:, real:, :real].abs().max() == 0 and z[:, :real, real:].abs().max() == 0
    eager_z = eager(a, initial(a), ITERATIONS)
    assert_close(z[:, real:, real:], eager_z[:, real:, real:], "identity block")


def test_converges_to_inverse() -> None:
    # well-conditioned A (diagonally dominant): the iteration's fixed point is A^-1, so A Z -> I
    torch.manual_seed(2)
    m = 16
    a = torch.softmax(torch.randn(BATCH, m, m) + 4 * torch.eye(m), -1)
    z = fused.FusedPinv.apply(a.to(DEVICE), initial(a).to(DEVICE), 20).cpu()
    assert (a @ z - torch.eye(m)).abs().max() < 1e-4


def test_zero_iterations_is_identity_map() -> None:
    a = softmax_kernel(16)
    z0 = initial(a)
    upstream = torch.randn(BATCH, 16, 16)
    a_, z_ = a.to(DEVICE).requires_grad_(), z0.to(DEVICE).requires_grad_()
    z = fused.FusedPinv.apply(a_, z_, 0)
    grad_a, grad_z = torch.autograd.grad(z, (a_, z_), upstream.to(DEVICE))
    assert torch.equal(z.detach().cpu(), z0) and torch.equal(grad_z.cpu(), upstream)
    assert grad_a.abs().max() == 0


def test_supported_sizes() -> None:
    assert [m for m in (8, 16, 24, 32, 64, 128) if fused.supported(m)] == [16, 32, 64]
    assert fused.available("cuda") == (fused.triton is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="iterative_pinv dispatches to the kernels on CUDA only")
def test_iterative_pinv_dispatch_matches_cpu_path() -> None:
    a = softmax_kernel(32).view(1, BATCH, 32, 32)  # (B, H, m, m) as the attention passes it
    for per_head in (True, False):
        assert_close(iterative_pinv(a.cuda(), ITERATIONS, per_head), iterative_pinv(a, ITERATIONS, per_head), "Z")


# the interpreter runs Python, so it lets through what Triton's compiler refuses: build both kernels for sm_90
# (H100/H200) at every supported m, with the warps they launch with, down to a cubin with the ptxas in Triton's
# wheel, no GPU needed; in a fresh process, since this one imported Triton in interpreter mode. The shared
# memory each launch asks for must fit one H100/H200 block (227 KiB).
COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import ASTSource
from effbert.attention import nystrom_pinv_triton as fused

for fn in [fused._forward_kernel, fused._backward_kernel]:
    kernel = triton.jit(fn)
    signature = {name: "constexpr" if name == "M" else "*fp32" if name.endswith("_ptr") else "i32"
                 for name in kernel.arg_names}
    for m in fused._SIZES:
        compiled = triton.compile(ASTSource(kernel, signature, {"M": m}), target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": fused._num_warps(m)})
        assert compiled.asm["cubin"], (fn.__name__, m)
        print(fn.__name__, m, compiled.metadata.shared)
"""
SHARED_PER_BLOCK = 227 * 1024


def test_kernels_compile_for_the_gpu(monkeypatch, tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # a real compile, not a cache hit
    done = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    built = [line.split() for line in done.stdout.splitlines()]
    assert [(name, int(m)) for name, m, _ in built] == [(name, m) for name in ("_forward_kernel", "_backward_kernel")
                                                         for m in fused._SIZES]
    assert all(int(shared) <= SHARED_PER_BLOCK for _, _, shared in built), built
