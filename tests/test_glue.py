"""GLUE: the task table's loaders against real-format samples, the metrics against hand-computed values,
the generated demo tasks, and an end-to-end fine-tune of a tiny model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from effbert.data import glue
from effbert.data.glue import (
    TASKS,
    accuracy,
    compute_metrics,
    f1,
    load_split,
    matthews_corrcoef,
    pearson,
    spearman,
)
from effbert.demo.glue import write_demo_glue
from effbert.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


# ---- metrics: each expected value is worked out by hand in the comment above it ----

def test_accuracy_and_f1_by_hand():
    p, y = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    # correct at positions 0, 2, 4: 3/5
    assert accuracy(p, y) == pytest.approx(0.6)
    # tp = 2 (pos 0, 4), fp = 1 (pos 1), fn = 1 (pos 3): F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    assert f1(p, y) == pytest.approx(2 / 3)
    # no positive predicted and none true: no true positives, F1 0 (scikit-learn's zero_division=0)
    assert f1([0, 0], [0, 0]) == 0.0


def test_matthews_by_hand():
    # perfect: 1; inverse: -1
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    # all predictions one class: (TP+FP)(TN+FN) has a zero factor, so the denominator is 0 -> 0
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 1, 0]) == 0.0
    assert matthews_corrcoef([0, 0, 0], [0, 0, 0]) == 0.0  # one class everywhere: also 0
    # TP=2 (pos 0,1), FN=1 (pos 2), FP=1 (pos 3), TN=1 (pos 4):
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef([1, 1, 0, 1, 0], [1, 1, 1, 0, 0]) == pytest.approx(1 / 6)


def test_pearson_and_spearman_by_hand():
    # x = 1,2,3 (mean 2, deviations -1,0,1); y = 1,3,2 (deviations -1,1,0):
    # sum dx*dy = 1, sum dx^2 = 2, sum dy^2 = 2 -> r = 1/2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # a monotone but non-linear relation: Spearman 1, Pearson below 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 4, 9, 100]) < 0.9
    # ties: y = 10,20,20,30 has average ranks 1, 2.5, 2.5, 4; x ranks 1,2,3,4.
    # dx = -1.5,-.5,.5,1.5; dy = -1.5,0,0,1.5: sum dx*dy = 4.5, sum dx^2 = 5, sum dy^2 = 4.5
    # rho = 4.5 / sqrt(5 * 4.5) = sqrt(0.9)
    assert spearman([1, 2, 3, 4], [10, 20, 20, 30]) == pytest.approx(math.sqrt(0.9))
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # a constant: undefined, 0


def test_compute_metrics_per_task_on_the_0_100_scale():
    assert compute_metrics("MRPC", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(
        {"accuracy": 60.0, "f1": 200 / 3}
    )
    assert compute_metrics("CoLA", [0, 1, 1, 0], [0, 1, 1, 0])["mcc"] == pytest.approx(100.0)
    assert compute_metrics("SST-2", [0, 1], [1, 1]) == {"accuracy": 50.0}
    sts = compute_metrics("STS-B", [1, 2, 3], [1, 3, 2])
    assert sts["pearson"] == pytest.approx(50.0) and sts["spearman"] == pytest.approx(50.0)
    assert sts["pearson_spearman_mean"] == pytest.approx(50.0)
    for name, spec in TASKS.items():
        sample = [0.0, 1.0, 2.0] if spec.labels is None else [0, 1, 1]
        assert spec.metric in compute_metrics(name, sample, sample), name


# ---- loaders on the real-format samples ----

# file in the fixtures -> (task, split, examples, labels of the first three or None)
FIXTURES = {
    "CoLA/train.head21.tsv": ("CoLA", "train", 21, [1, 1, 1]),
    "CoLA/dev.tsv": ("CoLA", "dev", 2, [1, 1]),
    "SST-2/train.tsv": ("SST-2", "train", 5, [0, 0, 1]),
    "SST-2/dev.tsv": ("SST-2", "dev", 5, [1, 0, 1]),
    "SST-2/test.tsv": ("SST-2", "test", 5, None),
    "MRPC/train.tsv": ("MRPC", "train", 6, [1, 0, 0]),
    "MRPC/dev.tsv": ("MRPC", "dev", 6, [1, 0, 0]),
    "STS-B/train.head10.tsv": ("STS-B", "train", 9, [5.0, 3.8, 3.8]),
    "STS-B/dev.head10.tsv": ("STS-B", "dev", 9, [5.0, 4.75, 5.0]),
    # entailment 0, neutral 1, contradiction 2
    "MNLI/train.tsv": ("MNLI", "train", 6, [1, 0, 0]),
    "MNLI/dev_matched.tsv": ("MNLI", "dev_matched", 5, [1, 2, 0]),
    "MNLI/dev_mismatched.tsv": ("MNLI", "dev_mismatched", 5, [2, 2, 0]),
    "MNLI/test_matched.tsv": ("MNLI", "test_matched", 5, None),
    "MNLI/test_mismatched.tsv": ("MNLI", "test_mismatched", 5, None),
    # entailment 0, not_entailment 1
    "QNLI/train.tsv": ("QNLI", "train", 5, [1, 1, 0]),
    "QNLI/dev.tsv": ("QNLI", "dev", 5, [0, 1, 1]),
    "QNLI/test.tsv": ("QNLI", "test", 5, None),
    "RTE/train.tsv": ("RTE", "train", 5, [1, 0, 0]),
    "RTE/dev.tsv": ("RTE", "dev", 5, [1, 0, 1]),
    "RTE/test.tsv": ("RTE", "test", 5, None),
    "WNLI/dev.tsv": ("WNLI", "dev", 71, [0, 1, 0]),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_loaders_read_the_real_format_samples(shared_fixtures, tmp_path, name):
    task, split, count, first_labels = FIXTURES[name]
    source = shared_fixtures / "glue" / name
    if not source.is_file():
        pytest.skip(f"{source} absent")
    # heads of train/dev (train.head21.tsv) are placed under the split's official name
    folder = tmp_path / TASKS[task].folder
    folder.mkdir()
    shutil.copyfile(source, folder / TASKS[task].file_name(split))
    data = load_split(tmp_path, task, split)
    assert len(data) == count and len(data.ids) == count
    assert (data.texts_b is None) == (TASKS[task].text_b is None)
    if first_labels is None:
        assert data.labels is None
    else:
        assert data.labels[: len(first_labels)] == pytest.approx(first_labels)
    assert all(text.strip() for text in data.texts_a)


def test_mrpc_sample_keeps_stray_quotes_and_drops_the_bom(shared_fixtures, tmp_path):
    (tmp_path / "MRPC").mkdir()
    shutil.copyfile(shared_fixtures / "glue" / "MRPC" / "dev.tsv", tmp_path / "MRPC" / "dev.tsv")
    data = load_split(tmp_path, "MRPC", "dev")
    # the second string of the first row opens with a lone quote: no quote processing
    assert data.texts_b[0].startswith('" The foodservice pie business')


# ---- errors ----

def _write_task(glue_dir: Path, task: str, files: dict[str, str]) -> None:
    folder = glue_dir / task
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_missing_folder_and_file_are_named(tmp_path):
    with pytest.raises(InputError, match="RTE"):
        load_split(tmp_path, "RTE", "train")
    _write_task(tmp_path, "RTE", {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"})
    with pytest.raises(InputError, match=r"dev\.tsv.*RTE"):
        load_split(tmp_path, "RTE", "dev")
    with pytest.raises(InputError, match="unknown GLUE task 'rte'"):
        load_split(tmp_path, "rte", "dev")


def test_bad_rows_name_file_and_line(tmp_path):
    _write_task(tmp_path, "RTE", {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\n",
    })
    with pytest.raises(InputError, match=r"train\.tsv: line 3: unknown label 'maybe'"):
        load_split(tmp_path, "RTE", "train")
    with pytest.raises(InputError, match=r"dev\.tsv: line 2: 3 tab-separated columns; expected 4"):
        load_split(tmp_path, "RTE", "dev")
    _write_task(tmp_path, "STS-B", {"train.tsv": "index\tsentence1\tsentence2\tscore\n0\ta\tb\thigh\n"})
    with pytest.raises(InputError, match=r"train\.tsv: line 2: score 'high'"):
        load_split(tmp_path, "STS-B", "train")


# ---- the demo tasks ----

# the official files' headers (GLUE's SST-2 and MRPC releases), read here by the standard library's csv module
OFFICIAL_HEADERS = {
    ("SST-2", "train.tsv"): ["sentence", "label"], ("SST-2", "dev.tsv"): ["sentence", "label"],
    ("SST-2", "test.tsv"): ["index", "sentence"],
    ("MRPC", "train.tsv"): ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    ("MRPC", "dev.tsv"): ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    ("MRPC", "test.tsv"): ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
}


def test_demo_tasks_have_the_official_headers_and_the_committed_ones_are_current(tmp_path):
    import csv

    write_demo_glue(tmp_path)
    for (task, name), header in OFFICIAL_HEADERS.items():
        with open(tmp_path / task / name, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        assert rows[0] == header, (task, name)
        assert all(len(row) == len(header) for row in rows[1:]), (task, name)
        label = next((header.index(c) for c in ("label", "Quality") if c in header), None)  # test sets: none
        if label is not None:
            assert {row[label] for row in rows[1:]} == {"0", "1"}, (task, name)
        # the demo must run on what the generator writes today
        assert (tmp_path / task / name).read_bytes() == (ROOT / "demo" / "glue" / task / name).read_bytes(), (
            f"demo/glue/{task}/{name} is stale: rewrite it with effbert.demo.glue.write_demo_glue")


def test_demo_tasks_parse_in_the_official_layout(tmp_path):
    write_demo_glue(tmp_path)
    assert (tmp_path / "MRPC" / "train.tsv").read_bytes().startswith("\ufeffQuality\t#1 ID".encode())
    sizes = {("SST-2", "train"): 2000, ("SST-2", "dev"): 300, ("MRPC", "train"): 1500, ("MRPC", "dev"): 200}
    for (task, split), n in sizes.items():
        data = load_split(tmp_path, task, split)
        assert len(data) == n
        assert 0.4 < sum(data.labels) / n < 0.6  # balanced classes
    sst_train = set(load_split(tmp_path, "SST-2", "train").texts_a)
    assert not sst_train & set(load_split(tmp_path, "SST-2", "dev").texts_a)  # no sentence in both
    assert load_split(tmp_path, "MRPC", "test").ids[:2] == ["0", "1"]


# ---- end to end: fine-tune a tiny random model on the demo SST-2 ----

TINY_MODEL = {"max_seq_len": 64, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "ffn_size": 128,
              "dropout": 0.0, "attention_dropout": 0.0}


def _tiny_model_dir(tmp_path: Path, glue_dir: Path) -> Path:
    """A model folder with one checkpoint of a randomly initialised tiny model and a demo-trained tokenizer."""
    from effbert.config import config_json, parse_config
    from effbert.data.tokenizer import train_tokenizer
    from effbert.model.pretraining import PretrainingModel
    from effbert.train.checkpoints import checkpoint_name, save_checkpoint

    text = tmp_path / "text"
    text.mkdir()
    sentences = load_split(glue_dir, "SST-2", "train").texts_a + load_split(glue_dir, "MRPC", "train").texts_a
    (text / "part-00000.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    tok_path = train_tokenizer("wordpiece", 500, [text], tmp_path / "tokenizer", lowercase=True)

    model_dir = tmp_path / "models" / "tiny"
    model_dir.mkdir(parents=True)
    raw = {"model": TINY_MODEL, "glue": {"batch_size": 32, "lr": 1e-3, "epochs": 1, "seeds": [0]}}
    (model_dir / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    cfg = parse_config(raw, "test")
    tokenizer_text = tok_path.read_text(encoding="utf-8")
    vocab_size = Tokenizer.from_str(tokenizer_text).get_vocab_size()
    model = PretrainingModel(cfg.model, vocab_size, sop=True)
    save_checkpoint(
        model_dir / "checkpoints" / checkpoint_name(0),
        model=model.state_dict(), step=0, config=config_json(cfg), vocab_size=vocab_size, tokenizer=tokenizer_text,
    )
    return model_dir


def test_finetune_requires_dev_and_writes_nothing_without_it(tmp_path):
    from effbert.train.glue import finetune

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    (tmp_path / "glue" / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(InputError, match=r"dev\.tsv"):
        finetune(model_dir, "SST-2", tmp_path / "glue")
    assert not (model_dir / "glue").exists()


def test_finetune_tiny_model_on_demo_sst2(tmp_path):
    from effbert.train.glue import finetune

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    result = finetune(model_dir, "SST-2", tmp_path / "glue", device="cpu")
    assert json.loads((model_dir / "glue" / "SST-2" / "bs32-lr0.001-seed0.json").read_text()) == result
    assert result["metric"] == "accuracy" and result["dev_examples"] == 300
    assert result["checkpoint"] == "checkpoints/cp-0000.pt"
    assert result["hyperparameters"]["steps"] == 2000 // 32  # full batches; the remainder joins the next epoch
    assert result["score"] > 85.0, result  # chance is 50
    assert result["submission"] == ["SST-2.tsv"]
    ids = _test_ids(tmp_path / "glue" / "SST-2" / "test.tsv")
    assert ids == [str(i) for i in range(300)]
    predicted = _check_submission(_run_submission(model_dir, "SST-2", "SST-2.tsv"), ids, {"0", "1"})
    assert set(predicted) == {"0", "1"}  # a trained model predicts both classes of the balanced test set


def test_finetune_grid_runs_each_point_once_then_selects(tmp_path):
    from effbert.train.glue import finetune_grid, select

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    config = json.loads((model_dir / "config.json").read_text())
    config["glue"]["lr"] = [1e-6, 1e-3]  # one epoch at 1e-6 leaves a random model near chance
    (model_dir / "config.json").write_text(json.dumps(config))
    result = finetune_grid(model_dir, "SST-2", tmp_path / "glue", device="cpu")
    assert result["selected"]["lr"] == 1e-3 and result["score"] > 85.0, result
    assert [row["dev"] < 70.0 for row in result["grid"]] == [True, False]
    assert (model_dir / "glue" / "submission" / "SST-2.tsv").read_text() == _run_submission(
        model_dir, "SST-2", "SST-2.tsv").read_text()
    # a second call trains nothing: every run is on disk
    stamps = {p: p.stat().st_mtime_ns for p in (model_dir / "glue" / "SST-2").glob("*.json")}
    assert finetune_grid(model_dir, "SST-2", tmp_path / "glue", device="cpu") == result
    assert stamps == {p: p.stat().st_mtime_ns for p in (model_dir / "glue" / "SST-2").glob("*.json")}

    # how the runs are chosen among is not part of any run: nothing retrains
    config["glue"]["selection"] = "max"
    (model_dir / "config.json").write_text(json.dumps(config))
    assert finetune_grid(model_dir, "SST-2", tmp_path / "glue", device="cpu")["selection"] == "max"
    assert stamps == {p: p.stat().st_mtime_ns for p in (model_dir / "glue" / "SST-2").glob("*.json")}
    # a setting every run uses: the runs on disk no longer count, and are run again
    config["glue"]["warmup_ratio"] = 0.2
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="2 run.* made under other settings"):
        select(model_dir, "SST-2")
    finetune_grid(model_dir, "SST-2", tmp_path / "glue", device="cpu")
    assert all(stamps[p] != p.stat().st_mtime_ns for p in stamps)


def test_runs_fine_tuned_from_an_earlier_checkpoint_of_the_same_pretraining_are_stale(tmp_path):
    """Every checkpoint of one pretraining run has its identity; the step tells them apart."""
    from effbert.train.checkpoints import checkpoint_name, read_checkpoint, save_checkpoint
    from effbert.train.glue import finetune_grid, select

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    finetune_grid(model_dir, "SST-2", tmp_path / "glue", device="cpu")
    later = read_checkpoint(model_dir / "checkpoints" / checkpoint_name(0))
    save_checkpoint(model_dir / "checkpoints" / checkpoint_name(5), **{**later, "step": 5})  # pretraining went on
    with pytest.raises(InputError, match="made under other settings"):
        select(model_dir, "SST-2")


def test_a_checkpoint_of_another_model_is_refused_not_filed_under_this_folder(tmp_path):
    """A pretraining folder's GLUE runs fine-tune its own model: a checkpoint of another (here: config.json now
    names another attention and width) is one error naming the differences; dropout may differ."""
    from effbert.train.glue import finetune

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    config = json.loads((model_dir / "config.json").read_text())
    config["model"] |= {"dropout": 0.1, "hidden_size": 32, "attention": {"type": "nystrom"}}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"cp-0000.pt: its weights are of another model .*model.attention.type "
                                         r"'softmax' there, 'nystrom' here.*model.hidden_size 64 there, 32 here"):
        finetune(model_dir, "SST-2", tmp_path / "glue", device="cpu")
    assert not (model_dir / "glue").exists()
    config["model"] = TINY_MODEL | {"dropout": 0.1}  # how it trains, not what it is: fine-tuned as before
    (model_dir / "config.json").write_text(json.dumps(config))
    assert finetune(model_dir, "SST-2", tmp_path / "glue", device="cpu")["task"] == "SST-2"


def _run_submission(model_dir: Path, task: str, name: str) -> Path:
    """Where the grid's only run (bs32-lr0.001-seed0) writes its submission file."""
    return model_dir / "glue" / task / "bs32-lr0.001-seed0" / "submission" / name


