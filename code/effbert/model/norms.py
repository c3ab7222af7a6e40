"""The normalisations of model.norm: LayerNorm, RMSNorm, CRMSNorm and PRepBN, and what each setting builds.

    post          BERT: LayerNorm after each residual sum
    pre           LayerNorm on each sublayer's input, plus a final one
    pre_rmsnorm   RMSNorm(x) = x / sqrt(mean(x^2) + eps) in place of every LayerNorm of `pre`
    pre_crmsnorm  the residual stream stored compressed: a zero-mean d-vector as its first d-1 entries
    peri          Peri-LN: LayerNorm on each sublayer's input and on its output, x + norm(f(norm(x)))
    pre_batchnorm PRepBN (SLAB) in place of every LayerNorm of `pre`: LayerNorm fading into RepBN over training

Pre-RMSNorm and Pre-CRMSNorm (Jiang et al., NeurIPS 2023) equal Pre-LN when the residual stream (the
"main branch") has zero mean: LayerNorm(x) = RMSNorm(x) for mean(x) = 0. A zero-mean d-vector x is
fixed by x_1..x_{d-1} (x_d = -sum of the rest), so CRMSNorm reads those d-1 entries:
CRMSNorm(x) = x / sqrt((sum_{i<d} x_i^2 + (sum_{i<d} x_i)^2) / d + eps).
Every norm here keeps LayerNorm's elementwise weight and bias, so a converted norm keeps its parameters
(effbert.train.convert_norm); the final CRMSNorm writes the whole d-vector, so the heads read width d.

pre_batchnorm is SLAB's progressive re-parameterised BatchNorm (PRepBN; Guo et al., "SLAB: Efficient
Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization", ICML
2024), at the places of `pre`'s norms: PRepBN(x) = gamma * LN(x) + (1 - gamma) * RepBN(x), with RepBN(x) =
BN(x) + eta * x (eq. 4; eta learnable, 1 at the start) and gamma falling linearly from 1 to 0 over
model.batchnorm_decay_steps optimizer steps after model.batchnorm_warmup (eq. 5; the authors' LinearNorm
counts steps the same way). See `PRepBN` for padding, evaluation and the step count.

The embeddings keep their LayerNorm in every setting (it reads the raw sum of the tables, whose mean is
not zero); under pre_rmsnorm and pre_crmsnorm its output is recentred explicitly (and compressed), since
LayerNorm's weight and bias move the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps), then LayerNorm's elementwise weight and bias."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.rms_norm(x, self.weight.shape, eps=self.eps), self.weight)


class CRMSNorm(nn.Module):
    """RMSNorm of the zero-mean d-vector whose first d-1 entries are x (B, N, d-1).

    decompress=False: the d-1 normalised entries, then a (d-1) weight and bias (the block norms, whose output
    the input projections read compressed). decompress=True: the whole normalised d-vector, then a d weight
    and bias (the final norm: where the compressed width stops)."""

    def __init__(self, width: int, eps: float, decompress: bool = False):
        super().__init__()
        self.eps = eps
        self.decompress = decompress
        out = width + 1 if decompress else width
        self.weight = nn.Parameter(torch.ones(out))
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.sum(-1, keepdim=True)  # -x_d
        mean_square = (x.square().sum(-1, keepdim=True) + total.square()) / (x.shape[-1] + 1)
        scale = torch.rsqrt(mean_square + self.eps)
        y = x * scale
        if self.decompress:
            y = torch.cat([y, -total * scale], dim=-1)
        return torch.addcmul(self.bias, y, self.weight)


def stream_width(cfg: ModelConfig) -> int:
    """The width of the residual stream: d, or d - 1 stored entries under pre_crmsnorm."""
    return cfg.hidden_size - 1 if cfg.norm == "pre_crmsnorm" else cfg.hidden_size


def block_norm(cfg: ModelConfig) -> nn.Module:
    """The norm on a sublayer's input (after the residual sum under post)."""
    if cfg.norm == "pre_batchnorm":
        return PRepBN(cfg.hidden_size, cfg.layer_norm_eps, cfg.batchnorm_warmup, cfg.batchnorm_decay_steps)
    if cfg.norm == "pre_rmsnorm":
        return RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)
    if cfg.norm == "pre_crmsnorm":
        return CRMSNorm(cfg.hidden_size - 1, cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


def final_norm(cfg: ModelConfig) -> nn.Module | None:
    """The norm after the last block (none under post, whose blocks end in one), of output width d."""
    if cfg.norm == "post":
        return None
    if cfg.norm == "pre_crmsnorm":
        return CRMSNorm(cfg.hidden_size - 1, cfg.layer_norm_eps, decompress=True)
    return block_norm(cfg)


def embedding_output(cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """The embeddings' LayerNorm output (B, N, d) as the residual stream starts: recentred for the
    RMSNorm settings (the zero-mean main branch), and compressed to d-1 entries under pre_crmsnorm."""
    if cfg.norm == "pre_rmsnorm":
        return x - x.mean(-1, keepdim=True)
    if cfg.norm == "pre_crmsnorm":
        return x[..., :-1] - x.mean(-1, keepdim=True)
    return x


BATCHNORM_EPS = 1e-5  # BatchNorm's own default, as the authors' nn.BatchNorm1d (LayerNorm keeps layer_norm_eps)
BATCHNORM_MOMENTUM = 0.1  # the running statistics' update rate, as nn.BatchNorm1d


class PRepBN(nn.Module):
    """gamma * LayerNorm(x) + (1 - gamma) * (BatchNorm(x) + eta * x) on the residual stream (B, N, d).

    Padding: BatchNorm's statistics are the mean and variance of each channel over the real tokens of the batch
    only (`mask`, True = real), so padding changes neither the outputs at real tokens nor the running statistics.
    Training normalises by the batch's (biased) variance and moves the running mean and unbiased variance by
    BATCHNORM_MOMENTUM, as nn.BatchNorm1d; evaluation uses the running statistics. Once gamma is 0 an evaluation
    computes no LayerNorm: RepBN with running statistics is one per-channel affine map (x * scale + shift), which
    is what lets the authors fold it into the next linear layer.

    The step count is the buffer `steps` (optimizer steps taken; saved with the weights, so a resumed or
    fine-tuned model continues where its checkpoint stopped); the training loop advances it after every optimizer
    step through `advance_norm_schedule`. The LayerNorm's weight and bias keep LayerNorm's names, so a Pre-LN
    checkpoint's norms load into a pre_batchnorm model (from_cp), its BatchNorm starting fresh."""

    def __init__(self, width: int, eps: float, warmup: int, decay_steps: int):
        super().__init__()
        self.eps, self.warmup, self.decay_steps = eps, warmup, decay_steps
        self.weight = nn.Parameter(torch.ones(width))  # LayerNorm's
        self.bias = nn.Parameter(torch.zeros(width))
        self.bn_weight = nn.Parameter(torch.ones(width))
        self.bn_bias = nn.Parameter(torch.zeros(width))
        self.eta = nn.Parameter(torch.ones(1))  # RepBN's weight on x (the authors' alpha), 1 at the start
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def gamma(self) -> torch.Tensor:
        """The LayerNorm share at this step: 1 during the warmup, then 1 - (steps - warmup) / decay_steps, down to 0."""
        done = (self.steps - self.warmup).clamp(min=0).float() / self.decay_steps
        return (1.0 - done).clamp(min=0.0)

    def _batch_statistics(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each channel's mean and biased variance over the real tokens (in float32 at least); the running ones
        updated."""
        flat = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(-1, x.shape[-1])  # (B*N, d)
        # weights 1 for real tokens, 0 for padding: sums rather than indexing, so the GPU never waits on a count
        real = flat.new_ones(flat.shape[0], 1) if mask is None else mask.reshape(-1, 1).to(flat.dtype)
        count = real.sum()
        mean = (flat * real).sum(0) / count
        var = ((flat - mean).square() * real).sum(0) / count
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), BATCHNORM_MOMENTUM)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), BATCHNORM_MOMENTUM)
        return mean, var

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            mean, var = self._batch_statistics(x, mask)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.bn_weight * torch.rsqrt(var + BATCHNORM_EPS)
        shift = self.bn_bias - mean * scale
        gamma = self.gamma()
        if not self.training and not gamma:  # RepBN alone: one affine map, no statistics of x
            return torch.addcmul(shift, x, scale + self.eta).to(x.dtype)
        rep = torch.addcmul(shift, x, scale + self.eta)  # BN(x) + eta * x
        ln = F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return (gamma * ln + (1.0 - gamma) * rep).to(x.dtype)


def apply_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """norm(x); a PRepBN also gets the padding mask (its statistics are over real tokens only)."""
    return norm(x, mask) if isinstance(norm, PRepBN) else norm(x)


def advance_norm_schedule(model: nn.Module) -> None:
    """One optimizer step done: every PRepBN's step count moves on (the training loop calls this once per step)."""
    for module in model.modules():
        if isinstance(module, PRepBN):
            module.steps += 1
