"""The comparison report's tables of numbers, built from the results model as document tables."""

from __future__ import annotations

import numpy as np

from ..stats import final_value, mean_std
from .document import Table
from .results import BASELINE, Cell, Grid, Run, against_baseline, fmt_num, fmt_p, fmt_pm, metric_label
from .verdict import Verdict, fmt_ci, pairs_cell, rule_cell, speed_cell

__all__ = [
    "curriculum_table",
    "method_name",
    "other_table",
    "primary_table",
    "ratio_table",
    "stage_cause_table",
    "verdict_table",
]


def method_name(cell: Cell) -> str:
    """A method's name for tables and text."""
    return f"`{cell.method}` (baseline)" if cell.method == BASELINE else f"`{cell.method}`"


def primary_table(grid: Grid, cells: list[Cell]) -> Table:
    """Final and best primary metric per cell."""
    multi = len(grid.weightings) > 1
    header = (
        ["method"]
        + (["weighting"] if multi else [])
        + ["seeds", f"final {grid.metric_name(grid.metric)} (mean ± std)", "best (mean ± std of each seed's best)"]
    )
    rows = []
    for c in cells:
        have = sum(f is not None for f in c.finals.values())
        rows.append(
            [method_name(c)]
            + ([f"`{c.weighting}`"] if multi else [])
            + [
                str(len(c.runs)),
                fmt_pm(*c.final) + (f" ({have}/{len(c.finals)} seeds)" if have < len(c.finals) else ""),
                fmt_pm(*c.best),
            ]
        )
    return Table(header, rows)


def verdict_table(grid: Grid, v: Verdict) -> Table:
    """The answer per method on every endpoint (primary first): the speed-up to the same seed's baseline
    level at the target step (an estimate with its 95% interval, or a bound), pairs where the method got there
    first, and the test's p (Holm-adjusted for a primary endpoint, unadjusted for a secondary one); then the
    sample metric at the end of the budget as a ratio to the baseline's."""
    multi = len(grid.weightings) > 1
    pct = f"{v.target_fraction:.0%}"
    header = ["method"] + (["weighting"] if multi else [])
    for e in v.endpoints:
        role = "primary" if e in v.primary else "secondary"
        header += [
            f"{v.names[e]} ({role}): speed-up to the baseline's {pct}-budget level",
            "first / pairs",
            "Holm p" if e in v.primary else "p (unadjusted)",
        ]
    header.append(f"{grid.metric_name(grid.metric)} at step {v.budget}: method / baseline (95% CI)")
    if v.plan.decide is not None:
        header.append(f"decision on {v.names[v.plan.decide]} (the preset's rule)")
    rows = []
    for c in v.comparisons:
        row = [c.label] + ([f"`{c.weighting}`"] if multi else [])
        for e in v.endpoints:
            r = c.endpoints[e]
            p = c.holm[e] if e in c.holm else r["p"]
            test = {"t": " (t)", "sign": " (sign test)"}.get(r["test"] or "", "") if p is not None else ""
            outside = " (unadjusted: outside the family)" if e in v.primary and e not in c.holm else ""
            row += [speed_cell(r), pairs_cell(r), fmt_p(p, r["p_reason"]) + test + outside]
        f = c.final
        if f is None or f["effect"] is None:
            row.append("—")
        elif f["scale"] == "log":
            spread = fmt_ci(f["ci"], "{:.3g}") if f["ci"] else f"range {fmt_ci(f['range'], '{:.3g}')}"
            row.append(f"{f['effect']:.3g}x ({spread})")
        else:
            row.append(f"Δ {fmt_num(f['effect'])}")
        if v.plan.decide is not None:
            row.append(rule_cell(c.rule))
        rows.append(row)
    return Table(header, rows)


def stage_cause_table(grid: Grid) -> Table | None:
    """How many stage changes each method's runs made, by what triggered them (summed over seeds)."""
    causes = sorted({cause for r in grid.runs for _, _, cause in r.stage_changes})
    if not causes:
        return None
    multi = len(grid.weightings) > 1
    rows = []
    for w, m, runs in grid.groups():
        counts = [sum(got == k for r in runs.values() for _, _, got in r.stage_changes) for k in causes]
        if sum(counts):
            rows.append([f"`{m}`"] + ([f"`{w}`"] if multi else []) + [str(len(runs))] + [str(n) for n in counts])
    header = ["method"] + (["weighting"] if multi else []) + ["runs"] + [f"stage changes by {k}" for k in causes]
    return Table(header, rows) if rows else None


