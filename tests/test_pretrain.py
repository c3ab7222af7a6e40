"""Pretraining end to end on a tiny patterned corpus: MLM loss falls, checkpoints explain themselves."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from effbert.data.shards import build_shards
from effbert.errors import InputError
from effbert.locks import LOCK_FILE
from effbert.pipeline_config import ShardRecipe
from effbert.train.checkpoints import find_checkpoint, list_checkpoints, outdated_checkpoints, read_checkpoint
from effbert.train.loop import warmup_decay
from effbert.train.pretrain import pretrain
from helpers import model_folder


def test_warmup_then_linear_decay():
    factor = warmup_decay(warmup_steps=4, total_steps=12, kind="linear")
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(8) == 0.5 and factor(12) == 0.0


def test_mlm_loss_falls_and_checkpoints_explain_themselves(tmp_path, shards):
    folder = model_folder(tmp_path)
    summary = pretrain(folder, shards, device="cpu", threads=1)
    records = [json.loads(line) for line in (folder / "pretrain.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    dev = [r for r in records if r["split"] == "dev"]
    assert [r["step"] for r in dev] == [50, 100, 150]
    # from ~ln(120) = 4.8 at the start; the colour after "is" is predictable from the animal
    assert train[0]["mlm_loss"] > 3.5
    assert dev[-1]["mlm_loss"] < train[0]["mlm_loss"] - 1.5
    assert summary["mlm_accuracy"] == dev[-1]["mlm_accuracy"] > 30
    assert 0 <= summary["sop_accuracy"] <= 100

    if importlib.util.find_spec("tensorboard"):  # the same metrics as TensorBoard events
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(folder)] == ["cp-0075.pt", "cp-0150.pt"]
    assert find_checkpoint(folder, "last").name == "cp-0150.pt" and find_checkpoint(folder, 75).name == "cp-0075.pt"
    # every form glue.checkpoint's check accepts as step 75 finds that step's file
    assert {find_checkpoint(folder, spec).name for spec in ("75", "cp-75.pt", "cp-0075.pt")} == {"cp-0075.pt"}
    state = read_checkpoint(find_checkpoint(folder))
    assert state["step"] == 150 and state["config"]["model"]["hidden_size"] == 32
    tokenizer_file = shards.parent / "tok" / "tokenizer.json"
    assert state["tokenizer"] == tokenizer_file.read_text(encoding="utf-8")
    assert set(state["optimizer"]) == {"state", "param_groups"}


def test_same_seed_same_run(tmp_path, shards):
    losses = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        folder = model_folder(tmp_path / run, steps=20, eval_every=20, checkpoint_every=20)
        pretrain(folder, shards, device="cpu", threads=1)
        losses.append([json.loads(x)["loss"] for x in (folder / "pretrain.jsonl").read_text().splitlines()
                       if '"train"' in x])
    assert losses[0] == losses[1]


def test_shards_of_another_length_are_refused(tmp_path, shards):
    folder = model_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["max_seq_len"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="shards are 64 tokens long but model.max_seq_len is 128 .*config.json"):
        pretrain(folder, shards, device="cpu")
    assert not (folder / "pretrain.json").exists()
    cfg["model"] |= {"max_seq_len": 64, "vocab_size": 50}  # the patterned corpus' tokenizer has more
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"tiny/config.json: model.vocab_size 50 is smaller than the vocabulary "
                                         r"of the shards' tokenizer, \d+"):
        pretrain(folder, shards, device="cpu")


def _train_records(folder: Path) -> list[dict]:
    """The logged records without the wall-clock fields."""
    clock = ("seconds", "tokens_per_s", "mfu")
    return [{k: v for k, v in json.loads(line).items() if k not in clock}
            for line in (folder / "pretrain.jsonl").read_text().splitlines()]


class Killed(Exception):
    pass


def _killed_after_first_checkpoint(folder: Path, shards: Path, monkeypatch) -> None:
    """Pretrain `folder` until its first checkpoint is written, then die as a killed job would."""
    import effbert.train.pretrain as stage

    real_save = stage.save_checkpoint

    def save_then_die(path, **content):
        real_save(path, **content)
        raise Killed(path)

    with monkeypatch.context() as patched:
        patched.setattr(stage, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            pretrain(folder, shards, device="cpu", threads=1)


def test_interrupted_run_resumes_bitwise(tmp_path, shards, monkeypatch):
    """Killed right after its step-15 checkpoint (mid log interval, mid epoch, with dropout and gradient
    accumulation), a rerun resumes and logs and ends exactly as the uninterrupted run."""

    folders = []
    for run in ("whole", "killed"):
        (tmp_path / run).mkdir()
        folder = model_folder(tmp_path / run, steps=40, log_every=10, eval_every=20, checkpoint_every=15,
                              micro_batch_size=8)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model"] |= {"dropout": 0.1, "attention_dropout": 0.1}  # RNG streams must resume too
        (folder / "config.json").write_text(json.dumps(cfg))
        folders.append(folder)
    whole, killed = folders
    pretrain(whole, shards, device="cpu", threads=1)

    _killed_after_first_checkpoint(killed, shards, monkeypatch)
    assert [p.name for p in list_checkpoints(killed)] == ["cp-0015.pt"]
    summary = pretrain(killed, shards, device="cpu", threads=1)

    assert summary["resumed_from"] == 15
    assert _train_records(killed) == _train_records(whole)
    a, b = (read_checkpoint(find_checkpoint(f))["model"] for f in (whole, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _edit(folder: Path, **pretraining) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretraining"].update(pretraining)
    (folder / "config.json").write_text(json.dumps(cfg))


def _files(folder: Path) -> dict[str, bytes]:
    """Every file the run wrote, by path; not the writer lock's note of who held it last (rewritten, with its start
    time, by every run that takes the lock)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def test_shards_rebuilt_byte_for_byte_from_touched_inputs_do_not_stop_a_resume(tmp_path, monkeypatch):
    """A touched (or copied, or fetched again) input rebuilds the shard set (its inputs_key holds the inputs'
    mtimes) into the same files under a new manifest.json: the same data, so the run resumes. Checkpoints made
    before the shard set's digest existed (data.shards: the manifest file's sha256) resume on it too."""
    import os

    from effbert.data.tokenizer import train_tokenizer
    from effbert.files import sha256_file
    from helpers import patterned_corpus

    patterned_corpus(tmp_path / "text")
    tokenizer = train_tokenizer("wordpiece", 120, [tmp_path / "text"], tmp_path / "tok", lowercase=True)
    out = tmp_path / "64-t"

    def build() -> bytes:
        build_shards([tmp_path / "text"], tokenizer, out, max_seq_len=64, recipe=ShardRecipe(dev_fraction=0.1))
        return (out / "manifest.json").read_bytes()

    first = build()
    folder = model_folder(tmp_path, steps=6, log_every=1, eval_every=6, checkpoint_every=3)
    _killed_after_first_checkpoint(folder, out, monkeypatch)
    part = next((tmp_path / "text").rglob("*.txt"))
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))
    assert build() != first  # rebuilt: a new inputs_key
    assert pretrain(folder, out, device="cpu", threads=1)["resumed_from"] == 3

    cp3 = folder / "checkpoints" / "cp-0003.pt"
    state = read_checkpoint(cp3)
    state["identity"]["data"]["shards"] = sha256_file(out / "manifest.json")  # as such a checkpoint recorded it
    torch.save(state, cp3)
    (folder / "checkpoints" / "cp-0006.pt").unlink()
    assert pretrain(folder, out, device="cpu", threads=1)["resumed_from"] == 3


