"""The normalisations of model.norm: LayerNorm, RMSNorm and CRMSNorm, and what each setting builds.

    post          BERT: LayerNorm after each residual sum
    pre           LayerNorm on each sublayer's input, plus a final one
    pre_rmsnorm   RMSNorm(x) = x / sqrt(mean(x^2) + eps) in place of every LayerNorm of `pre`
    pre_crmsnorm  the residual stream stored compressed: a zero-mean d-vector as its first d-1 entries
    peri          Peri-LN: LayerNorm on each sublayer's input and on its output, x + norm(f(norm(x)))

Pre-RMSNorm and Pre-CRMSNorm (Jiang et al., NeurIPS 2023) equal Pre-LN when the residual stream (the
"main branch") has zero mean: LayerNorm(x) = RMSNorm(x) for mean(x) = 0. A zero-mean d-vector x is
fixed by x_1..x_{d-1} (x_d = -sum of the rest), so CRMSNorm reads those d-1 entries:
CRMSNorm(x) = x / sqrt((sum_{i<d} x_i^2 + (sum_{i<d} x_i)^2) / d + eps).
Every norm here keeps LayerNorm's elementwise weight and bias, so a converted norm keeps its parameters
(effbert.train.convert_norm); the final CRMSNorm writes the whole d-vector, so the heads read width d.

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
