"""Triton kernels for YOSO's sampled path: hash codes, bucket cumulation, and the paper's backward.

Same math as effbert.attention.yoso (read its docstring first); here each step is one GPU pass:

    hashing   codes (BH, N, m) int64 in [0, 2^tau), bit t of hash f worth 2^t, from the caller's random draws:
              fast      sign(H D3 H D2 H D1 x), x zero-padded to a power of two `size`, `size // tau` codes a part
              gaussian  sign(x . r_{f,t}) for planes r (BH, D, m * tau)
    cumulate  out_i = (1/m) sum_f sum_{j: src_j,f = dst_i,f} values_j                  = (1/m) sum_f B_f values
    weighted  out_i = (1/m) sum_f sum_{j: src_j,f = dst_i,f} (w_dst_i . w_src_j) x_j   = ((W_d W_s^T) * B) X

cumulate: a scatter (each source row atomically adds into its bucket's row of a float32 table per batch-head
row and hash) then a gather (each destination sums its buckets over the hashes); tables are built a chunk of
hashes at a time below _TABLE_ELEMENTS, so memory is O(n). weighted: the same sum regrouped by bucket; rows
sorted by bucket, one program per (batch-head row, hash, bucket) forms T = sum_{j in bucket} w_src_j x_j^T
(A x D, in registers, by tensor-core products) and adds w_dst_i T to each destination of the bucket: work
O(m n A D), memory O(m n). With 2^tau > N the tables would be mostly empty (and huge for large tau), so codes
are first renumbered per (batch-head, hash) by rank among the source codes (a sort): at most N non-empty
slots, the same collisions; a destination code no source has reads nothing (slot -1).

Atomics make the float sums' order, hence the last bits, vary from run to run on the GPU.
Kernels are compiled on first use (not at import): TRITON_INTERPRET=1 set before that runs them on the CPU.

Differences from the papers' code: docs/implementations.md.
"""

from __future__ import annotations

import torch

from effbert.attention.triton_kernels import available, jit, tl, triton  # noqa: F401 (available, triton: this module's API)
from effbert.attention.yoso import fast_hash_shape, sylvester

# the largest bucket table (float32 elements) one chunk of hashes builds: 256 MiB
_TABLE_ELEMENTS = 1 << 26
_BLOCK_N = 32


def _pow2(x: int, least: int = 16) -> int:
    return max(least, 1 << (max(x, 1) - 1).bit_length())


# ---- hashing ----

def _fast_hash_kernel(x_ptr, signs_ptr, h_ptr, codes_ptr, n, d, size, bits, per_part, parts, num_hashes,
                      SIZE: tl.constexpr, CODES: tl.constexpr, BLOCK_N: tl.constexpr):
    # one program: a block of rows of one batch-head row, one part (one draw of D1, D2, D3)
    row_id = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    rows = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, SIZE)
    live = rows < n
    # zero-padding to SIZE (>= size, >= 16 for tl.dot) keeps every output column < size exact
    y = tl.load(x_ptr + (row_id * n + rows[:, None]) * d + cols[None, :],
                mask=live[:, None] & (cols[None, :] < d), other=0.0).to(tl.float32)
    had = tl.load(h_ptr + cols[:, None] * size + cols[None, :],
                  mask=(cols[:, None] < size) & (cols[None, :] < size), other=0.0)
    for r in tl.static_range(3):
        s = tl.load(signs_ptr + ((row_id * 3 + r) * parts + part) * size + cols, mask=cols < size, other=0.0)
        # ieee: tf32 rounding would flip the signs of small outputs against the float32 reference
        y = tl.dot(y * s[None, :], had, input_precision="ieee")
    positive = tl.where((y > 0) & (cols[None, :] < per_part * bits), 1.0, 0.0)
    # packing as a product: column p of `pack` holds 2^t at row p * tau + t (powers of two sum exactly in float32)
    t = cols[:, None] - tl.arange(0, CODES)[None, :] * bits
    pack = tl.where((t >= 0) & (t < bits), tl.exp2(t.to(tl.float32)), 0.0)
    codes = tl.dot(positive, pack, input_precision="ieee")
    f = part * per_part + tl.arange(0, CODES)
    ok = live[:, None] & (tl.arange(0, CODES)[None, :] < per_part) & (f[None, :] < num_hashes)
    tl.store(codes_ptr + (row_id * n + rows[:, None]) * num_hashes + f[None, :], codes.to(tl.int64), mask=ok)


