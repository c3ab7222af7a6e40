"""Which results may stand beside a published number: the matching rules, against the papers' setups.

The truths: the papers' setups and numbers as ../shared/reference/published-results.md states them (transcribed
here as literals, or read from that file), the repository's demo configs, and arithmetic on their budgets.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import ROOT
from effbert.config import parse_config
from effbert.files import write_json
from effbert.report import published, published_notes
from effbert.report.comparable import compare, glue_setup, lra_setup
from effbert.report.tables import write_report

NYSTROM_64 = {"type": "nystrom", "num_landmarks": 64, "conv_kernel": 35}  # the paper's Nystrom
PERFORMER_256 = {"type": "performer", "num_features": 256, "kernel": "relu"}
LINFORMER_256 = {"type": "linformer", "k": 256, "share": "layers"}


def _set(config: dict, path: str, value: object) -> dict:
    """`config` with the dotted key `path` set to `value` (sections created as needed)."""
    out = json.loads(json.dumps(config))
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def _compare(benchmark: str, task: str, config: dict, result: dict | None = None):
    cfg = parse_config(config, "config.json")
    setup = glue_setup(cfg) if benchmark == "glue" else lra_setup(cfg, task, result or {})
    return compare(benchmark, task, setup)


# (benchmark, task, attention, published value) where the config is the paper's setup: the config's defaults
# are BERT-base's shape and the paper's pretraining, and LRA's protocol is the published one
PAPER_SETUPS = [
    ("lra", "listops", NYSTROM_64, 37.15),
    ("lra", "text", PERFORMER_256, 63.81),
    ("lra", "image", LINFORMER_256, 37.84),
    ("lra", "pathfinder", {"type": "softmax"}, 74.16),
    ("lra", "retrieval", {"type": "reformer", "num_hashes": 2}, 78.64),
    ("glue", "MRPC", NYSTROM_64, 88.1),
    ("glue", "MNLI-mm", NYSTROM_64, 82.2),
    ("glue", "QNLI", {"type": "softmax"}, 90.3),
    ("glue", "IMDB", {"type": "softmax"}, 93.3),
]


@pytest.mark.parametrize(("benchmark", "task", "attention", "value"), PAPER_SETUPS)
def test_the_papers_setup_gets_the_papers_value(benchmark, task, attention, value):
    found = _compare(benchmark, task, {"model": {"attention": attention}})
    assert (found.published, found.reason, found.demo) == (value, None, False)
    assert found.source.startswith(published.GLUE_SOURCE if benchmark == "glue" else published.LRA_SOURCE)


# one setting changed from the paper's setup: no value, and the reason names the setting, ours and the paper's
CHANGED = [
    ("lra", "listops", NYSTROM_64, "model.attention.num_landmarks", 32, "num_landmarks 32 (paper 64)"),
    ("lra", "listops", NYSTROM_64, "model.attention.conv_kernel", None, "conv_kernel none (paper 35)"),
    ("lra", "listops", NYSTROM_64, "model.attention.pinv_init", "per_head", "pinv_init per_head (paper original)"),
    ("lra", "listops", NYSTROM_64, "lra.listops.steps", 2500, "steps 2500 (paper 5000)"),
    ("lra", "listops", NYSTROM_64, "lra.listops.max_len", 1000, "max_len 1000 (paper 2000)"),
    ("lra", "listops", NYSTROM_64, "lra.listops.num_layers", 4, "num_layers 4 (paper 2)"),
    ("lra", "listops", NYSTROM_64, "lra.self_pretrain_steps", 1000, "self_pretrain_steps 1000 (paper 0)"),
    ("lra", "listops", NYSTROM_64, "lra.listops.attention", {"num_landmarks": 128}, "num_landmarks 128 (paper 64)"),
    ("lra", "text", PERFORMER_256, "model.attention.kernel", "softmax", "kernel softmax (paper relu)"),
    ("lra", "text", PERFORMER_256, "model.attention.num_features", 128, "num_features 128 (paper 256)"),
    ("lra", "image", LINFORMER_256, "model.attention.share", "heads", "share heads (paper layers)"),
    ("lra", "image", LINFORMER_256, "lra.image.lr", 1e-3, "lr 0.001 (paper 0.0001)"),
    ("glue", "MRPC", NYSTROM_64, "model.num_layers", 6, "num_layers 6 (paper 12)"),
    ("glue", "MRPC", NYSTROM_64, "model.max_seq_len", 4096, "max_seq_len 4096 (paper 512)"),
    ("glue", "MRPC", NYSTROM_64, "pretraining.steps", 100000, "pretraining steps 100000 (paper 500000)"),
    ("glue", "MRPC", NYSTROM_64, "pretraining.sop", False, "pretraining MLM (paper MLM+SOP)"),
    ("glue", "SST-2", {"type": "softmax"}, "pretraining.batch_size", 64, "pretraining batch_size 64 (paper 256)"),
    ("glue", "SST-2", {"type": "softmax"}, "model.norm", "pre_rmsnorm", "norm pre_rmsnorm (paper post)"),
]


@pytest.mark.parametrize(("benchmark", "task", "attention", "key", "value", "reason"), CHANGED)
def test_one_changed_setting_removes_the_value_and_names_itself(benchmark, task, attention, key, value, reason):
    found = _compare(benchmark, task, _set({"model": {"attention": attention}}, key, value))
    assert found.published is None and found.source is None
    assert found.reason.startswith("differs from ") and found.reason.endswith(reason), found.reason
    assert not found.demo


def test_imported_weights_and_mechanisms_without_a_paper_row_say_so():
    imported = {"stages": ["glue"], "import_hf": "bert-base-uncased", "model": {"attention": {"type": "softmax"}}}
    found = _compare("glue", "SST-2", imported)
    assert found.published is None and "pretraining imported from bert-base-uncased (paper MLM+SOP)" in found.reason
    assert not found.demo  # its budget is unknown, not small
    fnet = _compare("glue", "SST-2", {"model": {"attention": {"type": "fnet"}}})
    assert fnet.reason == "no published SST-2 number for fnet attention"
    assert _compare("lra", "listops", {"model": {"attention": {"type": "yoso"}}}).reason == (
        "no published listops number for yoso attention")


def test_the_run_as_saved_wins_over_the_config():
    """An LRA result records the protocol and attention it ran with; a later edit of config.json does not
    rewrite what the number was measured under."""
    config = {"model": {"attention": NYSTROM_64}}
    saved = {"attention": NYSTROM_64 | {"num_landmarks": 32}, "protocol": {"steps": 100}}
    found = _compare("lra", "listops", config, saved)
    assert found.reason.endswith("num_landmarks 32 (paper 64), steps 100 (paper 5000)")


PAPER_PRETRAIN = {"attention": "nystrom", "steps": 500000}  # pretrain.json of the paper's full budget (0.5M steps)


def _fine_tuned_from(folder, checkpoint: str, task: str = "MRPC") -> dict:
    """A model folder's GLUE selection for `task` (glue/<TASK>.json, as effbert.train.glue_protocol writes it) over
    two seeds' runs, each recording the checkpoint it fine-tuned (as effbert.train.glue writes it)."""
    for seed in (0, 1):
        write_json(folder / "glue" / task / f"bs32-lr3e-05-seed{seed}.json",
                   {"task": task, "run": f"bs32-lr3e-05-seed{seed}", "metric": "f1", "score": 80.0,
                    "checkpoint": checkpoint})
    return {"task": task, "metric": "f1", "score": 80.0,
            "selected": {"batch_size": 32, "lr": 3e-05, "epochs": 3, "seeds": [0, 1]},
            "submission_run": "bs32-lr3e-05-seed0"}


