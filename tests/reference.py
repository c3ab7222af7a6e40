"""Plain reference computations the attention tests compare against, written once."""

from __future__ import annotations

import math

import torch


def lengths_mask(lengths: list[int], n: int) -> torch.Tensor:
    """(B, n) bool padding mask, True for the first lengths[b] tokens of row b."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def naive_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with the n x n matrix materialised; padded keys (mask False) get no weight."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
    return torch.softmax(scores, -1) @ v


def nystrom(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, m: int, iterations: int,
            per_head_init: bool) -> torch.Tensor:
    """The paper's F A^+ B V with every matrix explicit, one sequence at a time over its real tokens only.

    Landmarks by the authors' extended segment-means rule (segments of floor(n/m), the last n mod m one
    longer; n < m real tokens: one landmark each). A^+ by eq. (16) from Z0 = A^T / (||A||_1 ||A||_inf),
    the norms per (sequence, head) or, as the paper's code, the maxima over the whole batch.
    """
    d = q.shape[-1]
    lands, a_mats = [], []
    for row, real in zip(range(q.shape[0]), mask, strict=True):
        n = int(real.sum())
        count = min(m, n)
        sizes = [n // count + (i >= count - n % count) for i in range(count)]
        starts = [sum(sizes[:i]) for i in range(count)]
        q_land = torch.stack([q[row, :, s:s + z].mean(1) for s, z in zip(starts, sizes, strict=True)], 1)
        k_land = torch.stack([k[row, :, s:s + z].mean(1) for s, z in zip(starts, sizes, strict=True)], 1)
        lands.append((q_land, k_land, n))
        a_mats.append(torch.softmax(q_land @ k_land.transpose(-1, -2) / math.sqrt(d), -1))
    col = [a.abs().sum(-2).amax(-1) for a in a_mats]  # (H,) each: ||A||_1 per head
    row_ = [a.abs().sum(-1).amax(-1) for a in a_mats]
    out = []
    for b, ((q_land, k_land, n), a) in enumerate(zip(lands, a_mats, strict=True)):
        scale = col[b] * row_[b] if per_head_init else max(c.max() for c in col) * max(r.max() for r in row_)
        z = a.transpose(-1, -2) / (scale[:, None, None] if per_head_init else scale)
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        for _ in range(iterations):
            az = a @ z
            z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
        kernel_f = torch.softmax(q[b] @ k_land.transpose(-1, -2) / math.sqrt(d), -1)  # (H, N, m')
        kernel_b = torch.softmax(q_land @ k[b, :, :n].transpose(-1, -2) / math.sqrt(d), -1)  # (H, m', n)
        out.append(kernel_f @ z @ (kernel_b @ v[b, :, :n]))
    return torch.stack(out)


def conv_skip(v: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_t w[h, t] v_masked[n + t - r]: each head's filter (H, 2r + 1) over the zero-padded masked values."""
    r = weight.shape[1] // 2
    vm = torch.nn.functional.pad(v * mask[:, None, :, None], (0, 0, r, r))
    n = v.shape[2]
    return sum(weight[None, :, t, None, None] * vm[:, :, t:t + n] for t in range(weight.shape[1]))


def saved_bytes(fn, *args):
    """Bytes autograd keeps for the backward of fn(*args), counted as it packs each saved tensor."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return total