def test_glue_module_exports_the_table():
    assert set(TASKS) >= {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"}
    assert glue.get_task("STS-B").num_labels == 1 and glue.get_task("MNLI").num_labels == 3


# ---- test-set predictions in the leaderboard's submission format ----

# the file names of GLUE's leaderboard (gluebenchmark.com submission instructions), written out here
OFFICIAL_FILES = {
    ("CoLA", "test"): "CoLA.tsv", ("SST-2", "test"): "SST-2.tsv", ("MRPC", "test"): "MRPC.tsv",
    ("STS-B", "test"): "STS-B.tsv", ("QQP", "test"): "QQP.tsv", ("MNLI", "test_matched"): "MNLI-m.tsv",
    ("MNLI", "test_mismatched"): "MNLI-mm.tsv", ("QNLI", "test"): "QNLI.tsv", ("RTE", "test"): "RTE.tsv",
    ("WNLI", "test"): "WNLI.tsv", ("AX", "test"): "AX.tsv",
}
LEADERBOARD_LABELS = {"0", "1"}, {"entailment", "neutral", "contradiction"}, {"entailment", "not_entailment"}


@pytest.mark.parametrize("task_split", sorted(OFFICIAL_FILES))
def test_every_test_split_maps_to_its_official_file(task_split):
    from effbert.data.glue_submission import SUBMISSION_FILES

    task, split = task_split
    assert split in TASKS[task].test_splits
    assert SUBMISSION_FILES[task_split].name == OFFICIAL_FILES[task_split]
    # predicted index i is written as labels[i]: the order must be the loader's
    assert SUBMISSION_FILES[task_split].labels == TASKS[task].labels
    labels = SUBMISSION_FILES[task_split].labels
    assert labels is None if task == "STS-B" else set(labels) in LEADERBOARD_LABELS


def test_every_task_split_has_a_submission_file():
    from effbert.data.glue_submission import SUBMISSION_FILES

    assert set(SUBMISSION_FILES) == {(t, s) for t, spec in TASKS.items() for s in spec.test_splits}


def test_format_predictions_by_hand(tmp_path):
    from effbert.data.glue_submission import format_predictions, write_submission

    assert format_predictions("STS-B", "test", ["0", "1", "2"], [-0.4, 2.34567, 5.7]) == (
        "index\tprediction\n0\t0.000\n1\t2.346\n2\t5.000\n"
    )
    assert format_predictions("MNLI", "test_mismatched", ["7", "3"], [2.0, 0.0]) == (
        "index\tprediction\n7\tcontradiction\n3\tentailment\n"
    )
    path = write_submission(tmp_path / "sub", "RTE", "test", ["0"], [1.0])
    assert path.name == "RTE.tsv" and path.read_text() == "index\tprediction\n0\tnot_entailment\n"
    with pytest.raises(InputError, match="no GLUE submission file for SST-2/dev"):
        format_predictions("SST-2", "dev", ["0"], [1.0])


def _test_ids(path: Path) -> list[str]:
    """The index column of an official test file, read here without the loader."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("index\t")
    return [line.split("\t", 1)[0] for line in lines[1:]]


def _check_submission(path: Path, ids: list[str], allowed: set[str]) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index\tprediction"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == ids
    assert all(len(r) == 2 and r[1] in allowed for r in rows)
    return [r[1] for r in rows]


def test_finetune_writes_the_demo_submissions(tmp_path):
    from effbert.train.glue import finetune

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    result = finetune(model_dir, "MRPC", tmp_path / "glue", device="cpu")
    assert result["submission"] == ["MRPC.tsv"]
    ids = _test_ids(tmp_path / "glue" / "MRPC" / "test.tsv")
    assert len(ids) == 200
    _check_submission(_run_submission(model_dir, "MRPC", "MRPC.tsv"), ids, {"0", "1"})

    # without a test file there is nothing to submit, and no error
    (tmp_path / "glue" / "SST-2" / "test.tsv").unlink()
    assert finetune(model_dir, "SST-2", tmp_path / "glue", device="cpu")["submission"] == []
    assert not (model_dir / "glue" / "SST-2" / "bs32-lr0.001-seed0").exists()


def test_finetune_mnli_writes_both_test_sets_and_the_diagnostic(tmp_path):
    from effbert.train.glue import finetune

    write_demo_glue(tmp_path / "glue")
    model_dir = _tiny_model_dir(tmp_path, tmp_path / "glue")
    labelled = ["index\tsentence1\tsentence2\tgold_label"] + [
        f"{i}\tthe harbour is warm .\tthe harbour is {w} .\t{y}"
        for i, (w, y) in enumerate([("warm", "entailment"), ("cold", "contradiction"), ("old", "neutral")] * 12)
    ]
    # test files: no label column, indices not in row order
    unlabelled = ["index\tsentence1\tsentence2"] + [f"{i}\ta film .\ta {w} film ." for i, w in
                                                    [(5, "good"), (9, "bad"), (2, "long")]]
    _write_task(tmp_path / "glue", "MNLI", {name: "\n".join(labelled) + "\n" for name in
                                            ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")})
    for name in ("test_matched.tsv", "test_mismatched.tsv"):
        (tmp_path / "glue" / "MNLI" / name).write_text("\n".join(unlabelled) + "\n", encoding="utf-8")
    result = finetune(model_dir, "MNLI", tmp_path / "glue", device="cpu")
    assert result["submission"] == ["MNLI-m.tsv", "MNLI-mm.tsv"]  # no diagnostic file: no AX.tsv

    _write_task(tmp_path / "glue", "diagnostic", {"diagnostic.tsv": "\n".join(unlabelled) + "\n"})
    result = finetune(model_dir, "MNLI", tmp_path / "glue", device="cpu")
    assert result["submission"] == ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]
    for name in result["submission"]:
        _check_submission(_run_submission(model_dir, "MNLI", name), ["5", "9", "2"],
                          {"entailment", "neutral", "contradiction"})
