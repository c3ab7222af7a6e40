"""Preprocessing benchmark: the synthetic corpus is in the documents format and the table has its columns
(speed and memory are what the real-size run is for, not this test)."""

from __future__ import annotations

import json

from effbert.bench.preprocess import bench_preprocess, make_corpus
from effbert.data.documents_format import iter_documents

COLUMNS = ["size_mb", "workers", "documents", "instances", "tokens", "wall_s", "tokens_per_s", "peak_rss_mb",
           "worker_peak_rss_mb"]  # fmt: skip


def test_corpus_is_seeded_documents_of_the_asked_size(tmp_path):
    folder = make_corpus(tmp_path / "a", 1, seed=3)
    size = sum(p.stat().st_size for p in folder.glob("part-*.txt"))
    assert 1_000_000 <= size <= 1_100_000
    documents = list(iter_documents(folder))
    assert json.loads((folder / "stats.json").read_text())["documents"] == len(documents) > 50
    sentences = [len(s.split()) for doc in documents for s in doc]
    assert 10 <= sorted(sentences)[len(sentences) // 2] <= 30  # median words per sentence
    assert max(len(doc) for doc in documents) > 3 * min(len(doc) for doc in documents)
    again = make_corpus(tmp_path / "b", 1, seed=3)
    assert (again / "part-00000.txt").read_bytes() == (folder / "part-00000.txt").read_bytes()


def test_bench_table_has_every_run_and_column(tmp_path):
    table = bench_preprocess(tmp_path, sizes_mb=(1, 2), workers=(1, 2), max_seq_len=128)
    assert list(table.columns) == COLUMNS
    assert [tuple(r) for r in table[["size_mb", "workers"]].to_numpy()] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert (table["tokens"] > 0).all() and (table["wall_s"] > 0).all() and (table["peak_rss_mb"] > 0).all()
    # Worker count never changes the output: the same instances and tokens for both.
    for _, pair in table.groupby("size_mb"):
        assert pair["tokens"].nunique() == 1 and pair["instances"].nunique() == 1
    assert (tmp_path / "preprocess.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
