"""The benchmarks' tables and figures on tiny CPU runs (no assertions about speed)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from effbert.bench.attention import COLUMNS, bench_attention
from effbert.cli import main
from effbert.constants import IGNORE
from effbert.errors import InputError

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


def test_peak_memory_of_the_naive_baseline_follows_its_n_squared_matrices(tmp_path) -> None:
    """An independent truth for the memory column: naive softmax keeps its n x n weights for the backward
    and makes n x n scores and gradients, so its peak is a few n x n float32 matrices, never less than two
    (1 x 4 heads x 1024^2 x 4 bytes = 16 MiB each); and the ratio columns divide by SDPA's row."""
    table = bench_attention(tmp_path / "b.csv", None, device="cpu", lengths=[1024], repeats=1, warmup=0, threads=1,
                            mechanisms=["softmax", "naive-softmax"])
    naive = table[table["mechanism"] == "naive-softmax"].iloc[0]
    sdpa = table[table["mechanism"] == "softmax"].iloc[0]
    square = 4 * 1024**2 * 4 / 2**20
    assert 2 * square <= naive["peak_mb"] <= 8 * square
    assert sdpa["peak_mb"] < square  # the fused kernel never holds an n x n matrix
    assert naive["memory_vs_sdpa"] == pytest.approx(naive["peak_mb"] / sdpa["peak_mb"], rel=1e-3)


def test_a_log_gets_one_line_per_measurement(tmp_path, capfd) -> None:
    """Not on a terminal (the DAG's rule writes a log) the progress is a line per measurement, not a silent bar."""
    bench_attention(tmp_path / "e.csv", None, device="cpu", lengths=[32, 64], mechanisms=["softmax"], repeats=1,
                    warmup=0, threads=1)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("bench attention")]
    assert len(lines) == 2 and lines[0].startswith("bench attention (mechanism) 1/2: softmax n=32: ")
    assert lines[1].endswith(" MiB") and " ms, " in lines[1]


def test_plot_is_a_png(tiny_run) -> None:
    _, _, out = tiny_run
    assert (out / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob(".*tmp*"))  # written atomically: no temporary left behind


def test_a_failing_mechanism_gets_an_error_row_and_the_run_goes_on(tmp_path) -> None:
    # transformers' LSH YOSO cannot run on the CPU (its kernels are CUDA's; without transformers, its import fails):
    # it fails inside the worker, as an unsupported length or an OOM would
    table = bench_attention(tmp_path / "e.csv", None, device="cpu", lengths=[64], mechanisms=["hf-yoso"], layer=True,
                            repeats=1, warmup=0, threads=1)
    rows = table.set_index("mechanism")
    assert list(rows.index) == ["softmax", "hf-yoso"]  # softmax is added as the baseline
    assert rows.loc["hf-yoso", "error"] != "" and pd.isna(rows.loc["hf-yoso", "ms"])
    assert rows.loc["softmax", "error"] == "" and rows.loc["softmax", "ms"] > 0
    assert (tmp_path / "e.csv").exists() and not (tmp_path / "e.png").exists()


# ---- bad input: one line naming the setting, before anything is measured, nothing written ----

