"""What the Triton kernels (yoso_triton.py, nystrom_pinv_triton.py) share: Triton itself where it is
installed, whether the kernels can run, and compiling a kernel on first use."""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: available() is False and no kernel is called
    triton = tl = None

__all__ = ["available", "jit", "tl", "triton"]


def available(device: torch.device | str) -> bool:
    """True where the kernels can run: CUDA with Triton importable, or anywhere under TRITON_INTERPRET=1."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


_compiled: dict = {}


def jit(fn):
    """triton.jit on first use, so that TRITON_INTERPRET is read when a kernel runs, not at import."""
    key = (fn, os.environ.get("TRITON_INTERPRET") == "1")
    if key not in _compiled:
        _compiled[key] = triton.jit(fn)
    return _compiled[key]
