"""The config's `efficiency` section (effbert.pipeline_config.EfficiencyConfig) as the `efficiency` target runs it:
it validates, names a bad key, reaches `effbert bench attention` as flags, measures Nystrom under two option sets
in one run, and results/efficiency.md fills both of Table 1's Nystromformer rows from them."""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

import conftest
from effbert.bench.attention import bench_attention
from effbert.cli import build_parser, main
from effbert.pipeline_config import EfficiencyConfig, PipelineConfig
from effbert.report.efficiency import write_efficiency_markdown
from test_report import table_rows

NYSTROM_32 = {"type": "nystrom", "num_landmarks": 32}


def _config(name: str) -> dict:
    return yaml.safe_load((conftest.ROOT / "config" / name).read_text())


def _beside_the_paper(page: str) -> dict[tuple[str, str], dict[str, str]]:
    """(paper row, n) -> the cells of results/efficiency.md's Table 1 section."""
    return {(row["paper row"], row["n"]): row for row in table_rows(page.split("## Beside the paper's Table 1")[1])}


# ---- (a) the section: its defaults are the bench's, a bad key or value is named ----

def test_left_unset_the_section_is_the_bench_run_as_it_always_ran():
    """No flag but --repeats at its default: the bench picks lengths and mechanisms for the device, as before."""
    settings = PipelineConfig.model_validate({**_config("demo.yaml"), "efficiency": {}}).efficiency
    assert settings.bench_args() == ["--repeats", "5"] and settings.threads == 4  # the rule's threads before
    # the same default wherever the bench can be started from (cli.py declares its flag's own)
    assert settings.repeats == inspect.signature(bench_attention).parameters["repeats"].default
    assert build_parser().parse_args(["bench", "attention"]).repeats == settings.repeats


def test_the_real_config_adds_nystrom_32_to_the_defaults_and_the_demo_is_tiny():
    real = PipelineConfig.model_validate(_config("config.yaml")).efficiency
    assert (real.lengths, real.mechanisms, real.repeats) == (None, None, 5)  # the bench's defaults
    assert {label: v.model_dump(exclude_unset=True) for label, v in real.variants.items()} == {"nystrom-32": NYSTROM_32}
    demo = PipelineConfig.model_validate(_config("demo.yaml")).efficiency
    assert demo.repeats == 1 and max(demo.lengths) <= 512 and {"nystrom", "nystrom-32"} <= set(demo.mechanisms)


@pytest.mark.parametrize(("section", "named"), [
    ({"repeat": 3}, "efficiency.repeat"),  # a misspelt key is an error, not a silent default
    ({"repeats": 0}, "efficiency.repeats"),
    ({"lengths": [512, 0]}, "efficiency.lengths.1"),
    ({"lengths": []}, "efficiency.lengths"),
    ({"threads": 0}, "efficiency.threads"),
    ({"mechanisms": ["nystrom", "nystorm"]}, "mechanisms: unknown ['nystorm']"),
    ({"mechanisms": ["nystrom-32"]}, "mechanisms: unknown ['nystrom-32']"),  # a label no variant defines
    ({"variants": {"nystrom-32": {"type": "nystrom", "num_landmark": 32}}}, "variants.nystrom-32.nystrom.num_landmark"),
    ({"variants": {"nystrom-32": {"num_landmarks": 32}}}, "variants.nystrom-32"),  # no type: which mechanism?
    ({"variants": {"nystrom-32": {"type": "nystromformer"}}}, "variants.nystrom-32"),
    ({"variants": {"--lengths": NYSTROM_32}}, "variants.--lengths"),  # a label is a word of the command line
    ({"variants": {"yoso": NYSTROM_32}}, "variants.yoso: a mechanism's own name"),
])
def test_a_bad_key_or_value_is_named(section, named):
    with pytest.raises(ValidationError) as raised:
        PipelineConfig.model_validate({**_config("demo.yaml"), "efficiency": section})
    assert named in str(raised.value)


def test_the_dag_refuses_a_bad_section_before_anything_runs(tmp_path):
    project = conftest.copy_project(tmp_path, ["demo"])
    config = yaml.safe_load((project / "config/demo.yaml").read_text())
    config["efficiency"]["mechanisms"].append("nystorm")
    (project / "config/demo.yaml").write_text(yaml.safe_dump(config))
    done = conftest.snakemake(project, "--configfile", "config/demo.yaml", "-n", "--cores", "1", "efficiency",
                              check=False)
    assert done.returncode != 0 and "mechanisms: unknown ['nystorm']" in done.stdout + done.stderr


# ---- (b) one run, Nystrom under two option sets; (c) the page fills both Nystromformer rows ----