@pytest.fixture
def nothing_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before the first measurement: reaching one fails the test."""
    from effbert.bench import attention

    def measure_all(*args, **kwargs):
        raise AssertionError("measuring started despite bad input")

    monkeypatch.setattr(attention, "_measure_all", measure_all)


@pytest.mark.parametrize(("args", "named"), [
    (["--options", "[1]"], "options"),
    (["--options", '{"nystrom": 3}'], "options 'nystrom'"),
    (["--options", '{"nystrom": {"num_landmarkz": 3}}'], "options 'nystrom': num_landmarkz: unknown key"),
    (["--options", '{"nystrom": {"num_landmarks": 0}}'], "options 'nystrom': num_landmarks"),
    (["--options", '{"nystrom-32": {"type": "nystrom", "num_landmarks": "32"}}'], "options 'nystrom-32' (nystrom)"),
    (["--options", '{"naive-softmax": {"num_landmarks": 3}}'], "options 'naive-softmax'"),
    (["--device", "gpu0"], "device 'gpu0'"),
    (["--lengths", "64", "0"], "lengths"),
    (["--lengths", "-64"], "lengths"),
    (["--repeats", "0"], "repeats"),
    (["--dtype", "float13"], "dtype 'float13'"),
    (["--threads", "-1"], "--threads"),
    (["--mechanisms", "nystromm"], "nystromm"),  # refused before too: kept
])
def test_bench_attention_refuses_bad_input_in_one_line(args: list[str], named: str, tmp_path: Path, capsys,
                                                       nothing_measured) -> None:
    out = tmp_path / "out"
    defaults = ["--lengths", "64", "--mechanisms", "softmax", "--repeats", "1", "--threads", "1", "--device", "cpu"]
    assert main(["bench", "attention", *defaults, *args, "--out", str(out / "e.csv"), "--plot",
                 str(out / "e.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("effbert bench: error: ") and named in err
    assert "Traceback" not in err and not out.exists()


def test_bench_attention_refuses_cuda_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                    nothing_measured) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "attention", "--device", "cuda", "--out", str(tmp_path / "e.csv"), "--plot",
                 str(tmp_path / "e.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device 'cuda'" in err and "is_available" in err
    assert not list(tmp_path.iterdir())


def test_bench_attention_names_a_bad_device_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                 nothing_measured) -> None:
    monkeypatch.setenv("EFFBERT_DEVICE", "gpu1")
    with pytest.raises(InputError, match=r"\$EFFBERT_DEVICE\) 'gpu1'"):
        bench_attention(None, None, lengths=[64])


@pytest.mark.parametrize(("settings", "named"), [
    ({"warmup": -1}, "warmup"),
    ({"repeats": 0}, "repeats"),
    ({"lengths": [64, 0]}, "lengths"),
    ({"dtype": "half"}, "dtype 'half'"),  # one name per dtype: the csv's column says which ran
    ({"options": [1]}, "options"),
    ({"options": {"fast": {"type": "yoso", "hash_bits": 99}}}, "options 'fast' (yoso): hash_bits"),
    ({"mechanisms": ["softmax"], "options": {"hf-nystromformer": {"num_landmarkz": 8}}},
     "options 'hf-nystromformer' (nystrom): num_landmarkz"),  # checked even where not measured
])
def test_bench_attention_checks_its_settings_before_measuring(settings: dict, named: str, tmp_path: Path,
                                                              nothing_measured) -> None:
    """The Python API (and so bench gpu, swap-eval) gets the CLI's checks: an InputError, nothing written."""
    settings = {"device": "cpu", "lengths": [64], "mechanisms": ["softmax", "nystrom"], **settings}
    with pytest.raises(InputError, match=re.escape(named)):
        bench_attention(tmp_path / "e.csv", tmp_path / "e.png", **settings)
    assert not list(tmp_path.iterdir())


