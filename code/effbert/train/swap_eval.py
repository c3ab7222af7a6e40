"""Drop-in deployment: swap efficient attention into a pretrained BERT and measure what survives.

From a HuggingFace BERT folder (what `effbert import-hf` reads), the original model (softmax) and one model
per variant are built with every pretrained weight kept; only the token mixing changes. Each is compared
with the original on the same passages, each passage run alone (no padding: FNet's outputs depend on the
padded length, and Linformer's zeroed padded rows enter its softmax):

    cos_layer_<l>  mean over real tokens of cos(h_l original, h_l swapped), l = 1..num_layers
    pooled_cos     mean over passages of cos(mean-pooled last layer, original vs swapped): the sentence
                   embedding of sentence-transformers checkpoints such as all-MiniLM-L6-v2
    nn_agreement   share of passages whose nearest other passage (cosine of pooled embeddings) is the
                   same under the swapped model as under the original
    sts_spearman   with a GLUE folder in the official layout (<glue>/STS-B/dev.tsv, GLUE's header and
                   columns, read by effbert.data.glue): Spearman of the pooled embeddings' cosine of each
                   sentence pair with its gold score (a property of each model, the original's included)

Parameters BERT lacks start as follows: Linformer's E and F (k x max_seq_len) are the first k rows of the
identity, E = F = [I_k | 0], so the projected keys and values are the first k tokens' own: for a passage of
exactly n = k tokens this is softmax attention (exact); for n > k every token attends to the first k tokens
only; for n < k the k - n empty rows are zero keys with zero values that still take softmax weight.
Performer's features and YOSO's hashes are drawn from `seed`.

Adaptation (settings.adaptation): that many masked-LM steps (BERT's 80/10/10 masking of 15% of the tokens,
InstanceMaker.mask) of each swapped model on `train_texts`, through the one training loop
(effbert.train.loop.fit), then the same measures against the unchanged original. The transformer blocks
train; the embeddings and the MLM head stay. A checkpoint without an MLM head (sentence-transformers saves
the bare BertModel) first gets one fitted on the original model's frozen outputs (`fitted_head`); every
model adapts with that head, so the loss pulls it towards what the original's head reads. The original is
adapted too (the "softmax" row): how far masked-LM steps alone move the representations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from effbert.attention.linformer import LinformerAttention
from effbert.config import ModelConfig, check_attention
from effbert.constants import IGNORE
from effbert.data.glue import GlueSplit, load_split, spearman
from effbert.data.instances import InstanceMaker
from effbert.data.tokenizer import SpecialTokens, special_tokens
from effbert.errors import InputError
from effbert.model.pretraining import PretrainingModel
from effbert.train.hf_import import convert_hf_state, hf_model_config, read_hf_config, read_hf_weights, tokenizer_text
from effbert.train.initialise import initialise_from
from effbert.train.loop import Optimisation, Reporting, fit

ORIGINAL = "softmax"
ZERO_SHOT = "zero-shot"


@dataclass(frozen=True)
class Pretrained:
    """A HuggingFace BERT folder, read once: its sizes, its tensors under our names, its tokenizer."""

    hf: dict
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: str

    def model_config(self, attention: dict) -> ModelConfig:
        return hf_model_config(self.hf, self.source, attention)


def load_pretrained(hf_dir: str | Path) -> Pretrained:
    hf_dir = Path(hf_dir)
    state, _ = convert_hf_state(read_hf_weights(hf_dir), str(hf_dir))
    return Pretrained(read_hf_config(hf_dir), state, Tokenizer.from_str(tokenizer_text(hf_dir)), str(hf_dir))


def parse_variant(text: str) -> dict:
    """'nystrom:num_landmarks=64,pinv_iterations=6' -> {"type": "nystrom", "num_landmarks": 64, ...};
    values are JSON (64, 0.5, true, "heads") or else plain strings."""
    kind, _, rest = text.partition(":")
    attention: dict = {"type": kind.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--variants {text!r}: {item!r} is not key=value (e.g. nystrom:num_landmarks=64)")
        try:
            attention[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            attention[key.strip()] = value.strip()
    return attention


def identity_projections(model: torch.nn.Module) -> int:
    """Set every Linformer E and F to [I_k | 0] (see the module doc); returns how many layers were set."""
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LinformerAttention):
                for proj in (module.proj_k, module.proj_v):
                    if proj is not None:
                        k, length = proj.shape[-2:]
                        proj.copy_(torch.eye(k, length).expand_as(proj))
                count += 1
    return count


def build_swapped(pre: Pretrained, attention: dict, seed: int = 0) -> PretrainingModel:
    """The pretrained model with `attention` in every layer, all BERT weights kept, in eval mode."""
    cfg = pre.model_config(attention)
    torch.manual_seed(seed)  # the tensors BERT lacks (and Performer's features) start the same way every time
    model = PretrainingModel(cfg, cfg.vocab_size, sop=False)
    initialise_from(model, pre.state, log=lambda _: None, source=pre.source)
    identity_projections(model)
    return model.eval()


def encode(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each text with [CLS] and [SEP], cut to max_len tokens."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.enable_truncation(max_len)
    return [e.ids for e in tok.encode_batch(texts)]


@torch.no_grad()
def layer_states(model: PretrainingModel, passages: list[list[int]], seed: int = 0) -> list[list[torch.Tensor]]:
    """For each passage (run alone), every layer's output: num_layers tensors of shape (n, hidden)."""
    model.eval()
    found: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: found.append(out[0]))
             for block in model.encoder.blocks]
    device = next(model.parameters()).device
    states = []
    try:
        for ids in passages:
            torch.manual_seed(seed)  # YOSO hashes anew on every call
            x = torch.tensor([ids], device=device)
            model.encoder(x, torch.ones_like(x))
            states.append([h.float().cpu() for h in found])
            found.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return states


