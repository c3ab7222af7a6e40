"""FNet token mixing (Lee-Thorp et al., "FNet: Mixing Tokens with Fourier Transforms", NAACL 2022).

    y = Re(FFT_seq(FFT_hidden(x)))          Sec. 3.2 of the paper: a 2-D DFT over (sequence, hidden)

It replaces the whole attention sublayer (no projections, no parameters), so it is called on the hidden
states: forward(x, mask) with x (B, N, hidden).

Padding: positions with mask False are zeroed first, so padded tokens add nothing to the sums. FNet is
still NOT padding invariant: the sequence DFT has the padded length N, and its frequencies
exp(-2 pi i j k / N) change with N, so outputs at real tokens depend on the batch's padding. The paper pads
every input to one fixed length (512 for BERT-style pretraining); pad to cfg.max_seq_len wherever FNet
outputs must be comparable.
"""

from __future__ import annotations

import torch
from torch import nn

from effbert.config import ModelConfig


class FnetMixing(nn.Module):
    mixes_hidden_states = True
    padding_invariant = False  # the DFT runs over the padded length (see above)

    def __init__(self, cfg: ModelConfig, shared: dict | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        dtype = x.dtype
        # torch's CPU FFT has no bfloat16 (nor float16) kernels: transform in float32 and cast back
        work = x if dtype in (torch.float32, torch.float64) else x.float()
        if mask is not None:
            work = work * mask[..., None].to(work.dtype)  # padded tokens contribute nothing
        return torch.fft.fft2(work, dim=(-2, -1)).real.to(dtype)  # (B, N, hidden)
