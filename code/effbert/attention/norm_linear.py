"""TransNormer's NormAttention (Qin et al., "The Devil in Linear Transformer", EMNLP 2022).

Linear attention without the scaling by the row sums, which the paper shows gives unbounded gradients;
a norm over each token's output takes its place:

    O = XNorm(phi(Q) (phi(K)^T V))

as the authors' code computes it (OpenNLPLab/fairseq-evo, fairseq/modules/norm_linear_attention.py,
NormLinearAttention, with the settings of fairseq/models/roberta_x_attention/norm_attention.py):
- phi on Q and K only, no 1/sqrt(d): `kernel` '1+elu' (their TransNormer T2) or 'elu' (T1; features may
  be negative, which is harmless without a normaliser);
- XNorm over the concatenated heads of each token (their norm is built for embed_dim, after the heads are
  merged): `norm` 'srmsnorm', their SimpleRMSNorm x / (||x|| / sqrt(D) + 1e-8), no weights (the setting of
  their final TransNormer runs), or 'layernorm', torch's LayerNorm (eps 1e-5, weight and bias).
Their attention module also holds the output projection, which our block owns; it has no gate (the gate
of TransNormerLLM came later), and the GLU of their block replaces the feed-forward network, so neither
is part of this mechanism.

Padding: padded keys get zero features, so they never enter phi(K)^T V, and appending padding never
changes the outputs at real tokens (their code has no key mask). Memory is O(N d) forward and backward: no
N x N matrix. Precision: the product and the norm run in float32 with autocast off, as the sums over the
sequence in effbert.attention.linear do; the output returns in v's dtype.

`HeadsNorm` is also block_softmax's optional norm (TransNormer's DiagAttention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig

SRMS_EPS = 1e-8  # the authors' SimpleRMSNorm: added to the root mean square
LAYERNORM_EPS = 1e-5  # the authors' nn.LayerNorm default


class HeadsNorm(nn.Module):
    """XNorm over the concatenated heads of each token: (B, H, N, D) -> the same."""

    def __init__(self, kind: str, hidden_size: int):
        super().__init__()
        self.kind = kind
        self.layer_norm = nn.LayerNorm(hidden_size, eps=LAYERNORM_EPS) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        tokens = x.transpose(1, 2).reshape(b, n, h * d)  # (B, N, H D): the heads of each token side by side
        if self.layer_norm is not None:
            ln = self.layer_norm
            tokens = F.layer_norm(tokens, ln.normalized_shape, ln.weight.to(x.dtype), ln.bias.to(x.dtype), ln.eps)
        else:
            rms = torch.linalg.vector_norm(tokens, dim=-1, keepdim=True) / (h * d) ** 0.5
            tokens = tokens / (rms + SRMS_EPS)
        return tokens.view(b, n, h, d).transpose(1, 2)


def elu_features(x: torch.Tensor, kernel: str) -> torch.Tensor:
    return F.elu(x) + 1 if kernel == "1+elu" else F.elu(x)


class NormLinearAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()
        self.kernel = cfg.attention.kernel
        self.norm = HeadsNorm(cfg.attention.norm, cfg.hidden_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        dtype, wide = v.dtype, torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):  # a sum over the sequence: float32 at least
            features_k = elu_features(k.to(wide), self.kernel)
            if mask is not None:
                features_k = features_k * mask[:, None, :, None].to(wide)  # padded keys: zero features
            context = features_k.transpose(-1, -2) @ v.to(wide)  # (B, H, d, D): phi(K)^T V
            out = self.norm(elu_features(q.to(wide), self.kernel) @ context)
        return out.to(dtype)
