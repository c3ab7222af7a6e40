"""Where to run and how to make a run repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name`, else $EFFBERT_DEVICE, else the GPU when there is one, else the CPU."""
    name = name or os.environ.get("EFFBERT_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Snakemake gives each job `threads`; torch must not take every core on top of that."""
    if threads:
        torch.set_num_threads(threads)