def _gaussian_hash_kernel(x_ptr, planes_ptr, codes_ptr, n, d, bits, num_hashes, per_program,
                          DIM: tl.constexpr, SIZE: tl.constexpr, CODES: tl.constexpr, BLOCK_N: tl.constexpr):
    # one program: a block of rows of one batch-head row, `per_program` hashes (their per_program * tau planes)
    row_id = tl.program_id(0).to(tl.int64)
    group = tl.program_id(1)
    rows = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, DIM)
    cols = tl.arange(0, SIZE)
    live = rows < n
    width = num_hashes * bits
    plane = group * per_program * bits + cols
    x = tl.load(x_ptr + (row_id * n + rows[:, None]) * d + dims[None, :],
                mask=live[:, None] & (dims[None, :] < d), other=0.0).to(tl.float32)
    planes = tl.load(planes_ptr + (row_id * d + dims[:, None]) * width + plane[None, :],
                     mask=(dims[:, None] < d) & (cols[None, :] < per_program * bits) & (plane[None, :] < width),
                     other=0.0).to(tl.float32)
    y = tl.dot(x, planes, input_precision="ieee")
    positive = tl.where(y > 0, 1.0, 0.0)
    t = cols[:, None] - tl.arange(0, CODES)[None, :] * bits  # packing as in _fast_hash_kernel
    pack = tl.where((t >= 0) & (t < bits), tl.exp2(t.to(tl.float32)), 0.0)
    codes = tl.dot(positive, pack, input_precision="ieee")
    f = group * per_program + tl.arange(0, CODES)
    ok = live[:, None] & (tl.arange(0, CODES)[None, :] < per_program) & (f[None, :] < num_hashes)
    tl.store(codes_ptr + (row_id * n + rows[:, None]) * num_hashes + f[None, :], codes.to(tl.int64), mask=ok)


