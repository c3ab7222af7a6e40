"""Import a HuggingFace BERT checkpoint folder as an effbert model, with any attention mechanism.

The seeds start efficient models from pretrained BERT: the projections, feed-forward layers, norms and
embeddings are BERT's, only the token mixing changes. A folder with config.json, model.safetensors (or
pytorch_model.bin) and tokenizer.json (or vocab.txt) becomes models/<name>/checkpoints/cp-0000.pt in our
checkpoint format, so `effbert glue` fine-tunes it and pretraining continues from it (from_cp).

Names: HF's `bert.` prefix is optional (sentence-transformers checkpoints save the bare BertModel), and
old TensorFlow-converted checkpoints spell LayerNorm's weight and bias `gamma` and `beta`.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from effbert.config import CONFIG_FILE, Config, ModelConfig, check_attention, config_json, load_config, parse_config
from effbert.data.tokenizer import import_tokenizer
from effbert.errors import InputError
from effbert.files import read_json, sha256_file, write_json
from effbert.layout import imported_checkpoint
from effbert.locks import writer_lock
from effbert.model.pretraining import PretrainingModel
from effbert.train.checkpoints import save_checkpoint
from effbert.train.initialise import initialise_from

# HF name (after the optional "bert." prefix) -> ours, as (pattern, replacement) on whole names
_RENAMES = [
    (r"embeddings\.word_embeddings\.", "encoder.embeddings.word."),
    (r"embeddings\.position_embeddings\.", "encoder.embeddings.position."),
    (r"embeddings\.token_type_embeddings\.", "encoder.embeddings.token_type."),
    (r"embeddings\.LayerNorm\.", "encoder.embeddings.norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"encoder.blocks.\1.attention.\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.blocks.\1.attention.output."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.blocks.\1.attention_norm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.blocks.\1.ffn_in."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.blocks.\1.ffn_out."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.blocks.\1.ffn_norm."),
    (r"pooler\.dense\.", "sop.pooler.dense."),  # BERT's pooler is the input of our SOP head, as of its NSP head
    (r"cls\.predictions\.transform\.dense\.", "mlm.dense."),
    (r"cls\.predictions\.transform\.LayerNorm\.", "mlm.norm."),
    (r"cls\.predictions\.bias", "mlm.bias"),
]
# tensors that are not weights of ours: a buffer of positions 0..n-1, and the tied decoder (checked apart)
_SKIP = re.compile(r"(embeddings\.position_ids|cls\.predictions\.decoder\.(weight|bias))$")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
def read_hf_config(hf_dir: Path) -> dict:
    path = Path(hf_dir) / "config.json"
    try:
        return read_json(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not found (expected a HuggingFace BERT checkpoint folder)") from None


def hf_model_config(hf: dict, source: str, attention: dict | None = None) -> ModelConfig:
    """Our ModelConfig with the sizes of HF's BertConfig `hf`; `attention` as in config.json (None: softmax)."""
    expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, value in expected.items():  # anything else computes another function with the same weights
        if hf.get(key, value) != value:
            raise InputError(f"{source}: {key} is {hf[key]!r}; only {value!r} can be imported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings") if k not in hf]
    if missing:
        raise InputError(f"{source}: missing key(s) {', '.join(missing)}")
    model = {
        "vocab_size": hf["vocab_size"],
        "max_seq_len": hf["max_position_embeddings"],
        "hidden_size": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "ffn_size": hf["intermediate_size"],
        "dropout": float(hf.get("hidden_dropout_prob", 0.1)),
        "attention_dropout": float(hf.get("attention_probs_dropout_prob", 0.1)),
        "norm": "post",
        "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
        "type_vocab_size": hf.get("type_vocab_size", 2),
        "attention": attention if attention is not None else {"type": "softmax"},
    }
    return parse_config({"model": model}, source).model


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin (loaded with weights_only: no code runs)."""
    hf_dir = Path(hf_dir)
    if (hf_dir / _HF_FILES[0]).is_file():
        try:
            return load_file(hf_dir / _HF_FILES[0])
        except Exception as e:  # safetensors raises SafetensorError on a truncated or damaged file
            reason = " ".join(str(e).split()) or type(e).__name__
            raise InputError(f"{hf_dir / _HF_FILES[0]}: not a readable safetensors file ({reason})") from None
    if (hf_dir / _HF_FILES[1]).is_file():
        try:
            return torch.load(hf_dir / _HF_FILES[1], map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that is more than tensors, or a damaged file: never loaded unsafely
            raise InputError(f"{hf_dir / _HF_FILES[1]}: not a file of tensors ({type(e).__name__}); only tensors "
                             "and plain values are loaded (model.safetensors is preferred)") from None
    raise InputError(f"{hf_dir}: no {' or '.join(_HF_FILES)}")


def convert_hf_state(hf_state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF BERT tensors under our PretrainingModel's names, and the HF names that have no counterpart."""
    ours, unmapped = {}, []
    for name, tensor in hf_state.items():
        bare = name.removeprefix("bert.")
        bare = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", bare))
        if _SKIP.search(bare):
            continue
        for pattern, replacement in _RENAMES:
            new, hits = re.subn(f"^{pattern}", replacement, bare)
            if hits:
                ours[new] = tensor
                break
        else:
            unmapped.append(name)  # e.g. an NSP or task classifier: not part of our model
    if "encoder.embeddings.word.weight" not in ours:
        raise InputError(f"{source}: no embeddings.word_embeddings.weight (is this a BERT checkpoint?)")
    decoder = hf_state.get("cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, ours["encoder.embeddings.word.weight"]):
        # our MLM decoder is tied to the word embeddings and cannot hold a separate matrix
        unmapped.append("cls.predictions.decoder.weight")
    return ours, unmapped


def import_hf_bert(
    hf_dir: str | Path,
    model_dir: str | Path,
    *,
    attention: dict | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Write models/<name>/checkpoints/cp-0000.pt from a HuggingFace BERT folder; returns its path.

    `attention`: the mechanism as in config.json's model.attention (e.g. {"type": "nystrom"}); None takes
    the model folder's config.json when it has one, else softmax. The checkpoint's model config has BERT's
    sizes; the folder's config.json is written with them when absent, and kept (with its other sections
    used in the checkpoint) when present; a given `attention` that does not validate is an error naming it as
    the CLI's --attention. Tensors the mechanism adds keep their fresh initialisation and BERT tensors it has
    no place for go unused; both are logged.
    """
    hf_dir, model_dir = Path(hf_dir), Path(model_dir)
    if attention is not None:
        check_attention(attention, "--attention")  # before anything is read or locked
    with writer_lock(model_dir, "import"):
        return _import(hf_dir, model_dir, attention, log)


def _import(hf_dir: Path, model_dir: Path, attention: dict | None, log: Callable[[str], None]) -> Path:
    config_path = model_dir / CONFIG_FILE
    existing = load_config(config_path) if config_path.is_file() else None
    if existing is not None and existing.model.layer_attention:
        raise InputError(f"{config_path}: model.layer_attention: an import puts one attention (model.attention) in "
                         "every layer of the BERT; remove layer_attention here, and give the schedule to a folder "
                         "that pretrains with from_cp naming this one's checkpoints/cp-0000.pt")
    if attention is None and existing is not None:
        attention = existing.model.attention.model_dump(mode="json")
    model_cfg = hf_model_config(read_hf_config(hf_dir), str(hf_dir / "config.json"), attention)
    config = (existing or Config()).model_copy(update={"model": model_cfg})
    tokenizer_json = tokenizer_text(hf_dir)
    tokenizer_size = Tokenizer.from_str(tokenizer_json).get_vocab_size(with_added_tokens=True)
    if tokenizer_size > model_cfg.vocab_size:
        raise InputError(f"{hf_dir}: the tokenizer has {tokenizer_size} tokens, more than vocab_size "
                         f"{model_cfg.vocab_size} in config.json")

    weights_file = next((hf_dir / f for f in _HF_FILES if (hf_dir / f).is_file()), hf_dir)
    state, unmapped = convert_hf_state(read_hf_weights(hf_dir), str(weights_file))
    torch.manual_seed(config.pretraining.seed)  # the tensors BERT lacks start the same way every time
    model = PretrainingModel(model_cfg, model_cfg.vocab_size, sop=config.pretraining.sop)
    if unmapped:
        log(f"{weights_file}: not imported (no counterpart in effbert's BERT): {', '.join(unmapped)}")
    initialise_from(model, state, log=log, source=str(weights_file))

    out = imported_checkpoint(model_dir)
    identity = {"imported": {  # what these weights are made of (a GLUE run records it as its starting point)
        "from": str(hf_dir), "config_sha256": sha256_file(hf_dir / "config.json"),
        "weights_sha256": sha256_file(weights_file),
        "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
        "attention": model_cfg.attention.model_dump(mode="json"), "seed": config.pretraining.seed,
        "sop": config.pretraining.sop,
    }}
    save_checkpoint(
        out, model=model.state_dict(), step=0, config=config_json(config), vocab_size=model_cfg.vocab_size,
        tokenizer=tokenizer_json, imported_from=str(hf_dir), identity=identity,
    )
    if existing is None:
        write_json(config_path, {"model": config_json(config)["model"]})
    elif existing.model != model_cfg:
        log(f"{config_path}: its model section differs from the imported BERT's; pretraining from_cp "
            f"{out.relative_to(model_dir)} adapts what it can (initialise_from) and names what it cannot")
    log(f"wrote {out}")
    return out


def tokenizer_text(hf_dir: Path) -> str:
    """tokenizer.json (preferred: it keeps the normaliser's exact settings) or vocab.txt, as our tokenizer."""
    given = next((hf_dir / f for f in ("tokenizer.json", "vocab.txt") if (hf_dir / f).is_file()), None)
    if given is None:
        raise InputError(f"{hf_dir}: no tokenizer.json or vocab.txt")
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.from_file(str(import_tokenizer(given, Path(tmp) / "tokenizer")))
    # HF files often pad to a fixed length and truncate: our batching pads itself and marks padding in the mask
    tok.no_padding()
    tok.no_truncation()
    return tok.to_str(pretty=True)
