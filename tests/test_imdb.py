"""IMDB in the GLUE fine-tuning path: the loader reads the aclImdb layout (a tiny tree written here), dev is held
out of train, test is labelled and reported, and IMDB never enters the GLUE score."""

from __future__ import annotations

import pytest

from effbert.constants import GLUE_SCORE_TASKS, GLUE_TASKS
from effbert.data.glue import get_task, glue_score, load_split
from effbert.errors import InputError

# 12 negative and 11 positive training reviews, ids 0..11 / 0..10: numbered as the release numbers them,
# <id>_<rating>.txt, so that id order (0, 1, 2, ..., 10, 11) differs from the names' text order (0, 1, 10, 11, 2)
TRAIN = {"neg": {i: f"neg review {i}" for i in range(12)}, "pos": {i: f"pos review {i}" for i in range(11)}}
TEST = {"neg": {3: "  Meh.<br /><br />Really meh. \n"}, "pos": {7: "\tCaf\u00e9 scene was great\r\n"}}


def write_aclimdb(root, train=TRAIN, test=TEST):
    """<root>/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt, plus the unlabelled train/unsup the loader skips."""
    for split, reviews in (("train", train), ("test", test)):
        for label, texts in reviews.items():
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i, text in texts.items():
                (folder / f"{i}_{2 if label == 'neg' else 9}.txt").write_bytes(text.encode("utf-8"))
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("no label", encoding="utf-8")


def test_the_imdb_loader_reads_the_aclimdb_layout(tmp_path):
    write_aclimdb(tmp_path)
    train, dev, test = (load_split(tmp_path, "IMDB", s) for s in ("train", "dev", "test"))
    # dev: every tenth review of each label in id order, i.e. the ids ending in 0: neg 0 and 10, pos 0 and 10
    assert dev.texts_a == ["neg review 0", "neg review 10", "pos review 0", "pos review 10"]
    assert dev.labels == [0, 0, 1, 1] and dev.ids == ["neg/0_2", "neg/10_2", "pos/0_9", "pos/10_9"]
    # train: the other 19, neg (label 0) first, each in id order; the unsup folder is not read
    held_out = {0, 10}
    assert train.texts_a == ([f"neg review {i}" for i in range(12) if i not in held_out]
                             + [f"pos review {i}" for i in range(11) if i not in held_out])
    assert train.labels == [0] * 10 + [1] * 9 and train.texts_b is None
    # test: every review, labelled; whitespace around a review is stripped, markup and non-ASCII text kept
    assert test.texts_a == ["Meh.<br /><br />Really meh.", "Caf\u00e9 scene was great"]
    assert test.labels == [0, 1]


def test_imdb_is_a_two_label_task_reported_on_test_and_outside_the_glue_score():
    spec = get_task("IMDB")
    assert spec.labels == ("neg", "pos") and spec.num_labels == 2 and spec.metric == "accuracy"
    assert spec.splits == ("train", "dev", "test") and spec.report_split == "test" and spec.test_splits == ()
    assert "IMDB" in GLUE_TASKS and "IMDB" not in GLUE_SCORE_TASKS
    parts = {task: 80.0 for task in GLUE_SCORE_TASKS}
    assert glue_score(parts | {"IMDB": 0.0}) == 80.0
    assert glue_score({"IMDB": 93.0}) is None


def test_missing_or_broken_aclimdb_is_named(tmp_path):
    with pytest.raises(InputError, match="aclImdb: no such GLUE task folder"):
        load_split(tmp_path, "IMDB", "train")
    write_aclimdb(tmp_path, test={"neg": {0: "x"}})  # no test/pos
    with pytest.raises(InputError, match=r"test[/\\]pos: no such folder"):
        load_split(tmp_path, "IMDB", "test")
    (tmp_path / "aclImdb" / "train" / "pos" / "3_9.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    with pytest.raises(InputError, match=r"3_9\.txt: byte 3: not UTF-8"):
        load_split(tmp_path, "IMDB", "train")


def test_finetune_imdb_selects_on_dev_and_reports_test(tmp_path):
    """A tiny model fine-tuned on a tiny aclImdb tree: the run records dev metrics (selection) and test metrics
    (reported); the selection reports the test numbers and says so."""
    import json

    from effbert.demo.glue import write_demo_glue
    from effbert.train.glue import finetune_grid
    from test_glue import _tiny_model_dir

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    words = {"neg": "awful boring bad", "pos": "great lovely good"}
    train = {label: {i: f"{words[label]} film {i}" for i in range(40)} for label in words}
    test = {label: {i: f"{words[label]} movie" for i in range(5)} for label in words}
    write_aclimdb(tmp_path / "lra", train, test)
    config = json.loads((model_dir / "config.json").read_text())
    config["glue"]["batch_size"] = 8
    (model_dir / "config.json").write_text(json.dumps(config))
    result = finetune_grid(model_dir, "IMDB", tmp_path / "lra", device="cpu")
    run = json.loads((model_dir / "glue" / "IMDB" / "bs8-lr0.001-seed0.json").read_text())
    assert run["dev_examples"] == 8 and run["train_examples"] == 72  # 4 of 40 per label held out
    assert run["report_split"] == "test" and run["report_examples"] == 10 and run["submission"] == []
    assert result["score"] == run["report_metrics"]["accuracy"] and result["report_split"] == "test"
    assert result["grid"][0]["dev"] == run["metrics"]["accuracy"]
    assert result["protocol"].endswith("selected on dev, scored on test")