def test_glue_compares_the_pretraining_of_the_checkpoint_it_fine_tuned(tmp_path):
    """pretrain.json says the full BERT-base budget, but the GLUE runs fine-tuned an early checkpoint: the result
    stands on 1000 steps of pretraining, a demo-scale run with no published number, whatever config.json's
    glue.checkpoint says now ('last')."""
    cfg = parse_config({"model": {"attention": NYSTROM_64}}, "config.json")
    result = _fine_tuned_from(tmp_path, "checkpoints/cp-1000.pt")
    found = compare("glue", "MRPC", glue_setup(cfg, PAPER_PRETRAIN, result=result, model_dir=tmp_path))
    assert found.published is None and found.source is None and found.demo
    assert found.reason == (f"demo scale ({1000 / 500000:.2%} of the published training budget); differs from "
                            f"{published.GLUE_SOURCE}: Nystromformer: pretraining steps 1000 (paper 500000)")
    # one run's own result names its checkpoint too
    run = {"checkpoint": "checkpoints/cp-1000.pt"}
    assert glue_setup(cfg, PAPER_PRETRAIN, result=run)["pretraining.steps"] == 1000


def test_glue_fine_tuned_from_the_full_budget_still_matches(tmp_path):
    cfg = parse_config({"model": {"attention": NYSTROM_64}}, "config.json")
    result = _fine_tuned_from(tmp_path, "checkpoints/cp-500000.pt")
    found = compare("glue", "MRPC", glue_setup(cfg, PAPER_PRETRAIN, result=result, model_dir=tmp_path))
    assert (found.published, found.reason, found.demo) == (88.1, None, False)
    assert found.source == f"{published.GLUE_SOURCE}: Nystromformer"


