"""One table across finished grids (docs/results.md's summary), read from each grid's verdict.json, so that
every number in it is one a command produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..stats import MIN_SEEDS_FOR_P

__all__ = ["summary_table"]


def _ci(ci: list[float] | None, fmt: str) -> str:
    return "—" if ci is None else f"{fmt.format(ci[0])}–{fmt.format(ci[1])}"


def _p(holm: dict[str, Any], part: str, n: int) -> str:
    if n < MIN_SEEDS_FOR_P:
        return f"none ({n} seeds)"

    def one(p: float | None) -> str:
        return "—" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")

    return f"{one(holm.get(part + '_w'))}; {one(holm.get(part + '_t'))}"


def _read(folder: Path) -> dict[str, Any]:
    path = folder / "verdict.json"
    if not path.is_file():
        raise UserError(f"{folder}: no verdict.json (a grid folder whose report was written by this version?)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a verdict written by compare ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("comparisons"), list):
        raise UserError(f"{path}: not a verdict written by compare")
    return record


def summary_table(folders: list[Path]) -> str:
    """A Markdown table, one row per (grid, weighting, method) against that weighting's uniform baseline:
    the speed-up to the baseline's target quality with its 95% interval, seeds faster, the sample metric's
    difference at the end of the budget with its interval, and Holm-corrected p-values (Wilcoxon; t)."""
    header = [
        "grid",
        "weighting",
        "method",
        "speed-up (95% CI)",
        "faster / pairs",
        "Holm p, speed-up (Wilcoxon; t)",
        "metric at the budget: method vs uniform (Δ 95% CI)",
        "Holm p, metric (Wilcoxon; t)",
    ]
    rows = [header, ["---"] * len(header)]
    for folder in folders:
        v = _read(Path(folder))
        for c in v["comparisons"]:
            speed = "—" if c["speedup"] is None else f"{c['speedup']:.2f}x ({_ci(c['speedup_ci'], '{:.2f}')})"
            f = c.get("final") or {}
            if f.get("diff") is None:
                final = "—"
            else:
                final = (
                    f"{v['metric_name']} {f['method_mean']:.3g} vs {f['baseline_mean']:.3g} "
                    f"({f['diff']:+.3g}, {_ci(f['ci'], '{:.3g}')})"
                )
            rows.append(
                [
                    f"`{v['name']}` ({c['pairs']})",
                    f"`{c['weighting']}`",
                    f"`{c['method']}`",
                    speed,
                    f"{c['faster']}/{c['pairs']}" + (f", {c['censored']} censored" if c["censored"] else ""),
                    _p(c["holm"], "speed", c["pairs"]),
                    final,
                    _p(c["holm"], "final", f.get("n", 0)),
                ]
            )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"
