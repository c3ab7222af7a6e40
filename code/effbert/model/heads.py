"""Task heads over the encoder's hidden states (B, N, H)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.model.encoder import init_weights


class Pooler(nn.Module):
    """BERT's pooler: tanh(W h_0) on the first ([CLS]) token."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class MlmHead(nn.Module):
    """Transform + LayerNorm + a decoder tied to the word embeddings."""

    def __init__(self, hidden_size: int, word_embeddings: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        init_weights(self.dense)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden))) @ self.word_embeddings.weight.T + self.bias


class ClassificationHead(nn.Module):
    """Pooled first token -> dropout -> linear. num_labels == 1 is a regression head (STS-B)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.pooler = Pooler(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        self.apply(init_weights)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))


def mean_over_real_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.to(hidden.dtype)[..., None]  # (B, N, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
