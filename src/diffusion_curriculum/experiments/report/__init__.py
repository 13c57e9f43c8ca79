"""The comparison report of a finished grid: report.md, a self-contained report.html and figures/*.png.

The package holds the results model (:mod:`.results`), the figures (:mod:`.figures`), a generic document model
rendered to Markdown and HTML (:mod:`.document`), the report's tables (:mod:`.tables`) and sections
(:mod:`.sections`); :func:`write_report` puts them together.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...atomic import write_atomic
from .document import to_html, to_markdown
from .results import Grid, Run, load_results
from .sections import build_document
from .summary import plot_summary, summary_table
from .verdict import verdict, verdict_record

__all__ = ["Grid", "Run", "load_results", "plot_summary", "summary_table", "write_report"]

VERDICT = "verdict.json"


def write_report(out: Path) -> tuple[Path, Path]:
    """Write OUT/report.md and a self-contained OUT/report.html (and OUT/figures/*.png) from a grid's results,
    and OUT/verdict.json, the verdict's numbers for :func:`summary_table`."""
    out = Path(out)
    grid = load_results(out)
    v = verdict(grid)
    if v is not None:
        write_atomic(out / VERDICT, json.dumps(verdict_record(grid, v), indent=1))
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    blocks = build_document(grid, figures)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks, out))
    page.write_text(to_html(blocks, f"Comparison report: {grid.info.get('name', out.name)}"))
    return md, page
