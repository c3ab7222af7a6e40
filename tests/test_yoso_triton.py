"""YOSO's Triton kernels, run on the CPU by Triton's interpreter, against dense truth built from the codes.

Truth: B = (1/m) sum_f [q_code_i,f == k_code_j,f] as an (N, N) matrix, then the paper's formulas densely:
Y = B V, dL/dV = B^T G, dL/dQ = (tau/2) ((G V^T) * B) K, dL/dK = (tau/2) ((G V^T) * B)^T Q (masked);
hash codes from the explicit products x D1 H D2 H D3 H and x R.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

# Triton decides at import whether its kernels are interpreted; tests/conftest.py sets the switch for the
# session on machines without a GPU, before anything imports Triton
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the kernels' CPU tests need TRITON_INTERPRET=1 from the start of the session (tests/conftest.py "
                "sets it where no GPU is present)", allow_module_level=True)
triton = pytest.importorskip("triton")

from effbert.attention import yoso_triton as yt  # noqa: E402
from effbert.attention.yoso import fast_hash_signs  # noqa: E402

BH, N, D, M = 3, 37, 16, 4


def collisions(dst_codes: torch.Tensor, src_codes: torch.Tensor) -> torch.Tensor:
    """(BH, Nd, Ns) dense B = (1/m) sum_f [dst_i,f == src_j,f]."""
    return (dst_codes[:, :, None, :] == src_codes[:, None, :, :]).double().mean(-1)


def random_codes(bits: int, n: int = N, seed: int = 0) -> torch.Tensor:
    # few distinct codes a hash, so buckets are shared (and with many buckets some codes have no source)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, (BH, n, M), generator=g) % (1 << min(bits, 3)) * (1 << (bits - min(bits, 3)))


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def test_available_under_interpreter():
    assert yt.available("cpu")


# tau 3..5 index the 2^tau tables directly; 7 and 12 (2^tau > N) go through the renumbered slots
@pytest.mark.parametrize("bits", [3, 5, 7, 12])
def test_cumulate_matches_dense_collisions(bits):
    torch.manual_seed(bits)
    src, dst = random_codes(bits, seed=1), random_codes(bits, n=29, seed=2)
    dst[:, :5, 0] = (1 << bits) - 1  # odd: for tau > 3 a code no source has, which must read zeros
    values = torch.randn(BH, N, 5)
    got = yt.triton_cumulate(src, dst, values, 1 << bits)
    assert got.dtype == torch.float32 and got.shape == (BH, 29, 5)
    torch.testing.assert_close(got.double(), collisions(dst, src) @ values.double(), atol=1e-5, rtol=1e-5)


# bits 0: every row in one bucket, a run longer than a kernel's block of rows
@pytest.mark.parametrize("bits", [0, 4, 7])
def test_weighted_cumulate_matches_dense(bits):
    torch.manual_seed(bits)
    src, dst = random_codes(bits, seed=3), random_codes(bits, n=29, seed=4)
    w_src, x_src, w_dst = torch.randn(BH, N, 6), torch.randn(BH, N, D), torch.randn(BH, 29, 6)
    got = yt.triton_weighted_cumulate(src, dst, w_src, x_src, w_dst, 1 << bits)
    weights = (w_dst.double() @ w_src.double().transpose(1, 2)) * collisions(dst, src)
    torch.testing.assert_close(got.double(), weights @ x_src.double(), atol=1e-5, rtol=1e-5)


def test_chunked_tables_give_the_same_sums(monkeypatch):
    # a table budget of one element forces one chunk per hash
    src, dst, values = random_codes(4, seed=5), random_codes(4, seed=6), torch.randn(BH, N, D)
    monkeypatch.setattr(yt, "_TABLE_ELEMENTS", 1)
    got = yt.triton_cumulate(src, dst, values, 16)
    torch.testing.assert_close(got.double(), collisions(dst, src) @ values.double(), atol=1e-5, rtol=1e-5)


def test_lsh_cumulation_forward_and_paper_backward():
    bits = 4
    torch.manual_seed(0)
    q, k, v = unit(BH, N, D), unit(BH, N, D), torch.randn(BH, N, D)
    q_codes, k_codes = random_codes(bits, seed=7), random_codes(bits, seed=8)
    real = torch.arange(N) < torch.tensor([N, 30, 21])[:, None]  # (BH, N), True = real token
    grad = torch.randn(BH, N, D)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = yt.TritonLshCumulation.apply(*leaves, q_codes, k_codes, real, real, bits)
    out.backward(grad)

    qd, kd, vd, gd, rd = (t.double() for t in (q, k, v, grad, real[..., None]))
    b = collisions(q_codes, k_codes) * rd * rd.mT  # padded keys collide with nothing, padded queries read nothing
    g = gd * rd
    scores = (g @ vd.mT) * b * (bits / 2)  # (G V^T) * (tau/2) B
    truth = {"out": b @ vd, "q": scores @ kd, "k": scores.mT @ qd, "v": b.mT @ g}
    for name, got in zip(["out", "q", "k", "v"], [out, leaves[0].grad, leaves[1].grad, leaves[2].grad], strict=True):
        torch.testing.assert_close(got.double(), truth[name], atol=1e-5, rtol=1e-5, msg=name)


def test_no_mask_equals_all_real_mask():
    q, k, v = unit(BH, N, D), unit(BH, N, D), torch.randn(BH, N, D)
    q_codes, k_codes = random_codes(4, seed=9), random_codes(4, seed=10)
    ones = torch.ones(BH, N, dtype=torch.bool)
    a = yt.TritonLshCumulation.apply(q, k, v, q_codes, k_codes, None, None, 4)
    b = yt.TritonLshCumulation.apply(q, k, v, q_codes, k_codes, ones, ones, 4)
    torch.testing.assert_close(a, b)


def test_bf16_inputs_accumulate_in_float32():
    src, dst = random_codes(4, seed=11), random_codes(4, seed=12)
    values = torch.randn(BH, N, D).bfloat16()
    got = yt.triton_cumulate(src, dst, values, 16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), collisions(dst, src) @ values.double(), atol=1e-5, rtol=1e-5)


def sylvester(size: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64), h)
    return h


def pack(bits_positive: torch.Tensor) -> torch.Tensor:
    """(..., m, tau) bools -> codes, bit t worth 2^t."""
    return (bits_positive.long() << torch.arange(bits_positive.shape[-1])).sum(-1)


# small integer inputs keep every sum exact, so the signs (and codes) must agree bit for bit
@pytest.mark.parametrize(("dim", "num_hashes", "bits"), [(16, 4, 3), (12, 9, 5), (16, 20, 4)])
def test_fast_hash_codes_match_the_explicit_transform(dim, num_hashes, bits):
    torch.manual_seed(dim + num_hashes)
    q, k = (torch.randint(-3, 4, (BH, N, dim)).float() for _ in range(2))
    signs = fast_hash_signs(BH, dim, num_hashes, bits, q)[:, :, :, None]  # yoso.fast_hash's layout works too
    size, parts = signs.shape[-1], signs.shape[2]
    assert size == 1 << (max(dim, bits) - 1).bit_length() and set(signs.unique().tolist()) == {-1.0, 1.0}
    got = yt.triton_fast_hash(q, k, num_hashes, bits, signs)
    h, per_part = sylvester(size), size // bits
    for x, codes in zip((q, k), got, strict=True):
        y = F.pad(x.double(), (0, size - dim))[:, None]  # (BH, 1, N, size)
        for r in range(3):
            y = (y * signs[:, r].double()) @ h  # x D_r H, per part: (BH, parts, N, size)
        y = y[..., : per_part * bits].unflatten(-1, (per_part, bits)).transpose(1, 2)  # (BH, N, parts, per, tau)
        truth = pack(y.flatten(2, 3)[:, :, :num_hashes] > 0)
        assert codes.dtype == torch.int64 and codes.shape == (BH, N, num_hashes) and parts * per_part >= num_hashes
        assert torch.equal(codes, truth)


@pytest.mark.parametrize(("num_hashes", "bits"), [(4, 3), (20, 5)])
def test_gaussian_hash_codes_match_the_projection(num_hashes, bits):
    q, k = (torch.randint(-3, 4, (BH, N, D)).float() for _ in range(2))
    planes = torch.randint(-2, 3, (BH, D, num_hashes * bits)).float()
    got = yt.triton_gaussian_hash(q, k, num_hashes, bits, planes)
    for x, codes in zip((q, k), got, strict=True):
        assert torch.equal(codes, pack((x @ planes).unflatten(-1, (num_hashes, bits)) > 0))


@pytest.mark.parametrize("fast", [True, False])
def test_the_attention_gpu_path_is_the_cpu_path_with_the_same_draws(fast):
    """YosoAttention._triton (what a CUDA tensor takes) against the torch path from the same seed: the same
    codes, so the same outputs and paper's gradients up to float32 summation order."""
    from effbert.attention.yoso import LshCumulation, YosoAttention, fast_hash, gaussian_hash
    from effbert.config import parse_config

    cfg = parse_config({"model": {"hidden_size": 2 * D, "num_heads": 2, "attention": {
        "type": "yoso", "hash_bits": 4, "num_hashes": M, "fast_hash": fast}}}, "test").model
    attn = YosoAttention(cfg)
    g = torch.Generator().manual_seed(3)
    q, k = (F.normalize(torch.randn(BH, N, D, generator=g), dim=-1).requires_grad_() for _ in range(2))
    v = torch.randn(BH, N, D, generator=g, requires_grad=True)
    real = torch.arange(N)[None, :] < torch.tensor([N, 20, 9])[:, None]
    torch.manual_seed(0)
    got = attn._triton(q, k, v, real)
    torch.manual_seed(0)
    with torch.no_grad():
        codes = (fast_hash if fast else gaussian_hash)(q, k, M, 4)
    want = LshCumulation.apply(q, k, v, *codes, real, real, 4)
    upstream = torch.randn(BH, N, D, generator=g)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), upstream), torch.autograd.grad(want, (q, k, v), upstream),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# the interpreter runs Python, so it lets through what Triton's compiler refuses: build each kernel for sm_90
