"""bench/wiki_dump.py at a tiny size: every stage measured, the same documents from 1 and 2 workers, and the
token count the shards' own per-instance lengths."""

from __future__ import annotations

import numpy as np
import pytest

from effbert.bench.wiki_dump import bench


@pytest.mark.slow
def test_the_dump_benchmark_measures_each_stage_and_counts_the_shards_tokens(tmp_path):
    table = bench(tmp_path, sizes_mb=[1], workers=[1, 2], vocab=None, chunk_mb=1)
    assert list(zip(table["stage"], table["workers"], strict=True)) == [("documents", 1), ("documents", 2),
                                                                       ("shards", 1)]  # fmt: skip
    assert ((table["seconds"] > 0) & (table["cpu_seconds"] > 0) & (table["child_peak_mb"] > 0)).all()
    parts = [sorted((tmp_path / f"text-1-{n}").glob("part-*.txt")) for n in (1, 2)]
    assert [p.read_bytes() for p in parts[0]] == [p.read_bytes() for p in parts[1]]  # any number of workers
    shards = table[table["stage"] == "shards"].iloc[0]
    lengths = [np.load(f, allow_pickle=False) for f in sorted((tmp_path / "shards-1").rglob("*.lengths.npy"))]
    assert shards["tokens"] == sum(int(x.sum()) for x in lengths) > 0  # CLS and SEPs included, every split
    assert shards["tokens_per_s"] == pytest.approx(shards["tokens"] / shards["seconds"])
    assert shards["tokens_per_cpu_s"] == pytest.approx(shards["tokens"] / shards["cpu_seconds"])
