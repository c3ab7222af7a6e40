"""A BERT-style encoder with a pluggable attention mechanism (nanoGPT-plain)."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from effbert.attention import build_attention, padding_mask
from effbert.config import ModelConfig
from effbert.model.norms import apply_norm, block_norm, embedding_output, final_norm, stream_width


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.word = nn.Embedding(vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.cfg = cfg

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.position.num_embeddings:
            raise ValueError(f"sequence of {n} tokens is longer than max_seq_len {self.position.num_embeddings}")
        x = self.word(input_ids) + self.position.weight[:n]
        if token_type_ids is not None:
            x = x + self.token_type(token_type_ids)
        else:
            x = x + self.token_type.weight[0]
        return self.dropout(embedding_output(self.cfg, self.norm(x)))  # (B, N, stream width)


class SelfAttention(nn.Module):
    """Projections and head split around one attention mechanism.

    A mechanism that mixes tokens without queries and keys (FNet) declares `mixes_hidden_states` and gets
    the hidden states themselves, with no projections around it; one that shares queries and keys
    (Reformer) declares `shares_query_key` and gets no key projection. The projections read and write the
    residual stream's width (d - 1 under pre_crmsnorm); the heads between them are hidden_size wide.
    """

    def __init__(self, cfg: ModelConfig, shared: dict):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.mechanism = build_attention(cfg, shared)  # cfg.attention: this layer's (ModelConfig.for_layer)
        self.projected = not getattr(self.mechanism, "mixes_hidden_states", False)
        if self.projected:
            width, inner = stream_width(cfg), cfg.hidden_size
            self.query = nn.Linear(width, inner)
            shared_qk = getattr(self.mechanism, "shares_query_key", False)
            self.key = None if shared_qk else nn.Linear(width, inner)
            self.value = nn.Linear(width, inner)
            self.output = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not self.projected:
            return self.mechanism(x, mask)
        b, n = x.shape[:2]
        inner = self.query.out_features  # hidden_size, whatever the stream's width

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, inner // self.num_heads).transpose(1, 2)  # (B, H, N, D)

        q = heads(self.query(x))
        k = q if self.key is None else heads(self.key(x))
        out = self.mechanism(q, k, heads(self.value(x)), mask)
        return self.output(out.transpose(1, 2).reshape(b, n, inner))


class Block(nn.Module):
    """One layer; model.norm places its norms (effbert.model.norms). `layer` is its 1-based depth: LayerNorm
    Scaling (model.norm_scaling; Sun et al., "The Curse of Depth in LLMs") multiplies its input norms'
    output by 1/sqrt(layer). Its attention is cfg.attention: the Encoder hands each block its layer's config."""

    def __init__(self, cfg: ModelConfig, shared: dict, layer: int = 1):
        super().__init__()
        self.placement = cfg.norm
        self.scale = layer ** -0.5 if cfg.norm_scaling else 1.0
        width = stream_width(cfg)
        self.attention = SelfAttention(cfg, shared)
        self.attention_norm = block_norm(cfg)
        self.ffn_in = nn.Linear(width, cfg.ffn_size)
        self.ffn_out = nn.Linear(cfg.ffn_size, width)
        self.ffn_norm = block_norm(cfg)
        if cfg.norm == "peri":  # Peri-LN's second norm of each sublayer, on its output
            self.attention_out_norm = block_norm(cfg)
            self.ffn_out_norm = block_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(F.gelu(self.ffn_in(x)))

    def _normed(self, norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = apply_norm(norm, x, mask)
        return y if self.scale == 1.0 else y * self.scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.placement == "post":  # as BERT: LayerNorm after each residual sum
            x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
            return self.ffn_norm(x + self.dropout(self._ffn(x)))
        attended = self.attention(self._normed(self.attention_norm, x, mask), mask)
        if self.placement == "peri":
            attended = self.attention_out_norm(attended)
        x = x + self.dropout(attended)
        fed = self._ffn(self._normed(self.ffn_norm, x, mask))
        if self.placement == "peri":
            fed = self.ffn_out_norm(fed)
        return x + self.dropout(fed)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, vocab_size)
        shared: dict = {}  # per attention: the parameters its mechanism ties across layers (_shared_by)
        layers = [cfg.for_layer(i) for i in range(cfg.num_layers)]  # model.attention, or layer_attention's
        self.blocks = nn.ModuleList(Block(c, _shared_by(c, shared), i + 1) for i, c in enumerate(layers))
        self.final_norm = final_norm(cfg)  # none under post; under pre_crmsnorm it widens d - 1 back to d
        self.apply(init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = padding_mask(attention_mask)  # (B, N), True = real token; None when nothing is padded
        x = self.embeddings(input_ids, token_type_ids)  # (B, N, H), or (B, N, H - 1) under pre_crmsnorm
        for block in self.blocks:
            x = block(x, mask)
        return apply_norm(self.final_norm, x, mask) if self.final_norm is not None else x


def _shared_by(cfg: ModelConfig, shared: dict) -> dict:
    """The dict in which cfg.attention's mechanism ties parameters across layers (Linformer's share="layers"):
    one per distinct attention, so that under model.layer_attention only layers of the same mechanism and
    options share them."""
    key = json.dumps(cfg.attention.model_dump(mode="json"), sort_keys=True)
    return shared.setdefault(key, {})


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
