"""The result tables as HTML pages, results/{pretrain,glue,lra}.html, for Snakemake's report to show.

`snakemake --report` shows images, HTML and PDF inside the report and offers anything else (CSV, Markdown)
as a download; these pages carry the Markdown tables into it as they read. Each page is converted from the
table's .md file, whose form the report writes itself (effbert.report.tables): a `# title`, paragraphs,
pandas' pipe tables and numbered note lines; nothing else of Markdown is needed, so no Markdown library.
"""

from __future__ import annotations

import html
from pathlib import Path

from effbert.files import write_text
from effbert.layout import REPORT_TABLES, report_table

STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;margin:1em 0}"
         "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}p{max-width:60em}")


def _row(line: str) -> list[str]:
    return [html.escape(cell.strip()) for cell in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    """A pipe table: header, alignment row, rows."""
    header, _, *rows = lines
    head = "".join(f"<th>{cell}</th>" for cell in _row(header))
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in _row(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_page(markdown: str) -> str:
    """One HTML page from a report table's Markdown: blocks are separated by blank lines."""
    parts = []
    for block in markdown.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if lines[0].startswith("|"):
            parts.append(_table(lines))
        elif lines[0].startswith("# "):
            parts.append(f"<h1>{html.escape(lines[0][2:])}</h1>")
        else:  # a paragraph; note lines ([1] ..., [2] ...) each on its own line
            parts.append("<p>" + "<br>".join(html.escape(line) for line in lines) + "</p>")
    title = html.escape(markdown.strip().splitlines()[0].lstrip("# "))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style>"
            f"</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_pages(out_dir: Path) -> None:
    """results/<table>.html from each results/<table>.md."""
    for name in REPORT_TABLES:
        markdown = report_table(out_dir, name, "md").read_text(encoding="utf-8")
        write_text(report_table(out_dir, name, "html"), markdown_page(markdown))