def test_a_glue_result_that_records_no_checkpoint_falls_back_to_the_config(tmp_path):
    """Older results name no checkpoint (or their runs are gone): glue.checkpoint's step where it names one, else
    pretraining's last step (pretrain.json's)."""
    early = parse_config({"model": {"attention": NYSTROM_64}, "glue": {"checkpoint": "cp-5000.pt"}}, "config.json")
    found = compare("glue", "MRPC", glue_setup(early, PAPER_PRETRAIN))  # as tables.py called it before
    assert found.published is None and found.demo and found.reason.endswith("pretraining steps 5000 (paper 500000)")
    bare = {"task": "MRPC", "metric": "f1", "score": 80.0, "selected": {"seeds": [0, 1]}}
    assert glue_setup(early, PAPER_PRETRAIN, result=bare, model_dir=tmp_path)["pretraining.steps"] == 5000
    last = parse_config({"model": {"attention": NYSTROM_64}}, "config.json")
    assert glue_setup(last, PAPER_PRETRAIN, result=bare, model_dir=tmp_path)["pretraining.steps"] == 500000
    assert glue_setup(last, {"steps": 800})["pretraining.steps"] == 800


def test_imported_weights_stay_imported_whatever_checkpoint_glue_read(tmp_path):
    imported = parse_config({"stages": ["glue"], "import_hf": "bert-base-uncased",
                             "model": {"attention": {"type": "softmax"}}}, "config.json")
    result = _fine_tuned_from(tmp_path, "checkpoints/cp-0000.pt", "SST-2")
    setup = glue_setup(imported, result=result, model_dir=tmp_path)
    assert "pretraining.steps" not in setup
    found = compare("glue", "SST-2", setup)
    assert "pretraining imported from bert-base-uncased (paper MLM+SOP)" in found.reason and not found.demo


def test_the_original_lra_table_anchors_a_run_at_its_setup():
    """The LRA paper's rows stand beside a run at its JAX setup (ListOps: 6 layers, width 512, 8 heads, FFN 2048,
    batch 32, 5000 steps, CLS pooling, rsqrt decay); every model failed Path-X, so there it is a FAIL."""
    jax_listops = {"attention.type": "linear", "num_layers": 6, "hidden_size": 512, "num_heads": 8, "ffn_size": 2048,
                   "batch_size": 32, "steps": 5000, "max_len": 2000, "pooling": "cls", "schedule": "rsqrt decay"}
    found = compare("lra", "listops", jax_listops)
    assert (found.published, found.source) == (16.13, f"{published.LRA_ORIGINAL_SOURCE}: Linear Trans.")
    softmax = compare("lra", "listops", jax_listops | {"attention.type": "softmax"})
    assert softmax.published == 36.37  # the Transformer row: a second softmax anchor
    jax_pathx = {"attention.type": "linear", "num_layers": 1, "hidden_size": 32, "num_heads": 2, "ffn_size": 32,
                 "batch_size": 64, "steps": 500000, "max_len": 16384, "pooling": "mean", "schedule": "cosine"}
    pathx = compare("lra", "pathx", jax_pathx)
    assert pathx.published is None and "Linear Trans. failed pathx" in pathx.reason
    # our LRA runs pool by the mean and decay linearly: the JAX ListOps row is never like-for-like with them
    ours = _compare("lra", "listops", {"model": {"attention": {"type": "linear"}}})
    assert ours.published is None and "num_layers 2 (paper 6)" in ours.reason


def _demo_folders(root):
    """The repository's two demo models with results shaped as the demo DAG writes them."""
    folders = []
    for name in ("nystrom", "softmax"):
        folder = root / name
        folder.mkdir()
        shutil.copy(ROOT / "demo" / "models" / name / "config.json", folder / "config.json")
        write_json(folder / "pretrain.json", {"attention": name, "steps": 800, "mlm_accuracy": 30.0,
                                              "sop_accuracy": 60.0, "mlm_loss": 4.0, "train_tokens": 3276800,
                                              "seconds": 60.0})
        for task in ("SST-2", "MRPC"):
            write_json(folder / "glue" / f"{task}.json", {"metric": "accuracy", "score": 70.0, "score_std": 1.0,
                                                          "selected": {"seeds": [0, 1]}})
        write_json(folder / "lra" / "listops.json", {"accuracy": 30.0, "accuracy_std": 0.0, "seeds": [0]})
        folders.append(folder)
    return folders


