"""`effbert convert-norm`: a Pre-LN checkpoint as Pre-RMSNorm or Pre-CRMSNorm, computing the same function.

Jiang et al. (NeurIPS 2023), on this BERT-style encoder (effbert.model.norms):
1. Zero-mean main branch. The embeddings end in a LayerNorm whose weight and bias move the mean, so the
   model recentres its output explicitly (no weights change; the tables stay as they are, the MLM decoder
   being tied to the word table). Each residual branch's output projection y = A_o x + b_o (attention's
   `output`, `ffn_out`) becomes A_o - (1/d) 1 1^T A_o, b_o - mean(b_o) 1: its output has zero mean.
2. Pre-RMSNorm: every other LayerNorm (the blocks' and the final one) becomes an RMSNorm with the same
   weight and bias, which equals it on zero-mean inputs.
3. Pre-CRMSNorm: the stream is stored as its first d-1 entries. An input projection y = A z + b reading
   a block norm's output gamma * z + beta (z the normalised zero-mean d-vector, scaled by s = 1/sqrt(l)
   under norm_scaling) becomes M - m_d 1^T with M = A diag(gamma) (m_d its last column, then dropped)
   and b + s A beta, and the block norm keeps unit weight and zero bias; the output projections drop
   their last row and bias entry; the final CRMSNorm writes the whole d-vector with LayerNorm's weight
   and bias, so the heads on top are unchanged.

The identity holds in eval mode. In training, dropout on a branch's output breaks its zero mean: a
pre_rmsnorm model then trains as a plain Pre-RMSNorm model (RMSNorm of a stream whose mean is free,
no recentring), and a pre_crmsnorm model drops entries of the stored d-1 (its stream stays zero-mean by
construction); neither training is Pre-LN's exactly. The converted checkpoint holds the weights, the
config with the new model.norm, the tokenizer and an identity naming its source; no optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from effbert.config import ModelConfig, config_json, parse_config
from effbert.errors import InputError
from effbert.train.checkpoints import find_checkpoint, read_checkpoint, save_checkpoint
from effbert.train.identity import checkpoint_identity, digest

TARGETS = ("pre_rmsnorm", "pre_crmsnorm")
_OUTPUTS = ("attention.output", "ffn_out")  # the projections that write the residual stream
_READERS = {"attention_norm": ("attention.query", "attention.key", "attention.value"), "ffn_norm": ("ffn_in",)}


def convert_state(state: dict[str, torch.Tensor], cfg: ModelConfig, to: str, prefix: str = "encoder."
                  ) -> dict[str, torch.Tensor]:
    """A Pre-LN model's weights (`prefix` before the encoder's names) as model.norm `to`; others copied."""
    if cfg.norm != "pre":
        raise InputError(f"model.norm is {cfg.norm!r}: convert-norm converts a Pre-LN model (norm 'pre')")
    if to not in TARGETS:
        raise InputError(f"convert-norm makes one of {list(TARGETS)}, not {to!r}")
    bare = [i for i in range(cfg.num_layers) if f"{prefix}blocks.{i}.attention.output.weight" not in state]
    if bare:  # every layer is checked: under model.layer_attention the layers' mechanisms differ
        raise InputError(f"attention {cfg.layer_attentions()[bare[0]].type!r} (layer {bare[0]}) writes the residual "
                         "stream without an output projection, so its output cannot be made zero-mean: no exact "
                         "conversion")
    out = dict(state)
    work = {k: v.double() for k, v in state.items() if k.startswith(f"{prefix}blocks.") and v.is_floating_point()}
    for layer in range(cfg.num_layers):
        block = f"{prefix}blocks.{layer}."
        for name in _OUTPUTS:  # step 1: every column of A_o, and b_o, zero-mean
            weight, bias = work[f"{block}{name}.weight"], work[f"{block}{name}.bias"]
            work[f"{block}{name}.weight"] = weight - weight.mean(0, keepdim=True)
            work[f"{block}{name}.bias"] = bias - bias.mean()
            if to == "pre_crmsnorm":  # step 3: the stream's last entry is minus the sum of the rest
                work[f"{block}{name}.weight"] = work[f"{block}{name}.weight"][:-1]
                work[f"{block}{name}.bias"] = work[f"{block}{name}.bias"][:-1]
        if to == "pre_crmsnorm":
            _fold_norms(work, block, scale=(layer + 1) ** -0.5 if cfg.norm_scaling else 1.0)
    for key, value in work.items():
        out[key] = value.to(state[key].dtype)
    return out


def _fold_norms(work: dict[str, torch.Tensor], block: str, scale: float) -> None:
    """Step 3 for one block: each norm's weight and bias into the projections that read it."""
    for norm, readers in _READERS.items():
        gamma, beta = work[f"{block}{norm}.weight"], work[f"{block}{norm}.bias"]
        for reader in readers:
            if f"{block}{reader}.weight" not in work:  # Reformer: no key projection
                continue
            a = work[f"{block}{reader}.weight"]  # (out, d)
            m = a * gamma  # A diag(gamma)
            work[f"{block}{reader}.weight"] = m[:, :-1] - m[:, -1:]  # (out, d - 1)
            work[f"{block}{reader}.bias"] = work[f"{block}{reader}.bias"] + scale * (a @ beta)
        work[f"{block}{norm}.weight"] = torch.ones_like(gamma[:-1])
        work[f"{block}{norm}.bias"] = torch.zeros_like(beta[:-1])


def convert_norm(source: str | Path, out: str | Path, to: str, *, checkpoint: str = "last",
                 log: Callable[[str], None] = print) -> Path:
    """Write `out`: the checkpoint `source` (a file, or a model folder's `checkpoint`) converted to norm `to`."""
    source, out = Path(source), Path(out)
    cp_path = source if source.is_file() else find_checkpoint(source, checkpoint)
    if out.resolve() == cp_path.resolve():
        raise InputError(f"{out}: the converted checkpoint would replace its source; name another file")
    state = read_checkpoint(cp_path)
    saved = state["config"]
    config = parse_config(saved if "model" in saved else {"model": saved}, str(cp_path))
    try:
        weights = convert_state(state["model"], config.model, to)
    except InputError as e:
        raise InputError(f"{cp_path}: {e}") from None
    model_cfg = ModelConfig.model_validate(config.model.model_dump() | {"norm": to})
    converted = config.model_copy(update={"model": model_cfg})
    identity = {"converted": {"norm": to, "source": digest(checkpoint_identity(state))}}
    save_checkpoint(out, model=weights, step=state.get("step", 0), config=config_json(converted),
                    vocab_size=state["vocab_size"], tokenizer=state.get("tokenizer"), converted_from=str(cp_path),
                    identity=identity)
    log(f"wrote {out} ({to}, from {cp_path})")
    return out
