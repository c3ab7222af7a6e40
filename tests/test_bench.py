"""The attention benchmark's table and figure on a tiny CPU run (no assertions about speed)."""

from __future__ import annotations

import pandas as pd
import pytest

from effbert.bench.attention import COLUMNS, bench_attention

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    out = tmp_path_factory.mktemp("bench")
    table = bench_attention(out / "efficiency.csv", out / "efficiency.png", device="cpu", lengths=[64, 128],
                            mechanisms=["softmax", "nystrom"], repeats=1, warmup=0, threads=1)
    return table, pd.read_csv(out / "efficiency.csv"), out


def test_csv_has_one_row_per_mechanism_and_length(tiny_run) -> None:
    table, csv, _ = tiny_run
    assert list(csv.columns) == COLUMNS
    assert sorted(zip(csv["mechanism"], csv["n"], strict=True)) == [
        ("nystrom", 64), ("nystrom", 128), ("softmax", 64), ("softmax", 128)]
    assert csv["error"].isna().all()  # nothing failed
    assert (csv["ms"] > 0).all() and (csv["peak_mb"] >= 0).all()
    assert set(csv["device"]) == {"cpu (1 threads)"} and set(csv["dtype"]) == {"float32"}
    assert '"num_landmarks": 64' in csv.loc[csv["mechanism"] == "nystrom", "options"].iloc[0]
    assert len(table) == len(csv)


def test_softmax_is_its_own_baseline(tiny_run) -> None:
    _, csv, _ = tiny_run
    softmax = csv[csv["mechanism"] == "softmax"]
    assert (softmax["time_vs_sdpa"] == 1.0).all() and (softmax["memory_vs_sdpa"] == 1.0).all()
    nystrom = csv[csv["mechanism"] == "nystrom"].set_index("n")
    base = softmax.set_index("n")
    assert nystrom["time_vs_sdpa"].to_numpy() == pytest.approx((nystrom["ms"] / base["ms"]).to_numpy(), rel=1e-4)


def test_plot_is_a_png(tiny_run) -> None:
    _, _, out = tiny_run
    assert (out / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob(".*tmp*"))  # written atomically: no temporary left behind


def test_a_failing_mechanism_gets_an_error_row_and_the_run_goes_on(tmp_path) -> None:
    # an impossible option fails inside the worker, as an unsupported length or an OOM would
    table = bench_attention(tmp_path / "e.csv", None, device="cpu", lengths=[64], mechanisms=["nystrom"],
                            options={"nystrom": {"num_landmarks": 0}}, repeats=1, warmup=0, threads=1)
    rows = table.set_index("mechanism")
    assert list(rows.index) == ["softmax", "nystrom"]  # softmax is added as the baseline
    assert "num_landmarks" in rows.loc["nystrom", "error"] and pd.isna(rows.loc["nystrom", "ms"])
    assert rows.loc["softmax", "error"] == "" and rows.loc["softmax", "ms"] > 0
    assert not (tmp_path / "e.png").exists()