def test_a_demo_row_gets_no_published_value_and_says_why(tmp_path):
    markdown = write_report(_demo_folders(tmp_path), tmp_path / "results")
    lra = pd.read_csv(tmp_path / "results/lra.csv")
    assert lra.published.isna().all() and lra["demo scale"].all()
    # ListOps cut to 128 tokens for 500 steps of 32: 500*32*128 / (5000*32*2000) of the published budget
    share = 500 * 32 * 128 / (5000 * 32 * 2000)
    reasons = dict(zip(lra.model, lra["not comparable"], strict=True))
    assert all(r.startswith(f"demo scale ({share:.2%} of the published training budget); ") for r in reasons.values())
    assert "num_landmarks 16 (paper 64)" in reasons["nystrom"] and "max_len 128 (paper 2000)" in reasons["softmax"]
    glue = pd.read_csv(tmp_path / "results/glue.csv")
    assert glue.published.isna().all() and glue["demo scale"].all()
    assert all("hidden_size 64 (paper 768)" in r for r in glue["not comparable"])
    assert pd.read_csv(tmp_path / "results/pretrain.csv")["demo scale"].all()

    # the wide table: the cell points at a numbered note that gives the reason
    rows = {}
    for line in markdown["lra"].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] in ("nystrom", "softmax"):
            rows[cells[0]] = cells
    notes = dict(line.split("] ", 1) for line in markdown["lra"].splitlines() if line.startswith("["))
    for name, cells in rows.items():
        assert "yes" in cells  # demo scale
        note = next(c for c in cells if c.startswith("n/a ["))[len("n/a "):-1]
        assert notes[note] == reasons[name]


def _reference_table(heading: str) -> list[list[str]]:
    path = ROOT.parent / "shared" / "reference" / "published-results.md"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    lines = text[text.index(heading):].split("\n|", 1)[1].split("\n\n")[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _anchor(anchors, source: str, name: str) -> published.Anchor:
    return next(a for a in anchors if a.source == source and a.name == name)


def test_the_published_numbers_are_the_reference_tables():
    names = {"softmax": "softmax", "reformer (2h)": "reformer (2 hashes)", "linformer-256": "linformer-256",
             "performer-256": "performer-256", "nystrom-64": "nystrom-64"}
    for label, *values, _average in _reference_table("## Long Range Arena, PyTorch re-implementation"):
        anchor = _anchor(published.LRA_ANCHORS, published.LRA_SOURCE, names[label])
        assert list(anchor.scores.values()) == [float(v) for v in values], label
    original = _reference_table("## Long Range Arena, original JAX results")
    assert len(original) == 11
    for label, *values, pathx, _average in original:
        anchor = _anchor(published.LRA_ANCHORS, published.LRA_ORIGINAL_SOURCE, label)
        assert list(anchor.scores.values()) == [*(float(v) for v in values), None] and pathx == "FAIL", label
        assert anchor.failed == ("pathx",)
    rows = {"BERT-base": "BERT-base", "Nystromformer": "Nystromformer"}
    for label, sst2, mrpc, qnli, qqp, mnli, imdb in _reference_table("## GLUE dev (Nystromformer paper, Table 2"):
        matched, mismatched = mnli.split("/")
        anchor = _anchor(published.GLUE_ANCHORS, published.GLUE_SOURCE, rows[label])
        assert anchor.scores == {"SST-2": float(sst2), "MRPC": float(mrpc), "QNLI": float(qnli), "QQP": float(qqp),
                                 "MNLI": float(matched), "MNLI-mm": float(mismatched), "IMDB": float(imdb)}
    header = ["512", "1024", "2048", "4096", "8192"]
    for label, *cells in _reference_table("## Self-attention module cost"):
        expected = {int(n): tuple(float(x) for x in cell.split(" / ")) for n, cell in zip(header, cells, strict=True)}
        assert published_notes.ATTENTION_COST[label] == expected, label


def test_the_lra_model_folders_meet_their_anchors():
    """The LRA folders that reproduce a Table 3 row are that row's setup, so their results will stand beside it."""
    for folder, value in [("lra-nystrom-64", 37.15), ("lra-performer-256", 18.80), ("lra-linformer-256", 37.25),
                          ("lra-softmax", 37.10), ("lra-reformer-2", 19.05)]:
        config = json.loads((ROOT / "models" / folder / "config.json").read_text())
        assert _compare("lra", "listops", config).published == value, folder
    # 32 landmarks is in the paper's study but not its table
    config = json.loads((ROOT / "models" / "lra-nystrom-32" / "config.json").read_text())
    assert _compare("lra", "listops", config).reason.endswith("num_landmarks 32 (paper 64)")
