"""Shared test helpers: where the real-format fixtures are, when this checkout has them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# tiny models gain nothing from intra-op threads, and several torch processes each spinning two
# OpenMP threads on a 2-core CI machine slow each other down many times over
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _fixtures_root() -> Path:
    return Path(os.environ.get("EFFBERT_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures (or $EFFBERT_SHARED_FIXTURES); skips the test where a clone lacks it."""
    root = _fixtures_root()
    if not root.is_dir():
        pytest.skip(f"real-format fixtures not found at {root} (set EFFBERT_SHARED_FIXTURES)")
    return root
