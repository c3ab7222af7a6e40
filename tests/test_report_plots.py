"""The report's plots and HTML pages, drawn from result files written as the stages write them; the attention
cost they plot, against torch's own FLOP counter; Snakemake's HTML report carrying them."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import conftest
from effbert.attention import REGISTRY
from effbert.config import ModelConfig
from effbert.layout import REPORT_PLOTS, REPORT_TABLES, report_plot, report_table
from effbert.report.attention_cost import attention_flops
from effbert.report.plots import PUBLISHED_LABEL, write_plots
from effbert.report.tables import write_report
from test_report import model, table_rows

# the published LRA protocol (effbert.train.lra_protocol): 2 layers, width 64, 2 heads of 32; ListOps at 2000
# tokens, Text at 4000
LISTOPS_N, TEXT_N, LAYERS, HEADS, HEAD_DIM = 2000, 4000, 2, 2, 32
PRETRAIN = {"attention": "softmax", "steps": 300, "mlm_accuracy": 20.0, "sop_accuracy": 70.0, "mlm_loss": 4.0,
            "train_tokens": 1000, "seconds": 1.0}


def pretrain_log(folder, losses: dict[int, float], dev: dict[int, float]) -> None:
    """pretrain.jsonl as the training loop writes it: train records every log interval, dev records between."""
    records = [{"step": s, "split": "train", "lr": 1e-4, "loss": v + 0.7, "mlm_loss": v, "sop_loss": 0.7,
                "tokens": 100 * s, "tokens_per_s": 10.0, "seconds": 1.0} for s, v in losses.items()]
    records += [{"step": s, "split": "dev", "mlm_loss": v, "mlm_accuracy": 10.0, "sop_accuracy": 60.0}
                for s, v in dev.items()]
    records.sort(key=lambda r: r["step"])
    (folder / "pretrain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def results(tmp_path):
    """Two model folders: softmax at the published LRA protocol (comparable with the paper's 37.10 on ListOps),
    Nystrom with 16 landmarks (the paper's has 64: no published number), both pretrained."""
    sm = model(tmp_path, "sm", "softmax", pretrain=PRETRAIN,
               lra={"listops": {"accuracy": 37.5, "accuracy_std": 0.5, "seeds": [0, 1]}})
    ny = model(tmp_path, "ny16", {"type": "nystrom", "num_landmarks": 16}, pretrain=PRETRAIN | {"attention": "nystrom"},
               lra={"listops": {"accuracy": 30.0, "accuracy_std": 1.0, "seeds": [0, 1]}, "text": {"accuracy": 60.0}})
    pretrain_log(sm, {100: 6.0, 200: 5.0, 300: 4.5}, {200: 5.2, 300: 4.8})
    pretrain_log(ny, {100: 6.1, 200: 5.3, 300: 4.9}, {300: 5.0})
    out = tmp_path / "results"
    write_report([sm, ny], out)
    return [sm, ny], out


def labelled(ax, label: str) -> list[list[float]]:
    return next(line for line in ax.get_lines() if line.get_label() == label).get_xydata().tolist()


def test_plots_are_valid_pngs_of_the_result_files(results):
    folders, out = results
    for name in REPORT_PLOTS:
        with Image.open(report_plot(out, name)) as image:
            image.verify()  # the PNG's chunks and checksums
            assert image.format == "PNG" and image.size[0] >= 600
    figures = write_plots(folders, out)

    loss = figures["pretrain-loss"].axes[0]
    assert labelled(loss, "sm: train (mean over the log interval)") == [[100, 6.0], [200, 5.0], [300, 4.5]]
    assert labelled(loss, "sm: dev") == [[200, 5.2], [300, 4.8]]
    assert labelled(loss, "ny16: dev") == [[300, 5.0]]

    listops, text = figures["lra-accuracy"].axes
    assert [bar.get_height() for bar in listops.patches] == [37.5, 30.0]
    assert [t.get_text() for t in listops.get_xticklabels()] == ["sm", "ny16"]
    # the paper's softmax on ListOps (Nystromformer paper, Table 3), beside sm only: ny16's setup differs
    assert labelled(listops, PUBLISHED_LABEL) == [[0.0, 37.10]]
    assert [bar.get_height() for bar in text.patches] == [60.0] and labelled(text, PUBLISHED_LABEL) == []

    # forward attention FLOPs over 2 layers x 2 heads: softmax 4 n^2 d; Nystrom (m = 16, 6 pseudoinverse
    # iterations) 8 n m d + 4 m^2 d + 8 * 6 m^3
    listops_cost, _ = figures["lra-cost"].axes
    points = listops_cost.containers[0].lines[0].get_xydata().tolist()  # the error bars' data line
    softmax = LAYERS * HEADS * 4 * LISTOPS_N**2 * HEAD_DIM / 1e9
    nystrom = LAYERS * HEADS * (8 * LISTOPS_N * 16 * HEAD_DIM + 4 * 16**2 * HEAD_DIM + 48 * 16**3) / 1e9
    assert [x for x, _ in points] == pytest.approx([softmax, nystrom]) and [y for _, y in points] == [37.5, 30.0]


def test_plots_without_results_say_so(tmp_path):
    folder = model(tmp_path, "glue-only", "softmax", glue={"SST-2": {"metric": "accuracy", "score": 90.0}})
    write_report([folder], tmp_path / "results")
    figures = write_plots([folder], tmp_path / "results")
    for name in REPORT_PLOTS:
        assert report_plot(tmp_path / "results", name).is_file()
    assert figures["pretrain-loss"].axes[0].texts[0].get_text() == "no pretraining logs yet"
    assert figures["lra-accuracy"].axes[0].texts[0].get_text() == "no LRA results yet"


class _Cells(HTMLParser):
    """The text of every table cell of an HTML page, row by row, per table."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data):
        if self.in_cell:
            self.tables[-1][-1][-1] += data


def test_html_pages_carry_the_markdown_tables(results):
    _, out = results
    for name in REPORT_TABLES:
        markdown = report_table(out, name, "md").read_text()
        parser = _Cells()
        parser.feed(report_table(out, name, "html").read_text())
        for i, table in enumerate(parser.tables):
            header, *rows = table
            assert [dict(zip(header, row, strict=True)) for row in rows] == table_rows(markdown, i)
        assert len(parser.tables) == len(re.findall(r"^\|[:-]", markdown, re.M))  # one per alignment row
    page = report_table(out, "lra", "html").read_text()
    assert "ny16" in page and "num_landmarks 16 (paper 64)" in page  # a note's text


def counted_flops(options: dict, n: int, hidden: int, heads: int) -> tuple[float, float]:
    """(torch's count of the mechanism's forward, attention_cost's formula) for one layer."""
    cfg = ModelConfig(max_seq_len=n, hidden_size=hidden, num_heads=heads, num_layers=1, ffn_size=2 * hidden,
                      vocab_size=100, attention_dropout=0.0, attention=options)
    mechanism = REGISTRY[options["type"]](cfg, {}).eval()
    q, k, v = (torch.randn(1, heads, n, hidden // heads) for _ in range(3))
    # SDPA's math backend decomposes into matrix products that the counter sees (its fused CPU kernel it does not)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        mechanism(q, k, v, None)
    setup = {f"attention.{key}": value for key, value in cfg.attention.model_dump().items()}
    setup |= {"max_len": n, "hidden_size": hidden, "num_heads": heads, "num_layers": 1}
    return counter.get_total_flops(), attention_flops(setup)


@pytest.mark.parametrize("options", [
    {"type": "softmax"}, {"type": "nystrom", "num_landmarks": 32}, {"type": "nystrom", "num_landmarks": 16,
                                                                      "conv_kernel": 9, "pinv_iterations": 3},
    {"type": "linformer", "k": 64}, {"type": "reformer", "num_hashes": 2, "bucket_size": 32},
    {"type": "local", "window": 32}, {"type": "yoso", "expectation": True},
    {"type": "slab_linear"}, {"type": "slab_linear", "conv_kernel": None}, {"type": "norm_linear"},
    {"type": "block_softmax", "block_size": 48},  # 512 tokens: 10 whole blocks and one padded
])
def test_attention_cost_is_the_flop_count_of_the_mechanism(options):
    counted, formula = counted_flops(options, n=512, hidden=64, heads=2)
    assert formula == counted


@pytest.mark.parametrize("options", [{"type": "performer", "num_features": 64}, {"type": "linear"}])
def test_attention_cost_of_kernel_attention_within_its_normaliser(options):
    counted, formula = counted_flops(options, n=512, hidden=64, heads=2)
    assert formula == pytest.approx(counted, rel=0.01)  # the normaliser's sums: torch counts them as products


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_mechanism_has_a_cost_that_grows_with_length(kind):
    cfg = ModelConfig(max_seq_len=4096, hidden_size=64, num_heads=2, attention={"type": kind})
    setup = {f"attention.{key}": value for key, value in cfg.attention.model_dump().items()}
    costs = [attention_flops(setup | {"max_len": n, "hidden_size": 64, "num_heads": 2, "num_layers": 2})
             for n in (1024, 2048, 4096)]
    assert 0 < costs[0] < costs[1] < costs[2]


def test_snakemake_report_carries_the_tables_and_plots(tmp_path):
    """`snakemake --report` on the demo workflow with result files in place: one HTML file that embeds every
    table and plot byte for byte (the jobs before the report need not have run)."""
    project = conftest.copy_project(tmp_path, ["demo"])
    folders = []
    for name, kind in (("nystrom", "nystrom"), ("softmax", "softmax")):
        folder = project / "demo/models" / name
        (folder / "pretrain.json").write_text(json.dumps(PRETRAIN | {"attention": kind}))
        pretrain_log(folder, {100: 6.0, 200: 5.0}, {200: 5.5})
        folders.append(folder)
    results_dir = project / "demo/out/results"
    write_report(folders, results_dir)
    done = conftest.snakemake(project, "--configfile", "config/demo.yaml", "--cores", "1",
                              "--report", "demo/out/results/report.html")
    page = (results_dir / "report.html").read_text()
    embedded = set(re.findall(r"base64,([A-Za-z0-9+/=]+)", page))
    for name in REPORT_PLOTS:
        assert base64.b64encode(report_plot(results_dir, name).read_bytes()).decode() in embedded, name
    for name in REPORT_TABLES:
        for ext in ("csv", "md", "html"):
            assert f"Adding {name}.{ext}" in done.stdout + done.stderr
    assert "effbert: efficient-attention Transformers" in page  # the front page (workflow/report/workflow.rst)
