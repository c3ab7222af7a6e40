"""Fused Triton kernels for Nystromformer's iterative pseudoinverse (eq. 16), forward and backward.

Same math as effbert.attention.nystrom.PinvStep (read its docstring first): per step P = A Z, T1 = 7I - P,
T2 = 15I - P T1, T3 = 13I - P T2, Z' = Z T3 / 4, and the backward through it with G = dL/dZ'. Eagerly that is
about 130 small kernel launches per layer per training step, so the layer is launch-bound on a GPU. Here the
whole chain is one launch forward and one backward, one program per (batch * head) m x m matrix, every product
on chip in true float32 (ieee, never tf32: the iteration is unstable in low precision). The forward keeps each
step's input Z_k, as the eager path does, and the backward recomputes P, T1, T2, T3 from it.

GPU speed is unmeasured so far; the tests run the kernels through Triton's CPU interpreter and compile them
for sm_90. There (ptxas -v), m = 64 at 8 warps uses all 255 registers a thread and spills: 628 bytes forward,
2.4 KB backward (to L1); 16 warps spill more, and m = 16 and 32 do not spill. Worth a look on the first GPU.
Kernels are compiled on first use (not at import): TRITON_INTERPRET=1 set before that runs them on the CPU.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from effbert.attention.triton_kernels import available, jit, tl, triton  # noqa: F401 (available, triton: this module's API)

_SIZES = (16, 32, 64)  # tl.dot needs tiles of at least 16; 64 x 64 float32 tiles still fit in registers



def supported(m: int) -> bool:
    """Whether the kernels handle m x m matrices (m = number of landmarks)."""
    return m in _SIZES



def _num_warps(m: int) -> int:
    # a 64 x 64 float32 tile is 16 registers a thread at 8 warps; the backward holds about 9 of them at once
    return 8 if m >= 64 else 4


def _forward_kernel(a_ptr, z_ptr, out_ptr, saved_ptr, iterations, M: tl.constexpr):
    # one program: one m x m matrix through all the steps
    pid = tl.program_id(0).to(tl.int64)
    idx = tl.arange(0, M)
    tile = idx[:, None] * M + idx[None, :]
    eye = tl.where(idx[:, None] == idx[None, :], 1.0, 0.0)
    a = tl.load(a_ptr + pid * M * M + tile)
    z = tl.load(z_ptr + pid * M * M + tile)
    for k in range(iterations):
        tl.store(saved_ptr + (pid * iterations + k) * M * M + tile, z)  # Z_k, the backward's only activation
        p = tl.dot(a, z, input_precision="ieee")
        t = tl.dot(p, 7.0 * eye - p, input_precision="ieee")  # P T1
        t = tl.dot(p, 15.0 * eye - t, input_precision="ieee")  # P T2
        z = tl.dot(z, 13.0 * eye - t, input_precision="ieee") * 0.25
    tl.store(out_ptr + pid * M * M + tile, z)


def _backward_kernel(a_ptr, saved_ptr, grad_ptr, grad_a_ptr, grad_z_ptr, iterations, M: tl.constexpr):
    # one program: one matrix, the steps last to first; ordered so each temporary dies early (registers)
    pid = tl.program_id(0).to(tl.int64)
    idx = tl.arange(0, M)
    tile = idx[:, None] * M + idx[None, :]
    eye = tl.where(idx[:, None] == idx[None, :], 1.0, 0.0)
    a = tl.load(a_ptr + pid * M * M + tile)
    g = tl.load(grad_ptr + pid * M * M + tile)
    grad_a = tl.zeros((M, M), dtype=tl.float32)
    for i in range(iterations):
        z = tl.load(saved_ptr + (pid * iterations + iterations - 1 - i) * M * M + tile)
        p = tl.dot(a, z, input_precision="ieee")
        t1 = 7.0 * eye - p
        t2 = 15.0 * eye - tl.dot(p, t1, input_precision="ieee")
        t3 = 13.0 * eye - tl.dot(p, t2, input_precision="ieee")
        d_t3 = tl.dot(tl.trans(z), g, input_precision="ieee") * 0.25
        d_p = -tl.dot(d_t3, tl.trans(t2), input_precision="ieee")
        u = tl.dot(tl.trans(p), d_t3, input_precision="ieee")
        d_p = tl.dot(u, tl.trans(t1), d_p, input_precision="ieee")
        d_p -= tl.dot(tl.trans(p), u, input_precision="ieee")  # W = P^T U
        grad_a = tl.dot(d_p, tl.trans(z), grad_a, input_precision="ieee")
        g = tl.dot(g, tl.trans(t3), input_precision="ieee") * 0.25 + tl.dot(tl.trans(a), d_p, input_precision="ieee")
    tl.store(grad_a_ptr + pid * M * M + tile, grad_a)
    tl.store(grad_z_ptr + pid * M * M + tile, g)


class FusedPinv(torch.autograd.Function):
    """`iterations` PinvStep's on (batch, m, m) float32 matrices A and Z0, as one kernel each way.

    Returns Z after the steps; the backward gives dL/dA and dL/dZ0. m must be supported(m).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, z0: torch.Tensor, iterations: int) -> torch.Tensor:
        a, z0 = a.contiguous(), z0.contiguous()
        batch, m = a.shape[0], a.shape[-1]
        out = torch.empty_like(z0)
        saved = torch.empty(batch, max(iterations, 1), m, m, device=a.device, dtype=a.dtype)
        jit(_forward_kernel)[(batch,)](a, z0, out, saved, iterations, M=m, num_warps=_num_warps(m))
        ctx.save_for_backward(a, saved)
        ctx.iterations = iterations
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, saved = ctx.saved_tensors
        batch, m = a.shape[0], a.shape[-1]
        grad_a, grad_z = torch.empty_like(a), torch.empty_like(a)
        jit(_backward_kernel)[(batch,)](a, saved, grad.contiguous(), grad_a, grad_z, ctx.iterations, M=m,
                                         num_warps=_num_warps(m))
        return grad_a, grad_z, None