def test_a_changed_setting_stops_naming_the_keys_and_the_ways_forward(tmp_path, shards):
    folder = model_folder(tmp_path, steps=4, log_every=2, eval_every=4, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 4  # nothing left to do
    _edit(folder, lr=1e-3, warmup_steps=2)
    before = _files(folder)
    with pytest.raises(InputError) as stopped:
        pretrain(folder, shards, device="cpu", threads=1)
    message = str(stopped.value)
    assert "cp-0004.pt (step 4)" in message
    assert "pretraining.lr: 0.003 -> 0.001" in message and "pretraining.warmup_steps: 10 -> 2" in message
    assert '"on_change": "continue"' in message and '"on_change": "restart"' in message
    after = _files(folder)
    after.pop("config.json"), before.pop("config.json")
    assert after == before  # no checkpoint moved, no log rewritten


def test_continue_goes_on_from_the_last_checkpoint_with_the_new_settings(tmp_path, shards):
    folder = model_folder(tmp_path, steps=4, log_every=2, eval_every=4, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    first = _train_records(folder)
    _edit(folder, lr=1e-3, steps=8, batch_size=8, on_change="continue")
    summary = pretrain(folder, shards, device="cpu", threads=1)
    assert summary["resumed_from"] == 4
    records = _train_records(folder)
    assert records[: len(first)] == first  # the log up to the checkpoint is kept
    train = {r["step"]: r for r in records if r["split"] == "train"}
    # the new peak lr on the new schedule at the old step: warmup of 10 steps, (step + 1) / 10
    assert train[4]["lr"] == pytest.approx(3e-3 * 5 / 10)
    assert train[6]["lr"] == pytest.approx(1e-3 * 7 / 10) and train[8]["lr"] == pytest.approx(1e-3 * 9 / 10)
    assert [p.name for p in list_checkpoints(folder)] == [f"cp-000{s}.pt" for s in (2, 4, 6, 8)]
    state = read_checkpoint(find_checkpoint(folder))
    assert state["history"] == [{"step": 4, "changed": {"pretraining.batch_size": [16, 8],
                                                        "pretraining.lr": [0.003, 0.001], "pretraining.steps": [4, 8]}}]
    # 4 steps of 16 rows seen: the 8-row batches go on at batch 8 of the same epoch
    assert state["data"] == {"epoch": 0, "position": 8 + 4}
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 8  # the new settings now stand
    # a change with nothing left to train is recorded all the same, so asking again is not needed
    _edit(folder, warmup_steps=4)
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 8
    assert read_checkpoint(find_checkpoint(folder))["history"][-1] == {
        "step": 8, "changed": {"pretraining.warmup_steps": [10, 4]}}
    _edit(folder, on_change="stop")
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 8


def test_another_model_shape_cannot_continue(tmp_path, shards):
    folder = model_folder(tmp_path, steps=2, log_every=2, eval_every=2, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["num_layers"] = 3
    cfg["pretraining"]["on_change"] = "continue"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"model.num_layers: 2 -> 3(.|\n)*cannot continue(.|\n)*from_cp"):
        pretrain(folder, shards, device="cpu", threads=1)
    assert [p.name for p in list_checkpoints(folder)] == ["cp-0002.pt"]


def test_restart_sets_the_earlier_run_aside(tmp_path, shards):
    folder = model_folder(tmp_path, steps=4, log_every=2, eval_every=4, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    _edit(folder, lr=1e-3, on_change="restart")
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] is None
    stale = list((folder / "checkpoints").glob("stale-*"))
    assert len(stale) == 1
    assert {"cp-0002.pt", "cp-0004.pt", "pretrain.jsonl"} <= {p.name for p in stale[0].iterdir()}
    assert read_checkpoint(find_checkpoint(folder))["config"]["pretraining"]["lr"] == 1e-3
    assert [r["step"] for r in _train_records(folder) if r["split"] == "train"] == [2, 4]  # the new run's log


def test_accumulation_equals_one_big_batch(tmp_path, shards):
    losses = []
    for run, micro in (("big", None), ("micro", 4)):
        (tmp_path / run).mkdir()
        folder = model_folder(tmp_path / run, steps=6, log_every=1, eval_every=6, checkpoint_every=6,
                              micro_batch_size=micro)
        pretrain(folder, shards, device="cpu", threads=1)
        losses.append([r["loss"] for r in _train_records(folder) if r["split"] == "train"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_pretraining_benchmark_runs_end_to_end_on_cpu(tmp_path):
    """The throughput benchmark at its tiny shape: every row trained, ratios against the transformers peer
    (no speed is asserted: this machine's speed says nothing)."""
    from effbert.bench.pretrain import PEER, bench_pretrain

    rows = bench_pretrain(tiny=True, device="cpu", warmup=1, steps=2, out=tmp_path / "bench.json")
    assert [r["model"] for r in rows] == ["softmax", "nystrom", PEER]
    assert json.loads((tmp_path / "bench.json").read_text()) == rows
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["mfu"] is None  # no MFU without a known GPU
        assert row[f"vs_{PEER}"] == pytest.approx(row["tokens_per_s"] / rows[-1]["tokens_per_s"])
        assert 5.0 < row["final_loss"] < 8.0  # ~ln(1000) = 6.9 for an untrained model
    # the same shape: parameter counts within the heads' differences (our MLM head ties the decoder too)
    assert abs(rows[0]["parameters"] - rows[-1]["parameters"]) / rows[-1]["parameters"] < 0.05


def test_runtime_keys_do_not_stop_a_resume(tmp_path, shards):
    folder = model_folder(tmp_path, steps=20, eval_every=10, checkpoint_every=10)
    pretrain(folder, shards, device="cpu")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretraining"].update(steps=20, log_every=5, eval_every=20, tensorboard=False,  # how it is watched
                              micro_batch_size=8)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert pretrain(folder, shards, device="cpu")["resumed_from"] == 20


def _names(*steps: int) -> list[str]:
    return [f"cp-{step:04d}.pt" for step in steps]


def _checkpoint_names(folder: Path) -> list[str]:
    return [p.name for p in list_checkpoints(folder)]


def test_keep_checkpoints_leaves_the_newest_and_those_named_elsewhere(tmp_path, shards, monkeypatch):
    """keep_checkpoints 2: after each save (never before it) the older checkpoints go, but for the one
    glue.checkpoint names, step 0 (weights without a run, as an import's) and the one a neighbour folder's
    from_cp names; checkpoints/stale-*/ is not touched."""
    import effbert.train.pretrain as stage

    folder = model_folder(tmp_path, steps=12, log_every=2, eval_every=12, checkpoint_every=2, keep_checkpoints=2)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["glue"] = {"checkpoint": "cp-0004.pt"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "next").mkdir()
    (tmp_path / "next" / "config.json").write_text(json.dumps({"from_cp": "../tiny/checkpoints/cp-0006.pt"}))
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    torch.save({"model": {}}, checkpoints / "cp-0000.pt")
    stale = checkpoints / "stale-20260101T000000Z"
    stale.mkdir()
    (stale / "cp-0002.pt").write_bytes(b"an earlier run")

    before_save = {}
    real_save = stage.save_checkpoint

    def save(path, **content):
        before_save[content["step"]] = _checkpoint_names(folder)
        real_save(path, **content)

    monkeypatch.setattr(stage, "save_checkpoint", save)
    pretrain(folder, shards, device="cpu", threads=1)
    assert before_save == {2: _names(0), 4: _names(0, 2), 6: _names(0, 2, 4), 8: _names(0, 4, 6),
                           10: _names(0, 4, 6, 8), 12: _names(0, 4, 6, 8, 10)}
    assert _checkpoint_names(folder) == _names(0, 4, 6, 10, 12)
    assert (stale / "cp-0002.pt").read_bytes() == b"an earlier run"
    assert find_checkpoint(folder, cfg["glue"]["checkpoint"]).name == "cp-0004.pt"


def test_without_keep_checkpoints_every_checkpoint_stays(tmp_path, shards):
    folder = model_folder(tmp_path, steps=6, log_every=2, eval_every=6, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    assert _checkpoint_names(folder) == _names(2, 4, 6)


def test_a_new_keep_checkpoints_resumes_the_run(tmp_path, shards):
    folder = model_folder(tmp_path, steps=4, log_every=1, eval_every=4, checkpoint_every=1)
    pretrain(folder, shards, device="cpu", threads=1)
    (folder / "checkpoints" / "cp-0004.pt").unlink()  # as if killed before its last checkpoint
    _edit(folder, keep_checkpoints=2)
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 3
    assert _checkpoint_names(folder) == _names(3, 4)
    before, after = (read_checkpoint(folder / "checkpoints" / name) for name in _names(3, 4))
    assert after["identity"] == before["identity"] and after["history"] == []  # the same run, no change recorded
    assert not list((folder / "checkpoints").glob("stale-*"))
    _edit(folder, keep_checkpoints=None)
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 4


def test_a_checkpoint_that_cannot_be_deleted_warns_and_training_goes_on(tmp_path, shards, monkeypatch, capsys):
    import re

    folder = model_folder(tmp_path, steps=6, log_every=2, eval_every=6, checkpoint_every=2, keep_checkpoints=1)
    tried = []
    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):
        if re.fullmatch(r"cp-\d+\.pt", self.name):  # not the temporaries of the atomic writes
            tried.append(self.name)
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    capsys.readouterr()
    assert pretrain(folder, shards, device="cpu", threads=1)["steps"] == 6
    assert _checkpoint_names(folder) == _names(2, 4, 6)
    assert tried == _names(2, 2)  # oldest first; one failure ends that save's pruning
    warnings = [line for line in capsys.readouterr().err.splitlines() if "could not delete" in line]
    assert len(warnings) == 2
    assert all(line.startswith("warning: ") and "cp-0002.pt" in line and "Permission denied" in line
               for line in warnings)


def test_outdated_checkpoints_are_only_this_runs_older_files(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name in ("cp-0000.pt", "cp-0002.pt", "cp-0004.pt", "cp-6.pt", "cp-0008.pt", "cp-0010.pt", "cp-0002.pt.bak"):
        (checkpoints / name).write_bytes(b"")
    # step 0, a name pretraining does not write, a step past the newest saved: never
    assert [p.name for p in outdated_checkpoints(tmp_path, 1, newest=8)] == _names(2, 4)
    assert [p.name for p in outdated_checkpoints(tmp_path, 3, newest=8)] == []
    spared = [tmp_path / "other" / ".." / "checkpoints" / "cp-0002.pt"]
    assert [p.name for p in outdated_checkpoints(tmp_path, 1, newest=8, spared=spared)] == _names(4)


def test_from_cp_tiles_positions_and_lists_fresh_parameters(tmp_path, shards, capsys):
    (tmp_path / "short").mkdir()
    source = model_folder(tmp_path / "short", steps=10, eval_every=10, checkpoint_every=10)
    pretrain(source, shards, device="cpu")
    longer_shards = tmp_path / "128-t"
    build_shards([shards.parent / "text"], shards.parent / "tok" / "tokenizer.json", longer_shards,
                 max_seq_len=128, recipe=ShardRecipe(dev_fraction=0.1))
    (tmp_path / "long").mkdir()
    target = model_folder(tmp_path / "long", steps=4, eval_every=4, checkpoint_every=4)
    cfg = json.loads((target / "config.json").read_text())
    cfg["model"].update(max_seq_len=128, attention={"type": "nystrom", "num_landmarks": 8, "conv_kernel": 3})
    cfg["from_cp"] = "../../short/tiny/checkpoints/cp-0010.pt"
    (target / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    pretrain(target, longer_shards, device="cpu")
    log = capsys.readouterr()
    assert "conv" in log.out + log.err  # the Nystrom convolution is new: initialised fresh and listed
    first = read_checkpoint(list_checkpoints(target)[0])["model"]
    positions = read_checkpoint(source / "checkpoints" / "cp-0010.pt")["model"]["encoder.embeddings.position.weight"]
    assert first["encoder.embeddings.position.weight"].shape == (128, 32) and positions.shape == (64, 32)


def test_a_second_writer_is_refused_and_a_dead_holders_lock_taken_over(tmp_path, shards):
    import subprocess
    import sys
    import time

    folder = model_folder(tmp_path, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom effbert.locks import writer_lock\n"
         f"with writer_lock({str(folder)!r}, 'pretraining'):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with pytest.raises(InputError, match=rf"another pretraining is writing here \(pid {holder.pid} on "):
            pretrain(folder, shards, device="cpu", threads=1)
        assert time.monotonic() - began < 5  # refused at once, not after waiting
        assert not (folder / "pretrain.jsonl").exists() and not list_checkpoints(folder)
    finally:
        holder.kill()  # as kill -9: the kernel releases its lock
        holder.wait()
    assert pretrain(folder, shards, device="cpu", threads=1)["steps"] == 2


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes(tmp_path, shards, monkeypatch):

    folder = model_folder(tmp_path, steps=6, log_every=1, eval_every=6, checkpoint_every=3)
    _killed_after_first_checkpoint(folder, shards, monkeypatch)
    log = folder / "pretrain.jsonl"
    log.write_text(log.read_text() + '{"step": 4, "split": "tr')  # killed mid-append
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 3
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line whole again
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]

    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2] + ["{broken"] + lines[2:]) + "\n")  # damage that is not a torn end
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretraining"].update(steps=7, on_change="continue")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"pretrain.jsonl: line 3: not a JSON record"):
        pretrain(folder, shards, device="cpu", threads=1)


def test_a_damaged_checkpoint_is_passed_over_with_a_warning(tmp_path, shards, capsys):
    folder = model_folder(tmp_path, steps=6, log_every=2, eval_every=6, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    (folder / "checkpoints/cp-0002.pt").write_bytes(b"damaged")  # an older one: never read
    capsys.readouterr()
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 6
    assert "passing over" not in capsys.readouterr().err
    newest = folder / "checkpoints/cp-0006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # the newest, cut short: the one before it stands in
    cut = newest.read_bytes()
    assert pretrain(folder, shards, device="cpu", threads=1)["resumed_from"] == 4
    warning = next(line for line in capsys.readouterr().err.splitlines() if "passing over" in line)
    assert "cp-0006.pt: not a readable effbert checkpoint" in warning
    # the damaged file was moved aside, kept as it was, before the resumed run saved its own step 6
    (kept,) = (folder / "checkpoints").glob("damaged-*/cp-0006.pt")
    assert kept.read_bytes() == cut and read_checkpoint(newest)["step"] == 6


def test_checkpoints_that_cannot_be_read_stop_the_run_rather_than_start_it_over(tmp_path, shards, monkeypatch):
    """Storage that fails (EIO from every read), or files all damaged: the run stops with the files untouched;
    starting at step 0 would overwrite them as it went."""
    import errno

    folder = model_folder(tmp_path, steps=4, log_every=1, eval_every=4, checkpoint_every=2)
    pretrain(folder, shards, device="cpu", threads=1)
    files = {p: p.read_bytes() for p in (folder / "checkpoints").glob("cp-*.pt")}
    log = (folder / "pretrain.jsonl").read_text()

    def failing_load(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", failing_load)
        with pytest.raises(OSError, match="Input/output error"):
            pretrain(folder, shards, device="cpu", threads=1)
    for path in files:
        path.write_bytes(b"damaged")
    with pytest.raises(InputError, match=r"no checkpoint there can be read \(cp-0004.pt, cp-0002.pt\)"):
        pretrain(folder, shards, device="cpu", threads=1)
    assert {p: p.read_bytes() for p in (folder / "checkpoints").glob("cp-*.pt")} == dict.fromkeys(files, b"damaged")
    assert (folder / "pretrain.jsonl").read_text() == log


def _copy_shards(shards: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(shards, dest)
    return dest


def test_a_shard_check_cut_short_keeps_what_it_verified(tmp_path, shards, monkeypatch):
    """The first check of a big shard set can take hours: a check that stops part way (here: a damaged file
    late in the set) has recorded the files it had verified, and the next check reads only the rest."""
    import effbert.data.shard_files as shard_files

    own = _copy_shards(shards, tmp_path / "64-t")
    (own / "verified.json").unlink(missing_ok=True)  # never checked
    last = own / "dev" / "shard-00000.lengths.npy"  # the set's last file in the check's order
    whole = last.read_bytes()
    last.write_bytes(whole[:-4])
    monkeypatch.setattr(shard_files, "RECORD_EVERY_S", 0.0)
    with pytest.raises(InputError, match="shard-00000.lengths.npy: its sha256 differs"):
        shard_files.verify_shards(own, 120)
    recorded = set(json.loads((own / "verified.json").read_text()))
    assert len(recorded) == 9 and "dev/shard-00000.lengths.npy" not in recorded
    last.write_bytes(whole)
    hashed = []
    real_sha = shard_files.sha256_file
    monkeypatch.setattr(shard_files, "sha256_file", lambda path: hashed.append(path) or real_sha(path))
    shard_files.verify_shards(own, 120)
    assert hashed == [last] and len(json.loads((own / "verified.json").read_text())) == 10


def test_damaged_shards_are_refused_before_the_first_step(tmp_path, shards, monkeypatch):
    """A flipped bit, a cut file, an edited count, token ids beyond the vocabulary: one error naming the
    file, nothing trained or written; a set verified once is not read whole again."""
    import numpy as np

    from effbert.data.shard_files import verify_shards

    folder = model_folder(tmp_path, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    own = _copy_shards(shards, tmp_path / "64-t")
    pretrain(folder, own, device="cpu", threads=1)
    verified = json.loads((own / "verified.json").read_text())
    assert set(verified) == {f"{split}/shard-00000.{f}.npy" for split in ("train", "dev") for f in
                             ("input_ids", "mlm_labels", "token_type_ids", "sop_labels", "lengths")}
    import effbert.data.shard_files as shard_files

    hashed = []
    real_sha = shard_files.sha256_file
    monkeypatch.setattr(shard_files, "sha256_file", lambda path: hashed.append(path) or real_sha(path))
    verify_shards(own, 120)  # verified before, unchanged: nothing read again
    assert hashed == []
    monkeypatch.undo()

    def refused(pattern: str, root: Path) -> None:
        (tmp_path / "m").mkdir(exist_ok=True)
        fresh = model_folder(tmp_path / "m", steps=2, log_every=1, eval_every=2, checkpoint_every=2)
        for leftover in ("checkpoints", "pretrain.jsonl"):
            assert not (fresh / leftover).exists()
        with pytest.raises(InputError, match=pattern):
            pretrain(fresh, root, device="cpu", threads=1)
        assert not (fresh / "pretrain.jsonl").exists() and not list_checkpoints(fresh)

    ids = own / "train" / "shard-00000.input_ids.npy"
    data = bytearray(ids.read_bytes())
    data[-5] ^= 0x04  # one bit of one token id
    ids.write_bytes(bytes(data))
    refused(r"shard-00000.input_ids.npy: its sha256 differs from manifest.json's", own)

    cut = _copy_shards(shards, tmp_path / "cut" / "64-t")
    labels = cut / "train" / "shard-00000.mlm_labels.npy"
    labels.write_bytes(labels.read_bytes()[:-100])
    refused(r"shard-00000.mlm_labels.npy: its sha256 differs", cut)

    counted = _copy_shards(shards, tmp_path / "counted" / "64-t")
    manifest = json.loads((counted / "manifest.json").read_text())
    manifest["splits"]["train"]["instances"] += 1
    (counted / "manifest.json").write_text(json.dumps(manifest))
    refused(r"manifest.json: train counts \d+ instances, its shards \d+", counted)

    beyond = _copy_shards(shards, tmp_path / "beyond" / "64-t")  # ids past the vocabulary, sha256 rewritten
    path = beyond / "dev" / "shard-00000.input_ids.npy"
    array = np.load(path)
    array[0, 1] = 5000
    np.save(path, array, allow_pickle=False)
    manifest = json.loads((beyond / "manifest.json").read_text())
    from effbert.files import sha256_file

    manifest["splits"]["dev"]["shards"][0]["sha256"]["input_ids"] = sha256_file(path)
    (beyond / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"dev/shard-00000.input_ids.npy: token ids 0..5000 outside the vocabulary"):
        verify_shards(beyond, 120)


def test_from_cp_that_is_not_a_checkpoint_is_one_clear_error(tmp_path, shards):
    folder = model_folder(tmp_path, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["from_cp"] = str(passwd)  # an absolute path to something else entirely
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"passwd: not a readable effbert checkpoint"):
        pretrain(folder, shards, device="cpu", threads=1)


def test_two_pretraining_processes_on_one_folder_the_second_refuses(tmp_path, shards):
    import subprocess
    import sys
    import time

    folder = model_folder(tmp_path, steps=300, log_every=10, eval_every=300, checkpoint_every=100)
    effbert = str(Path(sys.executable).parent / "effbert")
    log = tmp_path / "first.log"  # a file, not a pipe: a full pipe would stop the first run
    with open(log, "w") as err:
        first = subprocess.Popen([effbert, "pretrain", "--model", str(folder), "--shards", str(shards), "--device",
                                  "cpu", "--threads", "1"], stderr=err)
    try:
        while not (folder / "pretrain.jsonl").is_file() or not (folder / "pretrain.jsonl").read_text():
            assert first.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        with pytest.raises(InputError, match=rf"another pretraining is writing here \(pid {first.pid} on "):
            pretrain(folder, shards, device="cpu", threads=1)
    finally:
        assert first.wait(timeout=300) == 0
    records = _train_records(folder)  # the first run's files, each record once
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(10, 301, 10))
    assert [p.name for p in list_checkpoints(folder)] == ["cp-0100.pt", "cp-0200.pt", "cp-0300.pt"]
