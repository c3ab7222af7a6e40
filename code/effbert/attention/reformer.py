"""Reformer LSH attention (Kitaev et al., "Reformer: The Efficient Transformer", ICLR 2020).

Shared query-key (Sec. 2): the keys are the length-normalised queries, k_j = q_j / rms(q_j) (|k_j| =
sqrt(d)); the `k` given is ignored, and the encoder builds no key projection (`shares_query_key`).
Per hash round r (Sec. 2 of the paper):
    h(x) = argmax([x R_r ; -x R_r])                   angular LSH, R_r random (d x n_buckets/2), per head
    sort the tokens by (bucket, position) and cut the sorted sequence into chunks of bucket_size;
    each chunk attends to itself and to the chunk before it, scores q_i . k_j / sqrt(d)
A token attends to itself only when nothing else is in reach: its own score is -1e5 (finite), padded
keys' -1e9. Rounds merge with weights softmax_r(logsumexp of round r's scores), one softmax over every
(round, key) pair seen, so a key met in several rounds counts once per round (no duplicate correction).
With bucket_size >= n there is one chunk and this is exact shared-QK softmax attention.

Padding: padded tokens go to an extra bucket past the last, so they sort after every real token; the first
chunk does not wrap round to the last; the number of buckets comes from cfg.max_seq_len, not the batch.
So appending padding leaves the chunks of real tokens, and their outputs, unchanged for the same
rotations. Rotations are drawn from torch's global RNG on every call.

Differences from the papers' code and common libraries: docs/implementations.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention.masks import full_mask
from effbert.config import ModelConfig

SELF_SCORE = -1e5  # a token's score for itself: loses to any real key, wins over padding
PAD_SCORE = -1e9
NORM_EPS = 1e-6


def num_buckets_for(seq_len: int, bucket_size: int) -> int:
    """About 2 n / bucket_size buckets, rounded down to a power of two (at least 2), as the reference does."""
    target = max(1, 2 * (seq_len // bucket_size))
    return max(2, 2 ** (target.bit_length() - 1))


def length_normalise(x: torch.Tensor) -> torch.Tensor:
    """x / rms(x): every key gets norm sqrt(d), so q . k / sqrt(d) = |q| cos(q, k)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS)


def look_one_back(x: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
    """(..., C, c, *) -> (..., C, 2c, *): each chunk followed by the one before it; chunk 0 gets `fill`."""
    prev = torch.cat([torch.full_like(x[..., :1, :, :], fill), x[..., :-1, :, :]], dim=-3)
    return torch.cat([x, prev], dim=-2)


class ReformerAttention(nn.Module):
    shares_query_key = True  # the encoder builds no key projection and passes the queries as keys
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        opts = cfg.attention
        self.num_hashes = opts.num_hashes
        self.bucket_size = opts.bucket_size
        self.num_buckets = num_buckets_for(cfg.max_seq_len, opts.bucket_size)
        self.dropout = cfg.attention_dropout

    def hash(self, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Bucket ids (B, H, R, N); padding gets the extra bucket `num_buckets`."""
        h, d = q.shape[1], q.shape[-1]
        # drawn in float32 whatever the input dtype, so seeded float32 and bfloat16 runs hash alike
        rotations = torch.randn(h, d, self.num_hashes, self.num_buckets // 2, device=q.device)
        rotated = torch.einsum("bhnd,hdrk->bhrnk", q.detach(), rotations.to(q.dtype))
        buckets = torch.cat([rotated, -rotated], -1).argmax(-1)  # angular LSH (Sec. 2): h(x) = argmax([xR; -xR])
        return buckets.masked_fill(~mask[:, None, None, :], self.num_buckets)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        del k  # shared-QK: the keys are the normalised queries
        dtype, mask = v.dtype, full_mask(q, mask)  # sorted and chunked with the tokens below, so made explicit
        work = torch.float64 if dtype == torch.float64 else torch.float32  # bf16 in, float32 inside
        q, v = q.to(work), v.to(work)
        b, h, n, d = q.shape
        c, r = self.bucket_size, self.num_hashes
        pad = -n % c  # pad to whole chunks with masked tokens; they sort last and are cropped at the end
        if pad:
            q, v = F.pad(q, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        length = n + pad

        with torch.no_grad():
            positions = torch.arange(length, device=q.device)
            order = (self.hash(q, mask) * length + positions).argsort(-1)  # sort by (bucket, position)
            undo = order.argsort(-1)  # (B, H, R, N)

        def sort(x: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) -> (B, H, R, C, c, d) in each round's order
            x = x[:, :, None].expand(b, h, r, length, d)
            return x.gather(3, order[..., None].expand(b, h, r, length, d)).view(b, h, r, -1, c, d)

        sq, sv = sort(q), sort(v)
        sk = look_one_back(length_normalise(sq), 0.0)  # (B, H, R, C, 2c, d)
        sv = look_one_back(sv, 0.0)
        q_pos = order.view(b, h, r, -1, c)  # original position of each sorted query
        k_pos = look_one_back(q_pos[..., None], -1)[..., 0]  # (B, H, R, C, 2c); -1: no chunk before the first
        real = mask[:, None, None, None, :].expand(b, h, r, length // c, length)
        k_ok = (k_pos >= 0) & real.gather(-1, k_pos.clamp(min=0))

        scores = sq @ sk.transpose(-1, -2) / math.sqrt(d)  # (B, H, R, C, c, 2c)
        scores = scores.masked_fill(~k_ok[..., None, :], PAD_SCORE)
        scores = scores.masked_fill(q_pos[..., :, None] == k_pos[..., None, :], SELF_SCORE)
        lse = scores.logsumexp(-1, keepdim=True)
        probs = F.dropout(torch.exp(scores - lse), self.dropout, self.training)
        out = (probs @ sv).view(b, h, r, length, d)
        lse = lse.view(b, h, r, length)

        # back to sequence order, then merge the rounds by their normalisers (the round softmax)
        out = out.gather(3, undo[..., None].expand(b, h, r, length, d))
        lse = lse.gather(3, undo)
        weights = torch.softmax(lse, dim=2)[..., None]  # (B, H, R, N, 1)
        out = (out * weights).sum(2)
        return out[:, :, :n].to(dtype)
