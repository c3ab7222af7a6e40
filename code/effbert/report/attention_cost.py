"""What a mechanism's attention costs at a given length, counted from its settings: analytic FLOPs, no timing.

The plot of LRA accuracy against cost needs a cost for every result, from the result files alone (a run's
saved attention options and protocol, effbert.report.comparable.lra_setup), on any machine. Measured time
and memory (`effbert bench attention`) depend on the hardware and are not part of a result; this count is.

Counted: the forward pass of the mechanism alone (the q, k, v and output projections around it are left
out), per example, summed over heads and layers; a multiply-add is 2 FLOPs; only the terms that grow with
n d (matrix products, projections of the sequence, hashing, FFTs) are counted, the elementwise ones (exp,
masks, norms) are not. The count is of the work as our modules do it (Local's blocks, Reformer's chunks),
which torch.utils.flop_counter confirms for the mechanisms made of matrix products
(tests/test_report_plots.py); YOSO's sampled path is counted as its math (bucket sums), which its
block-wise kernels exceed, and FNet's FFT by the radix-2 count. n is the task's max_len (the longest
input; LRA batches are padded to their longest example only), d the head size, h the heads. Per head:

    softmax             4 n^2 d                              Q K^T, then the weights times V
    nystrom (m)         8 n m d + 4 m^2 d + 8 t m^3          softmax(Q K~^T), softmax(Q~ K^T) and their products with
                                                             V (eq. 14), the m x m kernel, t Newton-Schulz steps of 4
                                                             m x m products; n <= m: exact softmax, 4 n^2 d
    yoso (tau, m)       hashing + 2 m n d                    per hash, V summed into buckets and read back; hashing:
                                                             Gaussian 4 n d tau m, fast 2 n p 3 s (log2 s + 1) (p draws
                                                             of three size-s Hadamard transforms with random signs)
    yoso, expectation   4 n^2 d                              (1 - arccos(q.k)/pi)^tau for every pair, then times V
    conv_kernel c       + 2 n d c                            the depthwise convolution on V (Nystrom, YOSO-C)
    linformer (k)       8 n k d                              E K and F V (k x n times n x d), then k-key attention
    performer (M)       8 n M d + 3 n M                      features of Q and K, phi(K)^T V, phi(Q) (...), normaliser
    linear              4 n d^2 + 3 n d                      phi(K)^T V, phi(Q) (...), normaliser
    local (w)           12 n c d, c = min(w, n)              each chunk of c queries against its own chunk and the two
                                                             beside it (the window is masked inside those 3c keys)
    slab_linear         4 n d^2 + 2 n d                      relu(K)^T V, relu(Q) (...), the normaliser relu(Q) sum_j
                                                             relu(k_j); + the depthwise convolution on V (conv_kernel)
    norm_linear         4 n d^2                              phi(K)^T V, phi(Q) (...); no normaliser (the norm is
                                                             elementwise)
    block_softmax (b)   4 n' c d, c = min(b, n)              each block of c queries against its own c keys; n' = n
                                                             rounded up to whole blocks
    reformer (r, c)     r (4 n min(2c, n) d + n d b)         per round: each chunk against itself and the one before,
                                                             and the rotations of the angular hash (b buckets)
    fnet                5 n D (log2 n + log2 D) per layer    the 2-D FFT over (sequence, hidden D), radix-2 count
"""

from __future__ import annotations

import math

from effbert.attention.reformer import num_buckets_for
from effbert.attention.yoso import fast_hash_shape

COST_LABEL = "attention GFLOPs per example (forward, all layers, analytic, at the task's max_len)"


def _conv(n: int, d: int, options: dict) -> float:
    kernel = options.get("conv_kernel")
    return 2.0 * n * d * kernel if kernel else 0.0


def _yoso_hashing(n: int, d: int, options: dict) -> float:
    bits, hashes = options["hash_bits"], options["num_hashes"]
    if not options.get("fast_hash", True):
        return 4.0 * n * d * bits * hashes  # q and k, each times a d x (tau m) Gaussian matrix
    size, _, parts = fast_hash_shape(d, hashes, bits)
    return 2.0 * n * parts * 3 * size * (math.log2(size) + 1)  # q and k; three signed transforms per draw


def head_flops(kind: str, n: int, d: int, options: dict) -> float:
    """FLOPs of one head of `kind` with `options` (its config section) on n tokens of head size d."""
    if kind == "softmax" or (kind == "yoso" and options.get("expectation")):
        return 4.0 * n * n * d + _conv(n, d, options)
    if kind == "nystrom":
        m = options["num_landmarks"]
        if n <= m:  # every token its own landmark: exact softmax
            return 4.0 * n * n * d + _conv(n, d, options)
        return 8.0 * n * m * d + 4.0 * m * m * d + 8.0 * options["pinv_iterations"] * m**3 + _conv(n, d, options)
    if kind == "yoso":
        return _yoso_hashing(n, d, options) + 2.0 * options["num_hashes"] * n * d + _conv(n, d, options)
    if kind == "linformer":
        return 8.0 * n * options["k"] * d
    if kind == "performer":
        return 8.0 * n * options["num_features"] * d + 3.0 * n * options["num_features"]
    if kind == "linear":
        return 4.0 * n * d * d + 3.0 * n * d
    if kind == "local":
        return 12.0 * n * min(options["window"], n) * d
    if kind == "slab_linear":
        return 4.0 * n * d * d + 2.0 * n * d + _conv(n, d, options)
    if kind == "norm_linear":
        return 4.0 * n * d * d
    if kind == "block_softmax":
        c = min(options["block_size"], n)
        return 4.0 * math.ceil(n / c) * c * c * d
    if kind == "reformer":
        c, rounds = options["bucket_size"], options["num_hashes"]
        return rounds * (4.0 * n * min(2 * c, n) * d + n * d * num_buckets_for(n, c))
    raise ValueError(f"no cost formula for attention type {kind!r} (effbert.report.attention_cost)")


def attention_flops(setup: dict[str, object]) -> float:
    """Forward FLOPs of a model's attention per example, from a result's setup (comparable.lra_setup's keys:
    attention.<option>, hidden_size, num_heads, num_layers, max_len; and layer_attention under a schedule)."""
    per_layer = setup.get("layer_attention")
    if per_layer:  # model.layer_attention: each layer at its own mechanism's cost
        one = {k: v for k, v in setup.items() if not k.startswith("attention.") and k != "layer_attention"}
        return sum(attention_flops(one | {"num_layers": 1} | {f"attention.{k}": v for k, v in options.items()})
                   for options in per_layer)
    options = {key.split(".", 1)[1]: value for key, value in setup.items() if key.startswith("attention.")}
    n, hidden, heads, layers = (int(setup[k]) for k in ("max_len", "hidden_size", "num_heads", "num_layers"))
    if options["type"] == "fnet":  # no heads: one 2-D FFT over the hidden states
        return layers * 5.0 * n * hidden * (math.log2(n) + math.log2(hidden))
    return layers * heads * head_flops(str(options["type"]), n, hidden // heads, options)
