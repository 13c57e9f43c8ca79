"""One table across finished grids (docs/results.md's summary), read from each grid's verdict.json, so that
every number in it is one a command produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..stats import MIN_SEEDS_FOR_P

__all__ = ["plot_summary", "summary_table"]


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


def _verdicts(folders: list[Path]) -> list[dict[str, Any]]:
    return [_read(Path(folder)) for folder in folders]


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
    for v in _verdicts(folders):
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


def plot_summary(folders: list[Path], path: Path) -> list[tuple[str, float, float, float]]:
    """A forest plot of :func:`summary_table`'s speed-ups: one row per (grid, weighting, method) with its 95%
    interval on a log axis, a line at 1x (as fast as uniform), green where the whole interval is above 1x,
    red where it is below, grey where it spans 1x. Written to ``path`` (PNG); returns the rows drawn, top to
    bottom, as (label, speed-up, low, high). Comparisons without a speed-up or interval are left out."""
    import matplotlib
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from .figures import STYLE, _figure

    rows: list[tuple[str, float, float, float]] = []
    for v in _verdicts(folders):
        multi = len({c["weighting"] for c in v["comparisons"]}) > 1
        for c in v["comparisons"]:
            if c["speedup"] is None or c["speedup_ci"] is None:
                continue
            label = f"{v['name']} ({c['pairs']})  " + (f"{c['weighting']}  " if multi else "") + c["method"]
            rows.append((label, float(c["speedup"]), float(c["speedup_ci"][0]), float(c["speedup_ci"][1])))
    if not rows:
        raise UserError("no speed-up with an interval in these verdicts: nothing to plot")
    with matplotlib.rc_context(STYLE):
        fig = _figure(7.5, 1.2 + 0.24 * len(rows))
        ax = fig.add_subplot()
        for i, (_, x, lo, hi) in enumerate(rows):
            colour = "tab:green" if lo > 1 else "tab:red" if hi < 1 else "0.45"
            ax.plot([lo, hi], [i, i], color=colour, lw=2, solid_capstyle="butt")
            ax.plot([x], [i], "o", color=colour, ms=4)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ticks = [t for t in (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0) if min(r[2] for r in rows) / 1.2 <= t]
        ticks = [t for t in ticks if t <= max(r[3] for r in rows) * 1.2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel("speed-up against uniform sampling, 95% CI (> 1x: fewer steps)")
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.savefig(path)
    return rows