def compare(reference: list[list[torch.Tensor]], swapped: list[list[torch.Tensor]]) -> dict[str, float]:
    """The measures of the module doc, of `swapped` against `reference` (both from layer_states)."""
    layers = len(reference[0])
    row = {}
    for layer in range(layers):
        cos = torch.cat([F.cosine_similarity(r[layer], s[layer], dim=-1) for r, s in zip(reference, swapped,
                                                                                          strict=True)])
        row[f"cos_layer_{layer + 1}"] = cos.mean().item()  # over every real token of every passage
    pooled_ref, pooled = (torch.stack([p[-1].mean(0) for p in states]) for states in (reference, swapped))
    row["pooled_cos"] = F.cosine_similarity(pooled_ref, pooled, dim=-1).mean().item()
    row["nn_agreement"] = float((nearest(pooled_ref) == nearest(pooled)).float().mean())
    return row


def nearest(embeddings: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar other row."""
    unit = F.normalize(embeddings, dim=-1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-math.inf)
    return similarity.argmax(-1)


def sts_pairs(glue_dir: Path) -> GlueSplit:
    """STS-B's dev split from a GLUE folder in the official layout (<glue_dir>/STS-B/dev.tsv, read by
    effbert.data.glue, the fine-tuning's reader): sentence pairs with their gold similarity scores (0-5)."""
    return load_split(glue_dir, "STS-B", "dev")


@torch.no_grad()
def sts_spearman(model: PretrainingModel, tokenizer: Tokenizer, split: GlueSplit, max_len: int,
                 seed: int = 0) -> float:  # fmt: skip
    """Spearman of cos(pooled a, pooled b) with the gold scores of an STS-B split (sts_pairs)."""
    pooled = []
    for texts in (split.texts_a, split.texts_b or []):
        states = layer_states(model, encode(tokenizer, texts, max_len), seed)
        pooled.append(torch.stack([s[-1].mean(0) for s in states]))
    return spearman(F.cosine_similarity(*pooled, dim=-1).numpy(), np.asarray(split.labels, dtype=float))


# ---- adaptation: masked-LM steps through the training loop ----

@dataclass(frozen=True)
class Adaptation:
    """`steps` masked-LM steps of `batch_size` passages cut to `max_len` tokens (a random window of each)."""

    steps: int
    lr: float = 3e-5
    batch_size: int = 8
    max_len: int = 128
    warmup_steps: int = 0
    head_lr: float = 1e-3
    head_epochs: int = 10


def mlm_batches(passages: list[list[int]], specials: SpecialTokens, vocab_size: int, adaptation: Adaptation,
                seed: int):  # fmt: skip
    """An endless stream of masked batches: random passages, a random window of each, masked anew each time."""
    rng = np.random.default_rng(seed)
    maker = InstanceMaker(adaptation.max_len, specials, vocab_size)
    while True:
        rows, labels = [], []
        for index in rng.integers(len(passages), size=adaptation.batch_size):
            ids = np.asarray(passages[index], dtype=np.int64)
            start = rng.integers(max(1, len(ids) - adaptation.max_len + 1))
            window = ids[start : start + adaptation.max_len].copy()
            window[0] = specials.cls  # a window's first token is never predicted (mask() skips position 0)
            masked, label = maker.mask(window, rng)
            rows.append(masked)
            labels.append(label)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), specials.pad, dtype=torch.long)
        mlm_labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[i, : len(r)] = torch.from_numpy(r)
            mlm_labels[i, : len(r)] = torch.from_numpy(lab.astype(np.int64))
        mask = input_ids != specials.pad
        yield {"input_ids": input_ids, "attention_mask": mask.long(), "token_type_ids": torch.zeros_like(input_ids),
               "mlm_labels": mlm_labels}