def test_bench_attention_refuses_a_folder_as_its_csv(tmp_path: Path, capsys, nothing_measured) -> None:
    # found only after the whole run otherwise
    assert main(["bench", "attention", "--device", "cpu", "--out", str(tmp_path), "--plot",
                 str(tmp_path / "e.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"out {str(tmp_path)!r}" in err
    assert not list(tmp_path.iterdir())


def test_a_single_token_is_a_length_too(tmp_path: Path) -> None:
    table = bench_attention(None, None, device="cpu", lengths=[1], mechanisms=["softmax"], repeats=1, warmup=0,
                            threads=1)
    assert table["error"].tolist() == [""] and table["ms"].iloc[0] > 0


def test_peers_are_whole_layers() -> None:
    with pytest.raises(ValueError, match="layer"):
        bench_attention(None, None, device="cpu", lengths=[64], mechanisms=["hf-nystromformer"])


def test_the_nystromformer_peer_does_the_work_of_our_layer() -> None:
    pytest.importorskip("transformers")
    from effbert.bench.attention import _build

    options = {"num_landmarks": 16, "conv_kernel": 33}
    ours, _ = _build("nystrom", options, 4, 64, 256, 256, layer=True)
    peer, resolved = _build("hf-nystromformer", options, 4, 64, 256, 256)
    assert resolved == {"num_landmarks": 16, "segment_means_seq_len": 256, "conv_kernel_size": 33}
    # the same projections (q, k, v, output: 4 x (256^2 + 256)) and the same depthwise convolution (4 heads x 33)
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in ours.parameters()) == 4 * 257 * 256 + 132
    x = torch.randn(2, 256, 256)
    assert peer(x, None).shape == ours(x, None).shape == x.shape


# ---- `effbert bench gpu --tiny`: the GPU command's whole code path on the CPU ----

@pytest.fixture(scope="module")
def gpu_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu")
    assert main(["bench", "gpu", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_bench_gpu_tiny_writes_its_six_files(gpu_tiny: Path) -> None:
    assert sorted(p.name for p in gpu_tiny.iterdir()) == ["attention.json", "attention.md", "norms.json", "norms.md",
                                                          "pretrain.json", "pretrain.md"]  # no temporary left


def test_bench_gpu_norms_rows(gpu_tiny: Path) -> None:
    """Part (d): each norm setting timed for training and inference, the Markdown with ratios to Pre-LN."""
    result = json.loads((gpu_tiny / "norms.json").read_text())
    assert set(result["seconds"]) == {"pre", "pre_rmsnorm", "pre_crmsnorm"}
    for kinds in result["seconds"].values():
        assert set(kinds) == {"train", "infer"} and all(t > 0 for ts in kinds.values() for t in ts)
    text = (gpu_tiny / "norms.md").read_text()
    assert "| pre_rmsnorm |" in text and "ViT-Ti training 2.4% faster" in text


def test_bench_gpu_attention_rows(gpu_tiny: Path) -> None:
    table = pd.DataFrame(json.loads((gpu_tiny / "attention.json").read_text())["rows"])
    assert list(table.columns) == COLUMNS
    names = {unit: set(rows["mechanism"]) for unit, rows in table.groupby("unit")}
    assert names == {"mechanism": {"softmax", "nystrom", "naive-softmax"},
                     "layer": {"softmax", "nystrom", "naive-softmax", "hf-nystromformer", "hf-yoso"}}
    assert table.groupby(["unit", "mechanism"])["n"].apply(sorted).tolist() == [[128, 256]] * 8
    ok = table[table["error"] == ""]
    assert np.isfinite(ok["ms"]).all() and (ok["ms"] > 0).all() and (ok["peak_mb"] >= 0).all()
    # the ratios are each time over the SDPA time of the same table and length
    sdpa = table[table["mechanism"] == "softmax"].set_index(["unit", "n"])["ms"]
    expected = ok["ms"].to_numpy() / sdpa.loc[list(zip(ok["unit"], ok["n"], strict=True))].to_numpy()
    assert ok["time_vs_sdpa"].to_numpy() == pytest.approx(expected, rel=1e-9)
    rows = table.set_index(["unit", "mechanism", "n"])
    assert rows.loc[("layer", "naive-softmax", 256), "error"].startswith("skipped")  # its length limit
    assert np.isnan(rows.loc[("layer", "naive-softmax", 256), "ms"])
    for n in (128, 256):
        assert rows.loc[("layer", "softmax", n), "error"] == rows.loc[("mechanism", "nystrom", n), "error"] == ""
        if importlib.util.find_spec("transformers"):  # transformers' Nystromformer runs on the CPU; its LSH YOSO
            assert rows.loc[("layer", "hf-nystromformer", n), "error"] == ""  # needs its CUDA kernels
            assert "CUDA kernels" in rows.loc[("layer", "hf-yoso", n), "error"]  # n=256: skipped, naming it
        else:
            assert "transformers" in rows.loc[("layer", "hf-nystromformer", n), "error"]


def test_bench_gpu_attention_markdown(gpu_tiny: Path) -> None:
    text = (gpu_tiny / "attention.md").read_text()
    assert "| mechanism | 128 | 256 | time / SDPA at 256 | memory / SDPA at 256 |" in text
    assert text.count("| softmax (SDPA) |") == 2  # one table per unit
    line = next(x for x in text.splitlines() if x.startswith("| hf-yoso |"))
    assert "- (" in line  # an error cell


def test_bench_gpu_pretrain_rows(gpu_tiny: Path) -> None:
    from effbert.config import PretrainConfig

    result = json.loads((gpu_tiny / "pretrain.json").read_text())
    # the pretraining section's defaults, as a real run gets them
    for key in ("precision", "attention_fp32", "compile"):
        assert result["settings"]["pretrain"][key] == PretrainConfig.model_fields[key].default
    throughput = {r["model"]: r for r in result["throughput"]}
    assert set(throughput) == {"softmax", "nystrom", "hf-bert-sdpa"}
    peer = throughput["hf-bert-sdpa"]["tokens_per_s"]
    for r in throughput.values():
        assert math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0
        assert r["vs_hf-bert-sdpa"] == pytest.approx(r["tokens_per_s"] / peer)
    precision = {r["mechanism"]: r for r in result["precision"]}
    assert set(precision) == {"softmax", "nystrom"}
    for r in precision.values():
        assert r["error"] == ""
        assert 0 < r["fp32_loss"] < 10 and 0 < r["bf16_loss"] < 10  # an MLM loss near log(100) = 4.6
        assert r["relative_difference"] == pytest.approx(abs(r["bf16_loss"] - r["fp32_loss"]) / r["fp32_loss"])
    text = (gpu_tiny / "pretrain.md").read_text()
    assert "| model | tokens/s | MFU | vs hf-bert-sdpa |" in text and "| fp32 loss | bf16 loss |" in text
    assert "| nystrom |" in text.split("# bf16 against fp32")[1]


def test_motif_batches_are_the_same_for_a_seed_and_hide_what_they_ask() -> None:
    from effbert.bench.gpu import MASK_ID, motif_batches

    a, b = (next(motif_batches(4, 32, 100, torch.device("cpu"), seed=3)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    asked = a["mlm_labels"] != IGNORE
    assert asked.any() and (a["input_ids"][asked] == MASK_ID).all() and (a["mlm_labels"][asked] > MASK_ID).all()
    # every label is visible 8 positions away (the motif repeats), unless that copy is masked too
    ids = torch.where(asked, a["mlm_labels"], a["input_ids"])
    assert torch.equal(ids[:, 8:], ids[:, :-8])


def test_bench_gpu_refuses_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("EFFBERT_DEVICE", raising=False)
    assert main(["bench", "gpu", "--out", str(tmp_path / "gpu")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GPU" in err and "--tiny" in err
    assert not (tmp_path / "gpu").exists()


def test_every_token_real_means_mask_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # the encoder gives a batch without padding mask None (so softmax may take the flash kernels): so must the bench
    from effbert.bench import attention

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, q, k, v, mask):
            seen.append(mask)
            return v * 1.0

    monkeypatch.setattr(attention, "_build", lambda *args, **kwargs: (Spy(), {}))
    spec = {"device": "cpu", "dtype": "float32", "mechanism": "softmax", "options": {}, "n": 16, "batch": 1,
            "heads": 2, "head_dim": 8, "max_len": 16, "repeats": 1, "warmup": 1, "seed": 0, "part": "time"}
    assert attention.measure(spec)["ms"] > 0
    assert len(seen) == 3 and all(mask is None for mask in seen)  # the shape call, the warm-up, the timed call


def test_q_k_v_come_in_the_encoders_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    # what a mechanism is given in training (model/encoder.py SelfAttention) is the truth the bench must copy:
    # same shapes and memory layout, so that layout copies the encoder never makes are not timed
    from effbert.bench import attention
    from effbert.model.encoder import SelfAttention

    seen: dict[str, list] = {"encoder": [], "bench": []}

    class Spy(torch.nn.Module):
        def __init__(self, key: str):
            super().__init__()
            self.key = key

        def forward(self, q, k, v, mask):
            seen[self.key] += [(t.shape, t.stride()) for t in (q, k, v)]
            return v * 1.0

    cfg = attention._model_config("softmax", {}, 2, 8, 16)
    layer = SelfAttention(cfg, {})
    layer.mechanism = Spy("encoder")
    layer(torch.randn(1, 16, 16), None)
    monkeypatch.setattr(attention, "_build", lambda *args, **kwargs: (Spy("bench"), {}))
    spec = {"device": "cpu", "dtype": "float32", "mechanism": "softmax", "options": {}, "n": 16, "batch": 1,
            "heads": 2, "head_dim": 8, "max_len": 16, "repeats": 1, "warmup": 0, "seed": 0, "part": "time"}
    attention.measure(spec)
    assert seen["bench"][:3] == seen["encoder"]
    assert seen["encoder"][0][1] != torch.empty(seen["encoder"][0][0]).stride()  # not contiguous (B, H, N, D)
