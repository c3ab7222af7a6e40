"""The models the fine-tuning stages train: the encoder under a task head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig
from effbert.constants import IGNORE
from effbert.model.encoder import Encoder, init_weights
from effbert.model.heads import ClassificationHead, MlmHead, mean_over_real_tokens


class SequenceClassifier(nn.Module):
    """Encoder + BERT's pooled classification head; one output means regression (STS-B)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_labels: int):
        super().__init__()
        self.encoder = Encoder(cfg, vocab_size)
        self.head = ClassificationHead(cfg.hidden_size, num_labels, cfg.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, N, H)
        return self.head(hidden, batch["attention_mask"])  # (B, num_labels)


def input_keys(k: int) -> tuple[str, str]:
    """Batch keys of encoder input k: input_ids / attention_mask, then input_ids_1 / attention_mask_1."""
    suffix = "" if k == 0 else f"_{k}"
    return f"input_ids{suffix}", f"attention_mask{suffix}"


def dual_features(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The retrieval head's input: [x0, x1, x0*x1, x0-x1] (B, 4H) from the two pooled documents (B, H)."""
    return torch.cat([x0, x1, x0 * x1, x0 - x1], dim=-1)


class LraClassifier(nn.Module):
    """Encoder, the mean over real tokens, then a two-layer MLP (the LRA head).

    With two inputs (retrieval) the same encoder reads both and the MLP sees dual_features."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int, mlp_size: int, inputs: int = 1):
        super().__init__()
        if inputs not in (1, 2):
            raise ValueError(f"an LRA task has 1 or 2 inputs, not {inputs}")
        self.inputs = inputs
        self.encoder = Encoder(cfg, vocab_size)
        features = cfg.hidden_size * (4 if inputs == 2 else 1)
        self.head = nn.Sequential(nn.Linear(features, mlp_size), nn.ReLU(), nn.Linear(mlp_size, num_classes))
        self.head.apply(init_weights)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_over_real_tokens(self.encoder(input_ids, attention_mask), attention_mask)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                input_ids_1: torch.Tensor | None = None, attention_mask_1: torch.Tensor | None = None) -> torch.Tensor:
        x0 = self.pooled(input_ids, attention_mask)
        if self.inputs == 1:
            return self.head(x0)  # (B, classes)
        if input_ids_1 is None or attention_mask_1 is None:
            raise ValueError("a dual-encoder model needs input_ids_1 and attention_mask_1")
        return self.head(dual_features(x0, self.pooled(input_ids_1, attention_mask_1)))


class MaskedLm(nn.Module):
    """An encoder with BERT's masked-LM head, its loss over the predicted positions only (LRA's self-pretraining)."""

    def __init__(self, encoder: Encoder, eps: float):
        super().__init__()
        self.encoder = encoder
        self.mlm = MlmHead(encoder.cfg.hidden_size, encoder.embeddings.word, eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)
        predicted = labels != IGNORE
        return F.cross_entropy(self.mlm(hidden[predicted]).float(), labels[predicted])