def triton_fast_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int,
                     signs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (BH, N, m) of q and k (BH, N, D) by sign(H D3 H D2 H D1 x), as yoso.fast_hash, with the caller's signs.

    signs: (BH, 3, parts, size) or yoso.fast_hash's (BH, 3, parts, 1, size) +-1 draws (size the power of two
    >= max(D, tau), parts = ceil(m / (size // tau))), e.g. from yoso.fast_hash_signs.
    """
    if bits > 24:
        raise ValueError(f"hash_bits={bits}: codes are packed in float32, exact up to 24 bits")
    bh, _, d = q.shape
    size, per_part, parts = fast_hash_shape(d, num_hashes, bits)
    signs = signs.reshape(bh, 3, parts, size).float().contiguous()
    had = sylvester(size, signs)
    kernel = jit(_fast_hash_kernel)
    out = []
    for x in (q, k):
        n = x.shape[1]
        codes = torch.empty(bh, n, num_hashes, dtype=torch.int64, device=x.device)
        grid = (bh, parts, triton.cdiv(n, _BLOCK_N))
        kernel[grid](x.contiguous(), signs, had, codes, n, d, size, bits, per_part, parts, num_hashes,
                     SIZE=_pow2(size), CODES=_pow2(per_part), BLOCK_N=_BLOCK_N)
        out.append(codes)
    return out[0], out[1]


def triton_gaussian_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int,
                         planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (BH, N, m) of q and k (BH, N, D) by sign(x . r_{f,t}), as yoso.gaussian_hash, with the caller's planes.

    planes: (BH, D, m * tau), column f * tau + t the plane of bit t of hash f (yoso.gaussian_hash's layout).
    """
    if bits > 24:
        raise ValueError(f"hash_bits={bits}: codes are packed in float32, exact up to 24 bits")
    bh, _, d = q.shape
    per_program = max(1, 64 // bits)  # hashes a program packs: up to 64 plane columns
    planes = planes.float().contiguous()
    kernel = jit(_gaussian_hash_kernel)
    out = []
    for x in (q, k):
        n = x.shape[1]
        codes = torch.empty(bh, n, num_hashes, dtype=torch.int64, device=x.device)
        grid = (bh, triton.cdiv(num_hashes, per_program), triton.cdiv(n, _BLOCK_N))
        kernel[grid](x.contiguous(), planes, codes, n, d, bits, num_hashes, per_program,
                     DIM=_pow2(d), SIZE=_pow2(per_program * bits), CODES=_pow2(per_program), BLOCK_N=_BLOCK_N)
        out.append(codes)
    return out[0], out[1]


# ---- bucket slots ----

def _slots(src_codes: torch.Tensor, dst_codes: torch.Tensor, num_buckets: int):
    """Table rows for the codes: the codes themselves, or with more buckets than sources their rank (see top)."""
    n_src = src_codes.shape[1]
    if num_buckets <= n_src:
        return src_codes.contiguous(), dst_codes.contiguous(), num_buckets
    src_t = src_codes.transpose(1, 2).contiguous()  # (BH, m, Ns)
    dst_t = dst_codes.transpose(1, 2).contiguous()
    ordered = src_t.sort(-1).values
    src_slot = torch.searchsorted(ordered, src_t)  # index of the first equal code: one slot per distinct code
    at = torch.searchsorted(ordered, dst_t).clamp(max=n_src - 1)
    dst_slot = torch.where(ordered.gather(-1, at) == dst_t, at, -1)
    return src_slot.transpose(1, 2).contiguous(), dst_slot.transpose(1, 2).contiguous(), n_src


# ---- cumulation kernels ----

def _scatter_kernel(slot_ptr, val_ptr, table_ptr, n, m, c, f0, hashes, slots,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # one program: rows of one (batch-head row, hash) into that hash's table
    pid = tl.program_id(0).to(tl.int64)
    row_id, f = pid // hashes, pid % hashes
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    slot = tl.load(slot_ptr + (row_id * n + rows) * m + f0 + f, mask=rows < n, other=-1)
    live = (slot >= 0)[:, None] & (cols[None, :] < c)
    vals = tl.load(val_ptr + (row_id * n + rows[:, None]) * c + cols[None, :], mask=live, other=0.0)
    tl.atomic_add(table_ptr + (pid * slots + slot[:, None]) * c + cols[None, :], vals.to(tl.float32), mask=live)


def _gather_kernel(slot_ptr, table_ptr, out_ptr, n, m, c, f0, hashes, slots,
                   BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # one program: rows of one batch-head row, summing their buckets over this chunk's hashes
    row_id = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for f in range(hashes):
        slot = tl.load(slot_ptr + (row_id * n + rows) * m + f0 + f, mask=rows < n, other=-1)
        live = (slot >= 0)[:, None] & (cols[None, :] < c)
        acc += tl.load(table_ptr + ((row_id * hashes + f) * slots + slot[:, None]) * c + cols[None, :],
                       mask=live, other=0.0)
    at = out_ptr + (row_id * n + rows[:, None]) * c + cols[None, :]
    live = (rows < n)[:, None] & (cols[None, :] < c)
    tl.store(at, tl.load(at, mask=live, other=0.0) + acc, mask=live)


def _segment_kernel(src_order_ptr, src_start_ptr, dst_order_ptr, dst_start_ptr, ws_ptr, xs_ptr, wd_ptr, out_ptr,
                    n_src, n_dst, m, a_dim, d, slots, first,
                    BLOCK_N: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_D: tl.constexpr):
    # one program: one slot of one (batch-head row, hash); its sources and destinations are contiguous runs of
    # the orders, so T = W_s^T X_s over the run (A x D, in registers), then out_i += w_i T for its destinations
    slot = tl.program_id(0).to(tl.int64)
    row_f = tl.program_id(1).to(tl.int64) + first  # batch-head row * m + hash
    row_id = row_f // m
    seg = row_f * (slots + 1) + slot
    src_begin, src_end = tl.load(src_start_ptr + seg), tl.load(src_start_ptr + seg + 1)
    dst_begin, dst_end = tl.load(dst_start_ptr + seg), tl.load(dst_start_ptr + seg + 1)
    dst_end = tl.where(src_end > src_begin, dst_end, dst_begin)  # an empty bucket adds nothing
    a_cols = tl.arange(0, BLOCK_A)
    d_cols = tl.arange(0, BLOCK_D)
    table = tl.zeros((BLOCK_A, BLOCK_D), dtype=tl.float32)
    for start in range(src_begin, src_end, BLOCK_N):
        at = start + tl.arange(0, BLOCK_N)
        live = at < src_end
        j = row_id * n_src + tl.load(src_order_ptr + row_f * n_src + at, mask=live, other=0)
        w = tl.load(ws_ptr + j[:, None] * a_dim + a_cols[None, :], mask=live[:, None] & (a_cols[None, :] < a_dim),
                    other=0.0).to(tl.float32)
        x = tl.load(xs_ptr + j[:, None] * d + d_cols[None, :], mask=live[:, None] & (d_cols[None, :] < d),
                    other=0.0).to(tl.float32)
        table += tl.dot(tl.trans(w), x, input_precision="ieee")
    for start in range(dst_begin, dst_end, BLOCK_N):
        at = start + tl.arange(0, BLOCK_N)
        live = at < dst_end
        i = row_id * n_dst + tl.load(dst_order_ptr + row_f * n_dst + at, mask=live, other=0)
        w = tl.load(wd_ptr + i[:, None] * a_dim + a_cols[None, :], mask=live[:, None] & (a_cols[None, :] < a_dim),
                    other=0.0).to(tl.float32)
        # other hashes' programs add into the same rows
        tl.atomic_add(out_ptr + i[:, None] * d + d_cols[None, :], tl.dot(w, table, input_precision="ieee"),
                      mask=live[:, None] & (d_cols[None, :] < d))


def _runs(slots_of: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (BH, N, m) grouped by slot: the order (BH * m, N) and the run starts (BH * m, slots + 1).

    Rows of slot s are order[starts[s]:starts[s + 1]]; slot -1 (a code no source has) sorts first, in no run.
    """
    by_hash = slots_of.transpose(1, 2).flatten(0, 1)  # (BH * m, N)
    ordered, order = by_hash.sort(-1)
    bounds = torch.arange(slots + 1, device=by_hash.device).expand(by_hash.shape[0], -1).contiguous()
    return order.contiguous(), torch.searchsorted(ordered.contiguous(), bounds).contiguous()


def triton_cumulate(src_codes: torch.Tensor, dst_codes: torch.Tensor, values: torch.Tensor,
                    num_buckets: int) -> torch.Tensor:
    """(1/m) sum_f B_f values, B_f the collisions of hash f.

    src_codes (BH, Ns, m), dst_codes (BH, Nd, m), values (BH, Ns, C)
    -> float32 (BH, Nd, C)."""
    bh, n_src, m = src_codes.shape
    n_dst, c = dst_codes.shape[1], values.shape[-1]
    src, dst, slots = _slots(src_codes, dst_codes, num_buckets)
    values = values.contiguous()
    out = torch.zeros(bh, n_dst, c, device=values.device, dtype=torch.float32)
    block_c = min(_pow2(c), 128)
    step = max(1, min(m, _TABLE_ELEMENTS // max(1, bh * slots * c)))
    scatter, gather = jit(_scatter_kernel), jit(_gather_kernel)
    for f0 in range(0, m, step):
        h = min(step, m - f0)
        table = torch.zeros(bh * h * slots * c, device=values.device, dtype=torch.float32)
        scatter[(bh * h, triton.cdiv(n_src, _BLOCK_N), triton.cdiv(c, block_c))](
            src, values, table, n_src, m, c, f0, h, slots, BLOCK_N=_BLOCK_N, BLOCK_C=block_c)
        gather[(bh, triton.cdiv(n_dst, _BLOCK_N), triton.cdiv(c, block_c))](
            dst, table, out, n_dst, m, c, f0, h, slots, BLOCK_N=_BLOCK_N, BLOCK_C=block_c)
    return out / m


def triton_weighted_cumulate(src_codes: torch.Tensor, dst_codes: torch.Tensor, src_weight: torch.Tensor,
                             src_values: torch.Tensor, dst_weight: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """((W_d W_s^T) * B) X_s with B = (1/m) sum_f B_f: the pieces of the paper's backward for dL/dQ, dL/dK.

    src_weight (BH, Ns, A), src_values (BH, Ns, D), dst_weight (BH, Nd, A) -> float32 (BH, Nd, D).
    Per (batch-head row, hash, bucket) one program sums W_s^T X_s over the bucket's sources by tensor-core
    products and hands w_i (W_s^T X_s) to its destinations: no table in memory, O(m n) besides the inputs.
    """
    bh, n_src, m = src_codes.shape
    n_dst, a_dim, d = dst_codes.shape[1], src_weight.shape[-1], src_values.shape[-1]
    src, dst, slots = _slots(src_codes, dst_codes, num_buckets)
    src_order, src_start = _runs(src, slots)
    dst_order, dst_start = _runs(dst, slots)
    out = torch.zeros(bh, n_dst, d, device=src_values.device, dtype=torch.float32)
    kernel = jit(_segment_kernel)
    rows = bh * m
    for first in range(0, rows, 65535):  # the grid's second axis holds at most 65535 programs
        kernel[(slots, min(65535, rows - first))](
            src_order, src_start, dst_order, dst_start, src_weight.contiguous(), src_values.contiguous(),
            dst_weight.contiguous(), out, n_src, n_dst, m, a_dim, d, slots, first,
            BLOCK_N=_BLOCK_N, BLOCK_A=_pow2(a_dim), BLOCK_D=_pow2(d))
    return out / m


class TritonLshCumulation(torch.autograd.Function):
    """yoso.LshCumulation on these kernels: Y = B V (masked) and the paper's backward (see LshCumulation).

    Same arguments: q, k, v (BH, N, D), codes (BH, N, m), q_mask / k_mask (BH, N) bool, True = real token
    (or (BH, N, 1) 0/1), or None (every token real). Outputs and gradients come back in v's / the inputs'
    dtypes, computed in float32.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_codes: torch.Tensor,
                k_codes: torch.Tensor, q_mask: torch.Tensor | None, k_mask: torch.Tensor | None,
                bits: int) -> torch.Tensor:
        ctx.save_for_backward(q, k, v, q_codes, k_codes, q_mask, k_mask)
        ctx.bits = bits
        out = triton_cumulate(k_codes, q_codes, _masked(v, k_mask), 1 << bits)
        return _masked(out, q_mask).to(v.dtype)  # (BH, Nq, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, q_codes, k_codes, q_mask, k_mask = ctx.saved_tensors
        buckets, half_tau = 1 << ctx.bits, ctx.bits / 2
        grad = _masked(grad, q_mask)
        v_real = _masked(v, k_mask)
        grad_q = grad_k = grad_v = None
        if ctx.needs_input_grad[2]:  # B^T G
            grad_v = _masked(triton_cumulate(q_codes, k_codes, grad, buckets), k_mask).to(v.dtype)
        if ctx.needs_input_grad[0]:  # ((G V^T) * (tau/2) B) K
            grad_q = half_tau * triton_weighted_cumulate(k_codes, q_codes, v_real, k, grad, buckets)
            grad_q = _masked(grad_q, q_mask).to(q.dtype)
        if ctx.needs_input_grad[1]:  # ((G V^T) * (tau/2) B)^T Q
            grad_k = half_tau * triton_weighted_cumulate(q_codes, k_codes, grad, q, v_real, buckets)
            grad_k = _masked(grad_k, k_mask).to(k.dtype)
        return grad_q, grad_k, grad_v, None, None, None, None, None


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (BH, N, C) with the rows of padded tokens zeroed; mask (BH, N) bool or (BH, N, 1), or None (all real)."""
    if mask is None:
        return x
    return x * (mask[..., None] if mask.dim() < x.dim() else mask).to(x.dtype)
