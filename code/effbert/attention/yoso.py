"""YOSO attention (Zeng et al., "You Only Sample (Almost) Once", ICML 2021): Bernoulli sampling by LSH.

With q, k L2-normalised, a hash h built from tau random hyperplanes makes the collision indicator
B_ij = 1[h(q_i) = h(k_j)] a Bernoulli variable of mean

    E[B_ij] = (1 - arccos(q_i . k_j) / pi) ** tau                     (the YOSO kernel)

so E[B] V is estimated by averaging m hashes: (1/m) sum_f B_f V. Each sample costs O(n): the values of the
keys are summed per bucket and every query reads its own bucket's sum. The output is L2-normalised per head
(the authors' code and HuggingFace's port both do this; it stands in for the softmax row normaliser). Variants:
    YOSO-E  the expectation E[B] V computed exactly, O(n^2), differentiated by autograd;
    YOSO-C  plus a depthwise convolution over the sequence on V (as Nystromformer), added after the norm.

Hashing, as in the authors' code (yoso_v1): "gaussian" bit t of hash f is sign(x . r_{f,t}) with r ~ N(0, I);
"fast" replaces the Gaussian matrix by H D3 H D2 H D1 (H a Hadamard matrix, D random +-1 diagonals), whose
size-d output gives d // tau hash codes per draw ("part"). H is applied as a fast Walsh-Hadamard transform:
butterfly stages of O(d) down to blocks of 8, then H_8 on each block, O(d log d) per vector, no d x d matrix.
Code = sum_t bit_t * 2^t.

The sampled forward has zero gradient w.r.t. q and k almost everywhere, so YOSO defines its own backward
(see LshCumulation): besides B^T G it needs the bilinear sums sum_{j ~ i} (g_i . v_j) k_j (j ~ i: same bucket).

How the sampled path is computed (all hashes of all batch-heads in the same tensor ops, a few hashes at a
time): every (token, hash) pair of a real token is an item; one sort of the items by (batch-head, hash, code)
numbers the buckets that occur (at most one per item, so no table of 2^tau rows is ever built: tau up to 24
costs nothing extra) and ranks each item within its bucket, queries and keys apart. Each bucket with a query
and a key then gets slots:
    a bucket of at most w queries and w keys, w <= 4d/3, gets one w x w block, w the narrowest of a few widths
    (4, 8, ..., 64) that fits. Per block, by batched matmuls: B V and B^T G are the block's sums of V and G
    spread over its other side; the bilinear terms go pairwise, S = G V^T, then S K and S^T Q: O(w d) per item.
    a larger bucket is cut into pieces of w items (w the widest width): its sums and its d x d tables
    sum V_p^T K_p, sum G_p^T Q_p are summed over its pieces and read back per piece (G_p (sum V^T K),
    V_p (sum G^T Q)): O(d^2) per item whatever the bucket's size.
Blocks cost 3 w^2 d multiply-adds against tables' 4 w d^2, hence w <= 4d/3. So skewed codes (a trained model's
buckets are far from uniform) cost at most O(m n d^2), never O(n^2), and uniform ones O(m n w d). Slots are
gathered and scattered in batches of bounded size (memory O(n) in the sequence length) into reused buffers.
Padded tokens are no items: they add to no bucket, read nothing and get no gradient; padded queries output 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.conv_skip import ConvSkip
from effbert.config import ModelConfig

# the largest intermediate (elements) one step should build: hashes, tokens, blocks and pieces are processed in
# batches below it (a single hash or large bucket may exceed it), so memory stays O(n) in the sequence length
# at any batch size; small enough to stay in cache, and below glibc's mmap threshold when set to 1 MiB
_BATCH_ELEMENTS = 1 << 17
_BLOCK_WIDTHS = (4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)  # pairwise blocks, w x w


class _Scratch:
    """Reusable flat buffers by name. The block loops write their intermediates into views of these (out=)
    rather than allocating fresh ones each step, which an allocator that returns freed memory to the OS
    (glibc with a fixed mmap threshold, as `effbert bench` sets it) would fault in again at every step."""

    def __init__(self, like: torch.Tensor):
        self.like, self.buffers = like, {}

    def __call__(self, name: str, *shape: int) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[name] = self.like.new_empty(max(numel, _BATCH_ELEMENTS))
        return buffer[:numel].view(shape)


# ---- hashing: integer codes in [0, 2^tau) for queries and keys, from one shared draw ----

def _to_codes(positive: torch.Tensor) -> torch.Tensor:
    """(..., m, tau) bools -> (..., m) int64 codes, bit t worth 2^t, summed by a matmul in floating point:
    sums of distinct powers of two below 2^24 are exact in float32 (tau <= 24; float64 beyond)."""
    dtype = torch.float32 if positive.shape[-1] <= 24 else torch.float64
    weights = 2.0 ** torch.arange(positive.shape[-1], device=positive.device, dtype=dtype)
    return (positive.to(dtype) @ weights).long()


def gaussian_planes(bh: int, d: int, num_hashes: int, bits: int, like: torch.Tensor) -> torch.Tensor:
    """The random hyperplanes of Gaussian hashing, (BH, D, m * tau), column f * tau + t the plane of bit t of
    hash f: one N(0, I) matrix per batch-head row (the draw both the CPU and the GPU path hash with). Drawn in
    float32 whatever the inputs' dtype, so that one seed gives one set of planes (a float64 draw is another)."""
    return torch.randn(bh, d, num_hashes * bits, device=like.device).to(like.dtype)


