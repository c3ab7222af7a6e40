"""The pretraining model: encoder + masked-LM head + sentence-order-prediction head (ALBERT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effbert.config import ModelConfig
from effbert.constants import IGNORE  # the shards' label of positions without a prediction
from effbert.model.encoder import Encoder
from effbert.model.heads import ClassificationHead, MlmHead


class PretrainingModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, sop: bool = True):
        super().__init__()
        self.encoder = Encoder(cfg, vocab_size)
        self.mlm = MlmHead(cfg.hidden_size, self.encoder.embeddings.word, cfg.layer_norm_eps)
        self.sop = ClassificationHead(cfg.hidden_size, 2, cfg.dropout) if sop else None

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses and accuracies of one batch of shard instances."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["mlm_labels"]
        predicted = labels != IGNORE
        logits = self.mlm(hidden[predicted])  # only the masked positions: (P, V)
        targets = labels[predicted]
        out = {
            "mlm_loss": F.cross_entropy(logits.float(), targets),
            "mlm_correct": (logits.argmax(-1) == targets).sum(),
            "mlm_count": targets.new_tensor(targets.numel()),
        }
        out["loss"] = out["mlm_loss"]
        if self.sop is not None:
            sop_logits = self.sop(hidden)
            out["sop_loss"] = F.cross_entropy(sop_logits.float(), batch["sop_labels"])
            out["sop_correct"] = (sop_logits.argmax(-1) == batch["sop_labels"]).sum()
            out["sop_count"] = batch["sop_labels"].new_tensor(batch["sop_labels"].numel())
            out["loss"] = out["loss"] + out["sop_loss"]
        return out
