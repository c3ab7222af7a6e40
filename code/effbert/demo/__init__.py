"""The embedded tiny demo inputs: generated data the first README command runs on.

`effbert demo-data --out demo` rewrites every tracked input under demo/ byte for byte; tests check
that the committed files equal a fresh generation.
"""

from __future__ import annotations

from pathlib import Path


def write_demo(out: str | Path) -> None:
    """Write the demo's MediaWiki dump and GLUE-layout tasks under `out` (the repository's demo/)."""
    from effbert.demo.glue import write_demo_glue
    from effbert.demo.wiki import DEMO_WIKI_NAME, write_demo_wiki

    out = Path(out)
    write_demo_wiki(out / "data-preprocessing" / "wiki" / DEMO_WIKI_NAME)
    write_demo_glue(out / "glue")
