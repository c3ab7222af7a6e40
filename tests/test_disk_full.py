"""A full disk (a file size limit, `ulimit -f`) in the middle of each writing stage: the stage ends within
seconds with one error line and a non-zero status, and nothing half-written stands under a final name."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from effbert.data.shards import build_shards
from effbert.data.tokenizer import train_tokenizer
from effbert.pipeline_config import ShardRecipe
from helpers import model_folder, patterned_corpus

EFFBERT = str(Path(sys.executable).parent / "effbert")
DUMP = ROOT / "demo/data-preprocessing/wiki/demowiki-pages-articles.xml.bz2"


def limited(kilobytes: int, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`effbert ARGS` with files limited to `kilobytes` (bash's ulimit -f counts 1024-byte blocks)."""
    began = time.monotonic()
    done = subprocess.run(["bash", "-c", f"ulimit -f {kilobytes}; exec {shlex.join([EFFBERT, *args])}"],
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - began


def one_error_line(done: subprocess.CompletedProcess, stage: str) -> str:
    assert done.returncode != 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"effbert {stage}: error: "), done.stderr[-2000:]
    return errors[0]


def test_documents_on_a_full_disk(tmp_path):
    out = tmp_path / "text" / "wiki"
    done, seconds = limited(20, "documents", "--source", "wiki", "--input", str(DUMP), "--out", str(out))
    assert "File too large" in one_error_line(done, "documents") and seconds < 60
    assert not out.exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    patterned_corpus(root / "text")
    return root / "text", train_tokenizer("wordpiece", 120, [root / "text"], root / "tok", lowercase=True)


def test_shards_on_a_full_disk(tmp_path, corpus):
    text, tokenizer = corpus
    out = tmp_path / "64-t"
    done, seconds = limited(30, "shards", "--text", str(text), "--tokenizer", str(tokenizer), "--out", str(out),
                            "--max_seq_len", "64", "--dupe_factor", "4")
    line = one_error_line(done, "shards")
    assert ".npy (" in line and "is the disk full?" in line and seconds < 60
    assert not out.exists()


def test_pretraining_on_a_full_disk(tmp_path, corpus):
    text, tokenizer = corpus
    shards = tmp_path / "64-t"
    build_shards([text], tokenizer, shards, max_seq_len=64, recipe=ShardRecipe(dev_fraction=0.1))
    folder = model_folder(tmp_path, steps=4, log_every=1, eval_every=4, checkpoint_every=2)
    done, seconds = limited(40, "pretrain", "--model", str(folder), "--shards", str(shards), "--device", "cpu")
    line = one_error_line(done, "pretrain")
    assert "cp-0002.pt" in line and "is the disk full?" in line and seconds < 60
    assert not list((folder / "checkpoints").glob("*")) and not (folder / "pretrain.json").exists()


def test_a_resume_that_cannot_rewrite_the_log_leaves_it_whole(tmp_path, corpus):
    """A resumed run first rewrites pretrain.jsonl without the records past its checkpoint; on a full disk that
    rewrite fails, and the log is still all there (not cut where the disk filled)."""
    text, tokenizer = corpus
    shards = tmp_path / "64-t"
    build_shards([text], tokenizer, shards, max_seq_len=64, recipe=ShardRecipe(dev_fraction=0.1))
    folder = model_folder(tmp_path, steps=12, log_every=1, eval_every=12, checkpoint_every=10)
    done, _ = limited(100_000, "pretrain", "--model", str(folder), "--shards", str(shards), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "checkpoints" / "cp-0012.pt").unlink()
    (folder / "pretrain.json").unlink()
    log = (folder / "pretrain.jsonl").read_text()
    assert len(log) > 2 * 1024  # the ten records kept are more than the limit below
    done, _ = limited(2, "pretrain", "--model", str(folder), "--shards", str(shards), "--device", "cpu")
    assert "pretrain.jsonl" in one_error_line(done, "pretrain")
    assert (folder / "pretrain.jsonl").read_text() == log
