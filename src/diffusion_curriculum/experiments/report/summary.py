"""One table across finished grids (docs/results.md's summary), read from each grid's verdict.json, so that
every number in it is one a command produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UserError
from .results import fmt_p
from .verdict import VERDICT_FORMAT, fmt_ci, pairs_cell, speed_cell

__all__ = ["plot_summary", "summary_table"]


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
    if record.get("format") != VERDICT_FORMAT:
        raise UserError(
            f"{path}: a verdict of an earlier format (one endpoint); `diffusion-curriculum compare --config "
            f"{folder / 'grid.yaml'} --out {folder} --report-only` writes it again from the runs"
        )
    return record


def _verdicts(folders: list[Path]) -> list[dict[str, Any]]:
    return [_read(Path(folder)) for folder in folders]


ENDPOINT_COLUMNS = ("e1", "e2", "loss")


def _endpoint_cell(e: dict[str, Any] | None) -> str:
    """One endpoint of one comparison: the speed-up (estimate with interval, or bound), pairs the method
    reached the target first, and the p-value (Holm-adjusted for a primary endpoint, marked)."""
    if e is None:
        return "—"
    p = fmt_p(e["p"], e["p_reason"] if e["p"] is None else None)
    role = "Holm p" if e["primary"] else "p, secondary"
    return f"{speed_cell(e)}; {pairs_cell(e)}; {role} {p}"


def summary_table(folders: list[Path]) -> str:
    """A Markdown table, one row per (grid, weighting, method) against that weighting's uniform baseline: on
    E1 (sample quality), E2 (balanced denoising) and L_simple, the speed-up to the same seed's baseline level
    at the target step (an estimate with its 95% interval, or a bound), pairs where the method got there
    first, and the p-value (Holm-adjusted on the grid's primary endpoints); the sample metric at the budget as
    a ratio to the baseline's."""
    header = ["grid", "weighting", "method", "E1, sample quality", "E2, balanced denoising", "L_simple"]
    header.append("sample metric at the budget: method / uniform, or / the method it is against (95% CI)")
    rows = [header, ["---"] * len(header)]
    for v in _verdicts(folders):
        for c in v["comparisons"]:
            f = c.get("final") or {}
            if f.get("effect") is None:
                final = "—"
            else:
                both = f"{v['metric_name']} {f['method_mean']:.3g} vs {f['baseline_mean']:.3g}"
                if f["scale"] == "log":
                    spread = fmt_ci(f["ci"], "{:.3g}") if f["ci"] else f"range {fmt_ci(f['range'], '{:.3g}')}"
                    final = f"{both} ({f['effect']:.3g}x, {spread})"
                else:
                    final = f"{both} (Δ {f['effect']:+.3g})"
            n = max((e["n"] + e["dropped"] for e in c["endpoints"].values()), default=0)
            against = c.get("against", "none")
            label = f"`{c['method']}`" + (f" against `{against}`" if against != "none" else "")
            label += " (paired A/A)" if c.get("paired_aa") else ""
            cells = [_endpoint_cell(c["endpoints"].get(e)) for e in ENDPOINT_COLUMNS]
            rows.append([f"`{v['name']}` ({n})", f"`{c['weighting']}`", label, *cells, final])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def plot_summary(folders: list[Path], path: Path) -> list[tuple[str, float, float, float]]:
    """A forest plot of :func:`summary_table`'s speed-ups on each grid's primary endpoints: one row per (grid,
    weighting, method, endpoint), an estimate with its 95% interval on a log axis (green where the whole
    interval is above 1x, red where it is below, grey where it spans 1x), a bound as a triangle pointing the
    way the true speed-up lies, and a line at 1x. Written to ``path`` (PNG); returns the rows drawn, top to
    bottom, as (label, speed-up, low, high), low == high for a bound. Results with neither an interval nor a
    bound (fewer than 5 pairs, undetermined) are left out."""
    import matplotlib
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from .figures import STYLE, _figure

    rows: list[tuple[str, float, float, float]] = []  # (label, speed-up, low, high); low == high for a bound
    kinds: list[str] = []
    for v in _verdicts(folders):
        multi = len({c["weighting"] for c in v["comparisons"]}) > 1
        for c in v["comparisons"]:
            for key in v["primary"]:
                e = c["endpoints"].get(key)
                if e is None or e["speedup"] is None or (e["kind"] == "estimate" and e["ci"] is None):
                    continue
                name = {"e1": "E1", "e2": "E2", "loss": "L_simple"}[key]
                against = c.get("against", "none")
                method = c["method"] + (f" vs {against}" if against != "none" else "")
                label = f"{v['name']} ({e['n']})  " + (f"{c['weighting']}  " if multi else "") + f"{method}  {name}"
                low, high = e["ci"] if e["kind"] == "estimate" else (e["speedup"], e["speedup"])
                rows.append((label, float(e["speedup"]), float(low), float(high)))
                kinds.append(e["kind"])
    if not rows:
        raise UserError("no speed-up with an interval in these verdicts: nothing to plot")
    with matplotlib.rc_context(STYLE):
        fig = _figure(7.5, 1.2 + 0.24 * len(rows))
        ax = fig.add_subplot()
        for i, ((_, x, lo, hi), kind) in enumerate(zip(rows, kinds, strict=True)):
            if kind == "estimate":
                colour = "tab:green" if lo > 1 else "tab:red" if hi < 1 else "0.45"
                ax.plot([lo, hi], [i, i], color=colour, lw=2, solid_capstyle="butt")
                ax.plot([x], [i], "o", color=colour, ms=4)
            else:  # a bound: a triangle pointing the way the true speed-up lies, no interval
                colour = "tab:red" if kind == "upper_bound" and x < 1 else "tab:green" if x > 1 else "0.45"
                ax.plot([x], [i], "<" if kind == "upper_bound" else ">", color=colour, ms=7)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        grid = (0.25, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.8, 4.0)  # readable on a log axis
        ticks = [t for t in grid if min(r[2] for r in rows) / 1.2 <= t]
        ticks = [t for t in ticks if t <= max(r[3] for r in rows) * 1.2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel("speed-up against uniform sampling (or the method after vs), 95% CI; triangles: bounds")
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.savefig(path)
    return rows