@pytest.fixture(scope="module")
def variant_run(tmp_path_factory) -> Path:
    """The section's flags through `effbert bench attention` at Table 1's first n (512), one repeat; nystrom-16 is
    defined but not listed, so it is not measured."""
    settings = EfficiencyConfig(lengths=[512], mechanisms=["naive-softmax", "nystrom", "nystrom-32"], repeats=1,
                                variants={"nystrom-32": NYSTROM_32, "nystrom-16": {"type": "nystrom",
                                                                                    "num_landmarks": 16}})
    out = tmp_path_factory.mktemp("variants")
    assert main(["bench", "attention", *settings.bench_args(), "--out", str(out / "efficiency.csv"), "--plot",
                 str(out / "efficiency.png"), "--threads", "1", "--device", "cpu"]) == 0
    return out


def test_a_variant_is_a_row_of_its_own_with_its_options(variant_run):
    csv = pd.read_csv(variant_run / "efficiency.csv", keep_default_na=False)
    assert list(csv["variant"]) == ["softmax", "naive-softmax", "nystrom", "nystrom-32"]  # listed order, baseline first
    assert (csv["error"] == "").all() and (csv["ms"] > 0).all()
    nystrom = csv[csv["mechanism"] == "nystrom"].set_index("variant")
    # each row records the options it ran with, the defaults resolved: what the report matches Table 1 by
    landmarks = {variant: json.loads(options)["num_landmarks"] for variant, options in nystrom["options"].items()}
    assert landmarks == {"nystrom": 64, "nystrom-32": 32}
    assert {json.loads(options)["pinv_iterations"] for options in nystrom["options"]} == {6}  # the rest: defaults


def test_the_page_fills_both_nystromformer_rows_of_table_1(variant_run):
    csv = pd.read_csv(variant_run / "efficiency.csv", keep_default_na=False).set_index("variant")
    page = write_efficiency_markdown(variant_run / "efficiency.csv", variant_run / "efficiency.md")
    beside = _beside_the_paper(page)
    for paper_row, ours in (("nystrom-64", "nystrom"), ("nystrom-32", "nystrom-32"), ("softmax", "naive-softmax")):
        row = beside[(paper_row, "512")]
        assert float(row["our ms"]) == pytest.approx(csv.loc[ours, "ms"], rel=1e-3)
        assert float(row["our time / naive-softmax"]) == pytest.approx(
            csv.loc[ours, "ms"] / csv.loc["naive-softmax", "ms"], rel=1e-3)
    assert beside[("nystrom-32", "512")]["paper ms"] == "0.6"  # Table 1: Nystromformer-32 at 512, 0.6 ms
    assert beside[("nystrom-32", "1024")]["our ms"] == "-"  # not measured at 1024


def test_a_variant_without_its_mechanism_is_one_line_from_the_cli(tmp_path, capsys):
    untyped = json.dumps({"nystrom-16": {"num_landmarks": 16}})
    assert main(["bench", "attention", "--lengths", "64", "--options", untyped,
                 "--out", str(tmp_path / "e.csv"), "--plot", str(tmp_path / "e.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbert bench: error: options 'nystrom-16': ") and '"type"' in err and "\n" not in err
    assert not (tmp_path / "e.csv").exists()  # refused before anything ran


# ---- (d) the target end to end on the demo's setting ----

@pytest.mark.slow
def test_snakemake_efficiency_on_the_demo_config(tmp_path):
    """`snakemake efficiency` with config/demo.yaml (seconds on 2 cores): the csv has both Nystrom rows at every
    length, the plot is a PNG, the page fills Table 1's two Nystromformer rows, and the HTML report carries the
    three files when the target is named (they are flagged in the rule)."""
    project = conftest.copy_project(tmp_path, ["demo"])
    demo = ("--configfile", "config/demo.yaml", "--cores", "2")
    conftest.snakemake(project, *demo, "efficiency")
    results = project / "demo/out/results"
    csv = pd.read_csv(results / "efficiency.csv", keep_default_na=False)
    settings = PipelineConfig.model_validate(_config("demo.yaml")).efficiency
    assert sorted(set(csv["variant"])) == sorted({"softmax", *settings.mechanisms})
    assert (csv.groupby("variant")["n"].apply(sorted) == [sorted(settings.lengths)] * csv["variant"].nunique()).all()
    assert (csv["error"] == "").all() and set(csv["device"]) == {"cpu (2 threads)"}
    with Image.open(results / "efficiency.png") as image:
        image.verify()
    beside = _beside_the_paper((results / "efficiency.md").read_text())
    at_512 = csv[csv["n"] == 512].set_index("variant")
    for paper_row, ours in (("nystrom-64", "nystrom"), ("nystrom-32", "nystrom-32")):
        assert float(beside[(paper_row, "512")]["our ms"]) == pytest.approx(at_512.loc[ours, "ms"], rel=1e-3)

    done = conftest.snakemake(project, *demo, "--report", "demo/out/results/report.html", "efficiency")
    report = (results / "report.html").read_text()
    for ext in ("csv", "md", "png"):
        assert f"Adding efficiency.{ext}" in done.stdout + done.stderr
    assert base64.b64encode((results / "efficiency.png").read_bytes()).decode() in report