# (H100/H200) down to a cubin with the ptxas in Triton's wheel, no GPU needed; in a fresh process, since this
# one imported Triton in interpreter mode
COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import ASTSource
from effbert.attention import yoso_triton as yt

pointers = {"slot_ptr": "*i64", "codes_ptr": "*i64", "src_order_ptr": "*i64", "src_start_ptr": "*i64",
            "dst_order_ptr": "*i64", "dst_start_ptr": "*i64", "x_ptr": "*bf16", "val_ptr": "*bf16", "xs_ptr": "*bf16"}
sizes = {"BLOCK_N": 32, "BLOCK_C": 64, "BLOCK_D": 64, "BLOCK_A": 64, "SIZE": 64, "CODES": 16, "DIM": 64}
for fn in [yt._fast_hash_kernel, yt._gaussian_hash_kernel, yt._scatter_kernel, yt._gather_kernel, yt._segment_kernel]:
    kernel = triton.jit(fn)
    constants = {name: sizes[name] for name in kernel.arg_names if name in sizes}
    signature = {name: "constexpr" if name in sizes else pointers.get(name, "*fp32") if name.endswith("_ptr")
                 else "i32" for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"], fn.__name__
    print(fn.__name__)
"""


def test_kernels_compile_for_the_gpu(monkeypatch, tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # a real compile, not a cache hit
    done = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.split()) == 5
