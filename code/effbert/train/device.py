"""Where to run and how to make a run repeatable."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from effbert.errors import InputError


def pick_device(name: str | None = None) -> torch.device:
    """`name` (--device), else $EFFBERT_DEVICE, else the GPU when there is one, else the CPU. A name that is no
    device (cpu, cuda, cuda:N, mps), or one this machine lacks, is an InputError naming where it came from."""
    where = "device"
    if not name and os.environ.get("EFFBERT_DEVICE"):
        name, where = os.environ["EFFBERT_DEVICE"], "device (from $EFFBERT_DEVICE)"
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's "Invalid device string"
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{where} {name!r}: expected cpu, cuda or cuda:N (N the GPU's index), or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise InputError(f"{where} {name!r}: this machine has no CUDA GPU that torch can use "
                             "(torch.cuda.is_available() is False); use cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"{where} {name!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{where} {name!r}: this machine has no MPS device that torch can use; use cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Snakemake gives each job `threads`; torch must not take every core on top of that. None or 0: torch's own."""
    if threads is not None and threads < 0:
        raise InputError(f"--threads {threads}: expected a number of CPU threads, at least 1 (or 0: torch's default)")
    if threads:
        torch.set_num_threads(threads)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's mallopt for each (parameter, value); False where the C library is not glibc or refuses one."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    except (OSError, AttributeError):
        return False


def reuse_freed_cpu_memory() -> bool:
    """Have glibc keep freed blocks below 256 MiB for reuse (and up to 1 GiB free at the heap's top): a training
    step frees and allocates the same tensors every step. By default a block of a few MiB is an mmap of its own,
    returned to the system on free, so the next step's tensor of that size faults its pages in again: zeroing a
    fresh 4 MiB tensor then takes ~2.7 ms against ~0.1 ms for one already mapped (one core of this project's VM).
    The resident set stays at the run's peak rather than dropping between steps. False where it is not glibc."""
    return _mallopt((_M_MMAP_THRESHOLD, 256 << 20), (_M_TRIM_THRESHOLD, 1 << 30))


def return_large_frees_to_the_os() -> bool:
    """The opposite, for measuring memory: glibc serves every allocation of 1 MiB or more by its own mmap, given
    back on free, so that the resident set follows the live tensors. By default the threshold moves up to 32 MiB
    as blocks are freed, and freed heap blocks stay resident, fragmenting and overstating peaks of mid-sized
    tensors (fixing the threshold also stops the moving)."""
    return _mallopt((_M_MMAP_THRESHOLD, 1 << 20))


# Dense (no sparsity) bf16/fp16 tensor-core peak FLOP/s by GPU name, from the vendors' data sheets
# (SXM parts). A GPU not listed has no MFU rather than a wrong one.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The device's peak FLOP/s at `dtype` (bf16/fp16 only), or None when unknown."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def init_distributed(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device). Under torchrun (WORLD_SIZE > 1 in the environment) the
    process group starts from the variables torchrun sets: nccl on GPUs, one per LOCAL_RANK; gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return 0, 1, dev
    import torch.distributed as dist

    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


# how long the other ranks wait for rank 0's preparation (the shard set's first check reads every file: on
# network storage, hours for a big set); a rank 0 that fails instead ends the job at once (torchrun stops the rest)
PREPARATION_TIMEOUT = datetime.timedelta(hours=12)


@contextlib.contextmanager
def rank_zero_first(timeout: datetime.timedelta = PREPARATION_TIMEOUT) -> Iterator[None]:
    """Every rank enters; at the end the others wait for rank 0 to get there, up to `timeout`, not the process
    group's own (NCCL's 10 minutes, meant for collectives that hang). The wait runs in a gloo group of its own,
    made on entry by every rank at once; no-op without a process group."""
    import torch.distributed as dist

    group = None
    if dist.is_available() and dist.is_initialized():
        group = dist.new_group(backend="gloo", timeout=timeout)
    yield
    if group is not None:
        dist.barrier(group=group)
        dist.destroy_process_group(group)


def end_distributed(completed: bool) -> None:
    """Tear the process group down. After a completed run every rank first waits at a barrier, so that no rank
    closes its connections while another still works (rank 0 writes the run's files after the last step), and
    whatever still holds the group (DDP's reducer, if a reference cycle keeps it) is collected while the
    interpreter is whole. Without them, rank 1 of a resumed 2-process CPU run once aborted after its last step
    ("terminate called without an active exception", tests/test_ddp.py, 1 run in many). A failed run skips
    the barrier: the other ranks may never reach it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if completed:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