def gaussian_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-hyperplane codes (BH, N, m) for q and k (BH, N, D): one N(0, I) matrix per batch-head row."""
    bh, _, d = q.shape
    planes = gaussian_planes(bh, d, num_hashes, bits, q)
    return tuple(_to_codes((x @ planes).unflatten(-1, (num_hashes, bits)) > 0) for x in (q, k))


def sylvester(size: int, like: torch.Tensor) -> torch.Tensor:
    """Sylvester's unnormalised +-1 Hadamard matrix, size a power of two (the transform's base case, 8 x 8 at
    most; the GPU kernel's whole H)."""
    h = like.new_ones(1, 1)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _hadamard(x: torch.Tensor, out: torch.Tensor, base: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """out = x @ H for x, out (rows, size), size a power of two; the butterflies ping-pong between scratch
    buffers down to blocks the size of base (Sylvester's matrix of min(size, 8)), which one matmul finishes."""
    half, turn = x.shape[-1] // 2, 0
    while half >= base.shape[0]:
        a, b = x.unflatten(-1, (-1, 2, half)).unbind(-2)
        x = scratch(f"butterfly{turn}", *x.shape)
        za, zb = x.unflatten(-1, (-1, 2, half)).unbind(-2)
        torch.add(a, b, out=za)
        torch.sub(a, b, out=zb)
        half, turn = half // 2, 1 - turn
    torch.mm(x.reshape(-1, base.shape[0]), base, out=out.view(-1, base.shape[0]))
    return out


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """x @ H along the last dim (a power of two), H Sylvester's unnormalised +-1 Hadamard matrix, in O(d log d).

    H_2s = [[H_s, H_s], [H_s, -H_s]], so [a, b] H_2s = [(a + b) H_s, (a - b) H_s]: one butterfly per stage,
    pairing entries half a block apart, the blocks halving from the whole row down to 8 entries; the last
    three stages are one product by H_8 on each block of 8 (the same sums, 8 per entry, in one matmul).
    Rows go in batches that stay in cache.
    """
    size = x.shape[-1]
    if size & (size - 1):
        raise ValueError(f"hadamard_transform needs a power-of-two size, got {size}")
    flat = x.reshape(-1, size)
    out, base, scratch = torch.empty_like(flat), sylvester(min(size, 8), x), _Scratch(flat)
    per_batch = max(1, _BATCH_ELEMENTS // size)
    for start in range(0, flat.shape[0], per_batch):
        _hadamard(flat[start:start + per_batch], out[start:start + per_batch], base, scratch)
    return out.view(x.shape)


def fast_hash_shape(d: int, num_hashes: int, bits: int) -> tuple[int, int, int]:
    """(size, per_part, parts) of fast hashing: inputs zero-padded to size, the power of two >= max(D, tau);
    each draw ("part") of the transform gives per_part = size // tau codes; parts = ceil(m / per_part)."""
    size = 1 << (max(d, bits) - 1).bit_length()
    per_part = size // bits
    return size, per_part, -(-num_hashes // per_part)


def fast_hash_signs(bh: int, d: int, num_hashes: int, bits: int, like: torch.Tensor) -> torch.Tensor:
    """The random +-1 diagonals D1, D2, D3 of fast hashing, (BH, 3, parts, size) in like's dtype: the draw
    both the CPU and the GPU path hash with."""
    size, _, parts = fast_hash_shape(d, num_hashes, bits)
    return torch.randint(0, 2, (bh, 3, parts, size), device=like.device).to(like.dtype) * 2 - 1


def fast_hash(q: torch.Tensor, k: torch.Tensor, num_hashes: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (BH, N, m) from sign(H D3 H D2 H D1 x), x zero-padded to a power of two >= max(D, tau).

    The authors' kernel needs D to be a power of two; zero-padding keeps every angle, so any D works here.
    Scaling by H is irrelevant to the signs, so H is left unnormalised. Tokens go in batches that stay in cache.
    """
    bh, n_q, d = q.shape
    size, per_part, parts = fast_hash_shape(d, num_hashes, bits)
    signs = fast_hash_signs(bh, d, num_hashes, bits, q)[:, :, :, None]  # (BH, 3, parts, 1, size)
    x = torch.cat((q, k), 1)  # (BH, Nq + Nk, D): one draw for both
    codes, base, scratch = [], sylvester(min(size, 8), q), _Scratch(q)
    per_batch = max(16, _BATCH_ELEMENTS // (bh * parts * size))
    for start in range(0, x.shape[1], per_batch):
        n = min(per_batch, x.shape[1] - start)
        y = scratch("padded", bh, 1, n, size)
        y[..., :d].copy_(x[:, None, start:start + n])
        y[..., d:].zero_()
        for r in range(3):
            scaled = torch.mul(y, signs[:, r], out=scratch("scaled", bh, parts, n, size))
            y = _hadamard(scaled.view(-1, size), scratch("transformed", bh * parts * n, size), base, scratch)
            y = y.view(bh, parts, n, size)
        y = y[..., : per_part * bits].unflatten(-1, (per_part, bits))  # (BH, parts, n, per_part, tau)
        y = y.transpose(1, 2).flatten(2, 3)[:, :, :num_hashes]  # (BH, n, m, tau)
        codes.append(_to_codes(y > 0))
    codes = torch.cat(codes, 1)
    return codes[:, :n_q], codes[:, n_q:]


# ---- buckets: one sort of the (token, hash) items of a chunk of hashes, then a slot layout ----

class Layout(NamedTuple):
    """Where the real items of a chunk of hashes go: slots[s] (side 0 queries, 1 keys) lists the flat (BH * N)
    row of every slot, empty slots pointing at the zero row appended after the last. First come the blocks,
    blocks = [(width w, first slot, count)], the same slots on both sides: each a w x w block holding one
    bucket with at most w queries and w keys. Then, from slot pieces_at on, the pieces of `width` slots of the
    larger buckets: pieces[l] (queries, keys) of large bucket l, buckets in the same order on both sides."""

    slots: tuple[torch.Tensor, torch.Tensor]
    blocks: list[tuple[int, int, int]]
    width: int
    pieces_at: int
    pieces: torch.Tensor


def bucket_layout(q_codes: torch.Tensor, k_codes: torch.Tensor, q_real: torch.Tensor | None,
                  k_real: torch.Tensor | None, bits: int, d: int) -> Layout:
    """The layout of codes (BH, Nq, h), (BH, Nk, h), whose token is real ((BH, N) bool masks; None: all are).

    One stable sort of the items' keys (batch-head, hash, code, side) numbers the buckets that occur and ranks
    every item within its bucket and side; a bucket with no query or no key collides with nothing and is dropped.
    """
    device = q_codes.device
    sorted_key, order, rows = _sort_items(q_codes, k_codes, q_real, k_real, bits)
    if sorted_key.numel() == 0:
        return Layout((rows[0], rows[1]), [], 1, 0, torch.zeros(0, 2, dtype=torch.long, device=device))
    bucket, rank, side, count = _rank_items(sorted_key)
    row = torch.cat(rows).index_select(0, order)
    paired = (count > 0).all(1)
    blocks, first, offset, cap, pieces, large = _place_buckets(count, paired, d)
    empty = (q_codes.shape[0] * q_codes.shape[1], k_codes.shape[0] * k_codes.shape[1])
    slots = []
    for s in (0, 1):
        slot = torch.full((offset + int(pieces[:, s].sum()) * cap,), empty[s], device=device)
        keep = ((side == s) & paired.index_select(0, bucket)).nonzero().squeeze(1)
        bucket_kept = bucket.index_select(0, keep)
        slot.index_copy_(0, first[:, s].index_select(0, bucket_kept) + rank.index_select(0, keep),
                         row.index_select(0, keep))
        slots.append(slot)
    return Layout((slots[0], slots[1]), blocks, cap, offset, pieces[large])


def _sort_items(q_codes: torch.Tensor, k_codes: torch.Tensor, q_real: torch.Tensor | None,
                k_real: torch.Tensor | None, bits: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The real (token, hash) items of both sides: their keys sorted (stable), the sort's order, and per side
    each item's flat (BH * N) row, in the unsorted order (queries first, then keys)."""
    bh, _, h = q_codes.shape
    device = q_codes.device
    group = torch.arange(bh * h, device=device).view(bh, 1, h)  # (batch-head, hash) -> b * h + f
    keys, rows = [], []
    for side, (codes, real) in enumerate(((q_codes, q_real), (k_codes, k_real))):
        n = codes.shape[1]
        key = (((group << bits) | codes) << 1) | side  # the side is the lowest bit: ranks count per side
        row = torch.arange(bh * n, device=device).view(bh, n, 1).expand(bh, n, h)
        if real is not None:
            key, row = key[real], row[real]
        keys.append(key.flatten())
        rows.append(row.flatten())
    sorted_key, order = torch.cat(keys).sort(stable=True)
    return sorted_key, order, rows


def _rank_items(sorted_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sorted item its bucket number, its rank within its bucket and side, and its side; and per bucket
    the number of items of each side, (U, 2)."""
    total = sorted_key.numel()
    device = sorted_key.device
    position = torch.arange(total, device=device)
    first_of_side = torch.ones(total, dtype=torch.bool, device=device)
    first_of_side[1:] = sorted_key[1:] != sorted_key[:-1]
    first_of_bucket = torch.ones(total, dtype=torch.bool, device=device)
    first_of_bucket[1:] = (sorted_key[1:] >> 1) != (sorted_key[:-1] >> 1)
    bucket = first_of_bucket.cumsum(0) - 1  # in sorted order
    rank = position - torch.where(first_of_side, position, 0).cummax(0).values
    side = sorted_key & 1
    count = torch.bincount(bucket * 2 + side, minlength=2 * (int(bucket[-1]) + 1)).view(-1, 2)  # (U, 2)
    return bucket, rank, side, count


def _place_buckets(count: torch.Tensor, paired: torch.Tensor,
                   d: int) -> tuple[list[tuple[int, int, int]], torch.Tensor, int, int, torch.Tensor, torch.Tensor]:
    """Where each paired bucket's slots start: (blocks, first slot per bucket and side (U, 2), where the pieces
    start, the piece width, pieces per bucket and side (U, 2), which buckets are large)."""
    device = count.device
    # a bucket that fits the widest block goes pairwise in the narrowest that fits; the widest is the last
    # width w where a block's 3 w^2 d multiply-adds beat tables' 4 w d^2 (a piece per side, built and read)
    size = count.max(1).values
    cap = max([_BLOCK_WIDTHS[0], *(w for w in _BLOCK_WIDTHS if 3 * w <= 4 * d)])
    fits = paired & (size <= cap)
    large = paired & ~fits
    width_class = torch.searchsorted(torch.tensor(_BLOCK_WIDTHS, device=device), size)
    first = torch.zeros(count.shape[0], dtype=torch.long, device=device)
    blocks, offset = [], 0
    for c, w in enumerate(_BLOCK_WIDTHS):
        members = fits & (width_class == c)
        num = int(members.sum())
        if num:
            first = torch.where(members, offset + (members.cumsum(0) - 1) * w, first)
            blocks.append((w, offset, num))
            offset += num * w
    pieces = -(-count // cap) * large[:, None]  # (U, 2) pieces of `cap` items per large bucket and side
    first = torch.where(fits[:, None], first[:, None], offset + (pieces.cumsum(0) - pieces) * cap)  # (U, 2)
    return blocks, first, offset, cap, pieces, large


def _steps(lay: Layout, d: int):
    """Batches of whole blocks of one width, then of whole large buckets, each below _BATCH_ELEMENTS per
    intermediate: (w, query slots, key slots, None) for blocks; for large buckets also each piece's bucket in
    the batch, per side."""
    for w, first, num in lay.blocks:
        per_batch = max(1, _BATCH_ELEMENTS // (w * max(w, d)))
        for start in range(first, first + num * w, per_batch * w):
            stop = min(start + per_batch * w, first + num * w)
            yield w, lay.slots[0][start:stop], lay.slots[1][start:stop], None
    if not lay.pieces.numel():
        return
    w = lay.width
    per_batch = max(1, _BATCH_ELEMENTS // (d * max(w, d)))
    batch = (lay.pieces.sum(1).cumsum(0) - 1) // per_batch  # a bucket of more pieces makes a batch of its own
    bounds = [0, *torch.unique_consecutive(batch, return_counts=True)[1].cumsum(0).tolist()]
    starts = (F.pad(lay.pieces.cumsum(0), (0, 0, 1, 0)) * w).tolist()  # (L + 1, 2) slot offsets
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        i, j = (lay.slots[s][lay.pieces_at + starts[lo][s]:lay.pieces_at + starts[hi][s]] for s in (0, 1))
        bucket = torch.arange(hi - lo, device=i.device)
        yield w, i, j, [torch.repeat_interleave(bucket, lay.pieces[lo:hi, s]) for s in (0, 1)]


def _gather(x: torch.Tensor, rows: torch.Tensor, w: int, scratch: _Scratch, name: str) -> torch.Tensor:
    """x's rows into (len(rows) // w, w, D) slots, in a scratch buffer."""
    return torch.index_select(x, 0, rows, out=scratch(name, rows.numel(), x.shape[-1])).view(-1, w, x.shape[-1])


def _spread(sums: torch.Tensor, w: int, scratch: _Scratch) -> torch.Tensor:
    """(P, D) -> (P * w, D): each row repeated for the w slots of its block or piece, in a scratch buffer."""
    out = scratch("spread", sums.shape[0], w, sums.shape[-1])
    out.copy_(sums[:, None].expand_as(out))
    return out.view(-1, sums.shape[-1])


def _per_bucket(sums: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, buckets: int) -> torch.Tensor:
    """Piece sums (P, D) added up per large bucket (src: each piece's bucket) and read back by the other
    side's pieces (dst: theirs)."""
    return sums.new_zeros(buckets, sums.shape[-1]).index_add_(0, src, sums)[dst]


def bucket_sums(lay: Layout, v: torch.Tensor, out: torch.Tensor, scratch: _Scratch) -> None:
    """out[i] += sum_{keys j in query i's bucket} v[j], for every hash of the layout: B_f V summed over f.

    v (BH * Nk + 1, D), out (BH * Nq + 1, D): flat rows with the zero row last (out's collects junk).
    """
    d = v.shape[-1]
    for w, i, j, local in _steps(lay, d):
        vb = _gather(v, j, w, scratch, "v")
        sums = torch.sum(vb, 1, out=scratch("sums", vb.shape[0], d))  # per block or key piece
        if local is not None:  # per large bucket, read by its query pieces
            sums = _per_bucket(sums, local[1], local[0], int(local[0][-1]) + 1)
        out.index_add_(0, i, _spread(sums, w, scratch))


def backward_sums(lay: Layout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                  out_q: torch.Tensor | None, out_k: torch.Tensor | None, out_v: torch.Tensor,
                  scratch: _Scratch) -> None:
    """Over every hash of the layout: out_v[j] += sum_{i ~ j} g_i (B^T G), and unless out_q, out_k are None,
    out_q[i] += sum_{j ~ i} (g_i . v_j) k_j, out_k[j] += sum_{i ~ j} (g_i . v_j) q_i (the bilinear terms).

    q, g, out_q (BH * Nq + 1, D) and k, v, out_k, out_v (BH * Nk + 1, D), flat with the zero (junk) row last.
    Buckets that fit a block: S = G V^T within it, then S K and S^T Q. Large ones: tables sum V_p^T K_p and
    sum G_p^T Q_p over their pieces, read as G_p (sum V^T K) and V_p (sum G^T Q).
    """
    d = q.shape[-1]
    bilinear = out_q is not None
    for w, i, j, local in _steps(lay, d):
        gb = _gather(g, i, w, scratch, "g")  # (blocks or query pieces, w, D)
        sums = torch.sum(gb, 1, out=scratch("sums", gb.shape[0], d))
        if local is not None:
            sums = _per_bucket(sums, local[0], local[1], int(local[0][-1]) + 1)
        out_v.index_add_(0, j, _spread(sums, w, scratch))
        if not bilinear:
            continue
        qb, vb, kb = _gather(q, i, w, scratch, "q"), _gather(v, j, w, scratch, "v"), _gather(k, j, w, scratch, "k")
        if local is None:
            scores = torch.bmm(gb, vb.transpose(1, 2), out=scratch("scores", gb.shape[0], w, w))  # g_i . v_j
            dq = torch.bmm(scores, kb, out=scratch("spread", *gb.shape))
            out_q.index_add_(0, i, dq.view(-1, d))
            dk = torch.bmm(scores.transpose(1, 2), qb, out=scratch("spread", *vb.shape))
            out_k.index_add_(0, j, dk.view(-1, d))
        else:
            buckets = int(local[0][-1]) + 1
            vk = g.new_zeros(buckets, d, d).index_add_(0, local[1], vb.transpose(1, 2) @ kb)  # sum_j v_j k_j^T
            gq = g.new_zeros(buckets, d, d).index_add_(0, local[0], gb.transpose(1, 2) @ qb)  # sum_i g_i q_i^T
            out_q.index_add_(0, i, (gb @ vk[local[0]]).flatten(0, 1))
            out_k.index_add_(0, j, (vb @ gq[local[1]]).flatten(0, 1))


def _hash_step(bh: int, n: int, num_hashes: int) -> int:
    """Hashes per layout: its items (each in a few integer arrays) at most _BATCH_ELEMENTS, but one at least."""
    return max(1, min(num_hashes, _BATCH_ELEMENTS // max(1, bh * n)))


def _with_zero_row(x: torch.Tensor) -> torch.Tensor:
    """(BH, N, D) -> (BH * N + 1, D): flat rows and the zero row that empty slots read."""
    return F.pad(x.reshape(-1, x.shape[-1]), (0, 0, 0, 1))


class LshCumulation(torch.autograd.Function):
    """Y = B V with B = (1/m) sum_f B_f, the sampled collision matrix (masked), and the paper's backward.

    Backward: the paper's backward pass (Zeng et al. 2021, derived in Sec. 3; its equation number was not
    checked against the PDF), as the authors' yoso_v1 LSHCumulation.backward (n2_backward=False) and
    HuggingFace's YosoLSHCumulation (lsh_backward=True) compute it. With G = dL/dY:

        dL/dV = B^T G
        dL/dQ = ((G V^T) * (tau/2) B) K
        dL/dK = ((G V^T) * (tau/2) B)^T Q

    The exact gradient of the expectation, d/dx (1 - arccos(x)/pi)^tau = tau (1 - arccos(x)/pi)^(tau-1) /
    (pi sqrt(1 - x^2)), is unbounded as x -> +-1 and is no collision probability; it is replaced by the lower
    bound (tau/2)(1 - arccos(x)/pi)^tau = (tau/2) E[B], which the same hash draws estimate by B. So dL/dQ and
    dL/dK are O(n) LSH estimates of ((G V^T) * (tau/2) E[B]) K, not the autograd gradient of YOSO-E.
    Q, K here are the L2-normalised inputs; autograd carries the gradient through the normalisation.
    q, k, v (BH, N, D); codes (BH, N, m); masks (BH, N) bool, True = real token, or None (all real).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_codes: torch.Tensor,
                k_codes: torch.Tensor, q_mask: torch.Tensor | None, k_mask: torch.Tensor | None,
                bits: int) -> torch.Tensor:
        bh, n_q, d = q.shape
        m = q_codes.shape[-1]
        step = _hash_step(bh, n_q + k.shape[1], m)
        ctx.layouts = [bucket_layout(q_codes[..., f:f + step], k_codes[..., f:f + step], q_mask, k_mask, bits, d)
                       for f in range(0, m, step)]
        ctx.bits, ctx.num_hashes = bits, m
        ctx.save_for_backward(q, k, v)
        out, vz, scratch = v.new_zeros(bh * n_q + 1, d), _with_zero_row(v), _Scratch(v)
        for lay in ctx.layouts:
            bucket_sums(lay, vz, out, scratch)
        return (out[:-1] / m).view(bh, n_q, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v = ctx.saved_tensors
        m = ctx.num_hashes
        qz, kz, vz, gz = (_with_zero_row(x) for x in (q, k, v, grad))
        bilinear = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        out_q, out_k = (torch.zeros_like(qz), torch.zeros_like(kz)) if bilinear else (None, None)
        out_v, scratch = torch.zeros_like(vz), _Scratch(vz)
        for lay in ctx.layouts:
            backward_sums(lay, qz, kz, vz, gz, out_q, out_k, out_v, scratch)
        scale = ctx.bits / 2 / m
        grad_q = (out_q[:-1] * scale).view_as(q) if ctx.needs_input_grad[0] else None
        grad_k = (out_k[:-1] * scale).view_as(k) if ctx.needs_input_grad[1] else None
        grad_v = (out_v[:-1] / m).view_as(v) if ctx.needs_input_grad[2] else None
        return grad_q, grad_k, grad_v, None, None, None, None, None


def expected_cumulation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: torch.Tensor | None,
                        k_mask: torch.Tensor | None, bits: int) -> torch.Tensor:
    """YOSO-E: E[B] V with E[B]_ij = (1 - arccos(q_i . k_j)/pi)^tau, exactly, O(n^2); autograd differentiates it.

    Masks (BH, N) bool or None. The cosine is clamped a hair inside [-1, 1]: rounding can push unit vectors'
    dot past 1 (arccos = NaN), and arccos' derivative is infinite at +-1.
    """
    eps = 8 * torch.finfo(q.dtype).eps
    cos = (q @ k.transpose(-1, -2)).clamp(-1 + eps, 1 - eps)
    weights = (1 - torch.arccos(cos) / math.pi) ** bits  # (BH, Nq, Nk)
    if k_mask is not None:
        weights = weights * k_mask[:, None, :]
    out = weights @ v
    return out if q_mask is None else out * q_mask[..., None]


def _triton_kernels():
    """The GPU kernels' module, imported on first use on a GPU (Triton costs an import and reads its
    interpreter switch then)."""
    from effbert.attention import yoso_triton

    return yoso_triton


class YosoAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.bits = opts.hash_bits
        self.num_hashes = opts.num_hashes
        self.expectation = opts.expectation
        self.hash = fast_hash if opts.fast_hash else gaussian_hash
        self.conv = ConvSkip(cfg.num_heads, opts.conv_kernel) if opts.conv_kernel else None  # YOSO-C

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        dtype = torch.promote_types(v.dtype, torch.float32)  # bf16 in, float32 math (float64 stays float64)
        with torch.autocast(q.device.type, enabled=False):
            out = self._yoso(q.to(dtype), k.to(dtype), v.to(dtype), mask).to(v.dtype)
        if self.conv is not None:
            out = out + self.conv(v, mask)
        return out

    def _yoso(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, n, d = q.shape
        # the collision probability is a function of the angle: hash and weigh unit vectors
        q = F.normalize(q, dim=-1).reshape(b * h, n, d)
        k = F.normalize(k, dim=-1).reshape(b * h, n, d)
        v = v.reshape(b * h, n, d)
        real = None if mask is None else mask[:, None, :].expand(b, h, n).reshape(b * h, n)
        if self.expectation:
            out = expected_cumulation(q, k, v, real, real, self.bits)
        elif q.is_cuda and q.dtype != torch.float64 and _triton_kernels().available(q.device):
            out = self._triton(q, k, v, real)
        else:
            with torch.no_grad():
                q_codes, k_codes = self.hash(q, k, self.num_hashes, self.bits)
            out = LshCumulation.apply(q, k, v, q_codes, k_codes, real, real, self.bits)
        out = F.normalize(out, dim=-1)  # the output normalisation of the authors' code
        return out.view(b, h, n, d)

    def _triton(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """The GPU path: the same estimator and backward as Triton kernels (yoso_triton), the same kinds of
        random draws; float32 sums. Tested against dense truth through Triton's CPU interpreter."""
        bh, _, d = q.shape
        yoso_triton = _triton_kernels()
        with torch.no_grad():
            if self.hash is fast_hash:
                signs = fast_hash_signs(bh, d, self.num_hashes, self.bits, q)
                q_codes, k_codes = yoso_triton.triton_fast_hash(q, k, self.num_hashes, self.bits, signs)
            else:
                planes = gaussian_planes(bh, d, self.num_hashes, self.bits, q)
                q_codes, k_codes = yoso_triton.triton_gaussian_hash(q, k, self.num_hashes, self.bits, planes)
        return yoso_triton.TritonLshCumulation.apply(q, k, v, q_codes, k_codes, real, real, self.bits)

    def extra_repr(self) -> str:
        kind = "expectation" if self.expectation else f"num_hashes={self.num_hashes}, hash={self.hash.__name__}"
        return f"hash_bits={self.bits}, {kind}, conv={self.conv is not None}"
