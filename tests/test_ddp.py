"""Two gloo processes (DistributedDataParallel, each half of every global batch) train as one process
with the same global batch does: the same logged losses within float rounding; and resume exactly."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from effbert.train.checkpoints import find_checkpoint, list_checkpoints, read_checkpoint
from effbert.train.pretrain import pretrain
from helpers import model_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str, shards_dir: str) -> None:
    # what torchrun would set
    os.environ |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(1)
    pretrain(folder, shards_dir, device="cpu", threads=1)


def _losses(folder: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (folder / "pretrain.jsonl").read_text().splitlines())
            if r["split"] == "train"]


@pytest.mark.slow  # 20-40 s: two pairs of fresh Python processes importing torch
def test_two_processes_match_one(tmp_path, shards):  # noqa: F811
    folders = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        folders.append(model_folder(tmp_path / run, steps=8, log_every=1, eval_every=8, checkpoint_every=4))
    one, two = folders
    pretrain(one, shards, device="cpu", threads=1)
    started = time.perf_counter()
    mp.spawn(_worker, args=(2, _free_port(), str(two), str(shards)), nprocs=2, join=True)
    print(f"2 processes: {time.perf_counter() - started:.1f} s")

    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    assert len(_losses(two)) == 8
    assert [p.name for p in list_checkpoints(two)] == ["cp-0004.pt", "cp-0008.pt"]  # rank 0 alone writes
    assert json.loads((two / "pretrain.json").read_text())["processes"] == 2
    a, b = (read_checkpoint(find_checkpoint(f))["model"] for f in (one, two))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)

    # resumed from cp-0004 (every rank's RNG streams and running sums come back), bitwise the same
    whole = (two / "pretrain.jsonl").read_text().splitlines()
    (two / "checkpoints" / "cp-0008.pt").unlink()
    (two / "pretrain.json").unlink()
    mp.spawn(_worker, args=(2, _free_port(), str(two), str(shards)), nprocs=2, join=True)
    assert json.loads((two / "pretrain.json").read_text())["resumed_from"] == 4
    clock = ("seconds", "tokens_per_s")
    again = (two / "pretrain.jsonl").read_text().splitlines()
    assert [{k: v for k, v in json.loads(x).items() if k not in clock} for x in again] == \
        [{k: v for k, v in json.loads(x).items() if k not in clock} for x in whole]
    assert all(torch.equal(b[k], c) for k, c in read_checkpoint(find_checkpoint(two))["model"].items())


SHORT_TIMEOUT_S, CHECK_S = 4, 8  # the process group's timeout, shrunk; rank 0's shard check, longer than it


def _slow_check_worker(rank: int, world: int, port: int, folder: str, shards_dir: str) -> None:
    """_worker with the process group's timeout shrunk to seconds (NCCL's is 10 minutes) and a shard check on
    rank 0 that outlasts it, as a first check of a big set on network storage outlasts NCCL's."""
    import datetime

    import torch.distributed as dist

    import effbert.train.pretrain as pretraining

    real_init, real_verify = dist.init_process_group, pretraining.verify_shards

    def init(*args, **kwargs):
        real_init(*args, **kwargs, timeout=datetime.timedelta(seconds=SHORT_TIMEOUT_S))

    def slow_verify(*args, **kwargs):
        time.sleep(CHECK_S)
        real_verify(*args, **kwargs)

    dist.init_process_group, pretraining.verify_shards = init, slow_verify
    _worker(rank, world, port, folder, shards_dir)


@pytest.mark.slow  # 20-30 s: two fresh Python processes and the slow check
def test_the_other_ranks_wait_for_a_shard_check_longer_than_the_group_timeout(tmp_path, shards):  # noqa: F811
    folder = model_folder(tmp_path, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    mp.spawn(_slow_check_worker, args=(2, _free_port(), str(folder), str(shards)), nprocs=2, join=True)
    assert json.loads((folder / "pretrain.json").read_text())["processes"] == 2
    assert [p.name for p in list_checkpoints(folder)] == ["cp-0002.pt"]