def _mlm_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    device = next(model.parameters()).device
    out = model({k: v.to(device) for k, v in batch.items()})
    return out["mlm_loss"], {"mlm_loss": out["mlm_loss"].detach()}


def adapt(model: PretrainingModel, batches, adaptation: Adaptation, *, seed: int = 0,
          desc: str = "adapt") -> list[dict]:  # fmt: skip
    """`adaptation.steps` masked-LM steps of `model` (its trainable parameters) by effbert.train.loop.fit."""
    optimisation = Optimisation(steps=adaptation.steps, lr=adaptation.lr, warmup_steps=adaptation.warmup_steps)
    report = Reporting(log_every=max(1, adaptation.steps // 4), desc=desc)
    records = fit(model, _mlm_loss, batches, optimisation, report=report, seed=seed)
    model.eval()
    return records


def fitted_head(pre: Pretrained, passages: list[list[int]], adaptation: Adaptation, seed: int,
                device: torch.device) -> dict[str, torch.Tensor]:  # fmt: skip
    """The MLM head's tensors: the checkpoint's, else fitted on the original model with its encoder frozen.

    The frozen encoder's outputs at the masked positions of `adaptation.steps` batches are computed once and
    the head alone (dense, LayerNorm, bias; the decoder is the word embeddings) trains on them for
    `adaptation.head_epochs` passes, at head_lr: many cheap steps, so that the head decodes the original well.
    """
    model = build_swapped(pre, {"type": ORIGINAL}, seed).to(device)
    if "mlm.dense.weight" in pre.state:
        return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("mlm.")}
    specials = special_tokens(pre.tokenizer)
    stream = mlm_batches(passages, specials, model.encoder.embeddings.word.num_embeddings, adaptation, seed)
    cached = []
    with torch.no_grad():
        for _, batch in zip(range(adaptation.steps), stream, strict=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            predicted = batch["mlm_labels"] != IGNORE
            cached.append({"hidden": hidden[predicted], "labels": batch["mlm_labels"][predicted]})
    for p in model.parameters():
        p.requires_grad_(p is not model.encoder.embeddings.word.weight)  # the tied decoder stays BERT's
    steps = adaptation.steps * adaptation.head_epochs
    head = model.mlm
    optimisation = Optimisation(steps=steps, lr=adaptation.head_lr)
    fit(head, _head_loss, (cached[i % len(cached)] for i in range(steps)), optimisation,
        report=Reporting(log_every=max(1, steps // 4), desc="fit MLM head"), seed=seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("mlm.")}


def _head_loss(head: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    loss = F.cross_entropy(head(batch["hidden"]).float(), batch["labels"])
    return loss, {"mlm_loss": loss.detach()}


def adapted(pre: Pretrained, attention: dict, head: dict[str, torch.Tensor], passages: list[list[int]],
            adaptation: Adaptation, seed: int, device: torch.device) -> PretrainingModel:  # fmt: skip
    """A swapped model after `adaptation.steps` masked-LM steps, starting from the fitted head."""
    model = build_swapped(pre, attention, seed).to(device)
    model.load_state_dict({**model.state_dict(), **head})
    for name, p in model.named_parameters():  # the blocks learn; embeddings and the fitted head stay
        p.requires_grad_(name.startswith("encoder.blocks."))
    specials = special_tokens(pre.tokenizer)
    batches = mlm_batches(passages, specials, model.encoder.embeddings.word.num_embeddings, adaptation, seed)
    adapt(model, batches, adaptation, seed=seed, desc=f"adapt {attention['type']}")
    return model


# ---- the whole comparison ----

@dataclass(frozen=True)
class SwapSettings:
    """max_len: tokens per evaluated passage; sts_dir: a GLUE folder with STS-B/dev.tsv (None: no STS-B)."""

    max_len: int | None = None  # None: 512, or the BERT's position table when it is shorter
    adaptation: Adaptation | None = None
    sts_dir: Path | None = None
    seed: int = 0
    device: str = "cpu"


def check_lengths(settings: SwapSettings, pre: Pretrained) -> int:
    """The passages' length: --max_len, else 512 or the BERT's position table when that is shorter. Passages fit
    the position table and hold at least [CLS] and [SEP]; adaptation windows (--adapt_len, cut from those
    passages, so never longer) hold a token to predict after [CLS]; adaptation batches (--adapt_batch) hold a
    passage. An InputError naming the option and the limit, before any run."""
    limit = pre.hf["max_position_embeddings"]
    max_len = min(512, limit) if settings.max_len is None else settings.max_len
    if not 2 <= max_len <= limit:
        raise InputError(f"--max_len {max_len}: expected 2 <= max_len <= {limit}, the "
                         f"max_position_embeddings of {pre.source}/config.json")
    adaptation = settings.adaptation
    if adaptation is not None and adaptation.max_len < 2:
        raise InputError(f"--adapt_len {adaptation.max_len}: expected at least 2 ([CLS] and a token to predict)")
    if adaptation is not None and adaptation.batch_size < 1:
        raise InputError(f"--adapt_batch {adaptation.batch_size}: expected at least 1 passage per step")
    return max_len


def swap_eval(hf_dir: str | Path, texts: list[str], variants: list[str], settings: SwapSettings,
              train_texts: list[str] | None = None, log: Callable[[str], None] = print) -> list[dict]:  # fmt: skip
    """One row per (variant, stage): the measures of the module doc, zero-shot and (with settings.adaptation)
    after adaptation on `train_texts` (default: `texts`). The original (softmax) is always the first variant."""
    if not texts:
        raise InputError("swap-eval: no passages to compare on")
    variants = [ORIGINAL, *(v for v in variants if v != ORIGINAL)]
    attentions = {v: parse_variant(v) for v in variants}
    for name, attention in attentions.items():  # a misspelt option fails here, before anything is read
        check_attention(attention, f"--variants {name!r}")
    pre, device = load_pretrained(hf_dir), torch.device(settings.device)
    for attention in attentions.values():
        pre.model_config(attention)  # what the BERT folder's config.json lacks fails here, before any model runs
    max_len = check_lengths(settings, pre)  # passages' tokens
    sts = None if settings.sts_dir is None else sts_pairs(settings.sts_dir)  # a wrong folder fails before any run
    passages = encode(pre.tokenizer, texts, max_len)
    reference = layer_states(build_swapped(pre, attentions[ORIGINAL], settings.seed).to(device), passages,
                             settings.seed)
    rows = []
    head = None
    if settings.adaptation is not None:
        train = encode(pre.tokenizer, train_texts or texts, max_len)
        head = fitted_head(pre, train, settings.adaptation, settings.seed, device)
    for name, attention in attentions.items():
        models = {ZERO_SHOT: build_swapped(pre, attention, settings.seed).to(device)}
        if head is not None:
            stage = f"after {settings.adaptation.steps} MLM steps"
            models[stage] = adapted(pre, attention, head, train, settings.adaptation, settings.seed, device)
        for stage, model in models.items():
            row = {"variant": name, "stage": stage, "mechanism": attention["type"],
                   **compare(reference, layer_states(model, passages, settings.seed))}
            if sts is not None:
                row["sts_spearman"] = sts_spearman(model, pre.tokenizer, sts, max_len, settings.seed)
            log(f"{name} ({stage}): pooled_cos {row['pooled_cos']:.4f}, nn_agreement {row['nn_agreement']:.3f}")
            rows.append(row)
    return rows