def other_table(grid: Grid, cells: list[Cell], metrics: list[str]) -> Table:
    """Final value (mean ± std over seeds) of every other scalar metric, one row per metric."""
    header = ["metric"] + [grid.label(c.weighting, c.method) for c in cells]
    rows = []
    for metric in metrics:
        row = [metric_label(metric, name=grid.metric_name(metric))]
        for c in cells:
            finals = [final_value(r.curve(metric)) for r in c.runs.values()]
            have = sum(f is not None for f in finals)
            row.append(fmt_pm(*mean_std(finals)) + (f" ({have}/{len(finals)} seeds)" if have < len(finals) else ""))
        rows.append(row)
    return Table(header, rows)


def curriculum_table(grid: Grid) -> Table | None:
    """When each curriculum run had every cluster unlocked."""
    rows = []
    for w, m, runs in grid.groups():
        staged = [r for r in runs.values() if r.stages and r.stages[0][2] > 1]
        if not staged:
            continue
        steps = [r.all_unlocked for r in staged]
        done = [s for s in steps if s is not None]
        rows.append(
            [f"`{m}`"]
            + ([f"`{w}`"] if len(grid.weightings) > 1 else [])
            + [
                str(staged[0].stages[0][2]),
                _planned_phase(staged[0], grid.budget),
                fmt_pm(*mean_std(done), "{:.0f}") if done else "never",
                # Adaptive pacing counts steps, not shares of the budget: on a short budget this is most of it.
                f"{np.mean(done) / grid.budget:.0%}" if done and grid.budget else "–",
                f"{len(done)}/{len(staged)}",
                ", ".join(f"s{r.seed}: {s if s is not None else 'never'}" for r, s in zip(staged, steps, strict=True)),
            ]
        )
    if not rows:
        return None
    header = (
        ["method"]
        + (["weighting"] if len(grid.weightings) > 1 else [])
        + [
            "stages",
            "every timestep in play by (as configured)",
            "all clusters unlocked at step (mean ± std)",
            "share of the budget",
            "runs that got there",
            "per seed",
        ]
    )
    return Table(header, rows)


def _planned_phase(run: Run, budget: int | None) -> str:
    """The step (or span of steps, for adaptive pacing) by which the run's configured pacing has every timestep
    in play (:func:`~...pacing.pacing_span`), with its share of the budget; a dash when the run's config cannot
    be read back."""
    from ...assembly import build_pacing
    from ...config import load_config
    from ...errors import UserError
    from ...pacing import pacing_span, stages_before_last

    try:
        config = load_config(run.dir / "config.yaml")
        pacing = build_pacing(config)
    except UserError:
        return "–"
    if pacing is None:
        return "–"
    earliest, latest = pacing_span(
        pacing, stages_before_last(config.curriculum.n_clusters, config.curriculum.cumulative)
    )

    def at(step: int | None) -> str:
        if step is None:
            return "no bound"
        return f"{step:,}" + (f" ({step / budget:.0%})" if budget else "")

    return f"step {at(earliest)}" if earliest == latest else f"steps {at(earliest)} to {at(latest)}"


def ratio_table(grid: Grid, key: str) -> Table | None:
    """The last common step's ratio to the baseline in numbers: low-noise half, high-noise half, all clusters."""
    rows = []
    for w, m, steps, a, b in against_baseline(grid, key):
        mine, theirs = a[-1], b[-1]
        half = len(mine) // 2
        pair = np.stack([mine, theirs])
        if half == 0 or not (np.isfinite(pair).all() and (pair > 0).all()):
            continue  # ratios and their logs need positive values
        log_ratio = np.log(mine / theirs)
        cells = [np.exp(log_ratio[:half].mean()), np.exp(log_ratio[half:].mean()), mine.sum() / theirs.sum()]
        rows.append([grid.label(w, m), str(int(steps[-1])), *(fmt_num(float(c)) for c in cells)])
    if not rows:
        return None
    return Table(
        [
            "method",
            "step",
            "low-noise half (geometric mean of ratios)",
            "high-noise half (geometric mean of ratios)",
            "all clusters (ratio of sums)",
        ],
        rows,
    )
