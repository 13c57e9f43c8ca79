"""The comparison report's tables of numbers, built from the results model as document tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats import final_value, mean_std
from .document import Table
from .results import BASELINE, Cell, Grid, against_baseline, fmt_num, fmt_p, fmt_pm, metric_label

__all__ = ["curriculum_table", "method_name", "other_table", "paired_table", "primary_table", "ratio_table"]


def method_name(cell: Cell) -> str:
    """A method's name for tables and text."""
    return f"`{cell.method}` (baseline)" if cell.method == BASELINE else f"`{cell.method}`"


def _reached_text(speed: dict[str, Any]) -> str:
    """Per-seed steps and speed-ups, 'not reached' where a seed never got to the target."""
    parts = []
    for seed, steps, ratio in zip(speed["seeds"], speed["steps"], speed["speedup"], strict=True):
        parts.append(f"s{seed}: not reached" if steps is None else f"s{seed}: {steps} ({ratio:.2f}×)")
    return ", ".join(parts)


def primary_table(grid: Grid, cells: list[Cell]) -> Table:
    """Final and best primary metric, steps to the baseline's final value and speed-up per cell."""
    multi = len(grid.weightings) > 1
    header = (
        ["method"]
        + (["weighting"] if multi else [])
        + [
            "seeds",
            f"final {grid.metric} (mean ± std)",
            "best (mean ± std of each seed's best)",
            "steps to reach baseline's final (mean ± std)",
            "speed-up (mean ± std)",
            "reached",
            "per seed: steps (speed-up)",
        ]
    )
    rows = []
    for c in cells:
        row = [method_name(c)] + ([f"`{c.weighting}`"] if multi else [])
        have = sum(f is not None for f in c.finals.values())
        row += [
            str(len(c.runs)),
            fmt_pm(*c.final) + (f" ({have}/{len(c.finals)} seeds)" if have < len(c.finals) else ""),
        ]
        row.append(fmt_pm(*c.best))
        s = c.speed
        if s is None:
            row += ["no baseline", "—", "—", "—"]
        elif c.method == BASELINE:
            bs = s["baseline_steps"]
            row += [f"{bs} (seed-mean curve)" if bs is not None else "—", "1 (reference)", "—", "—"]
        else:
            row += [
                fmt_pm(s["steps_mean"], s["steps_std"], "{:.0f}") if s["reached"] else "not reached",
                (fmt_pm(s["mean"], s["std"], "{:.2f}") + "×") if s["reached"] else "not reached",
                f"{s['reached']}/{s['n']}",
                _reached_text(s),
            ]
        rows.append(row)
    return Table(header, rows)


def other_table(grid: Grid, cells: list[Cell], metrics: list[str]) -> Table:
    """Final value (mean ± std over seeds) of every other scalar metric, one row per metric."""
    header = ["metric"] + [grid.label(c.weighting, c.method) for c in cells]
    rows = []
    for metric in metrics:
        row = [metric_label(metric)]
        for c in cells:
            finals = [final_value(r.curve(metric)) for r in c.runs.values()]
            have = sum(f is not None for f in finals)
            row.append(fmt_pm(*mean_std(finals)) + (f" ({have}/{len(finals)} seeds)" if have < len(finals) else ""))
        rows.append(row)
    return Table(header, rows)


def paired_table(grid: Grid, cells: list[Cell]) -> Table | None:
    """Seed-paired comparison of each method's final primary metric with its baseline's."""
    multi = len(grid.weightings) > 1
    rows = []
    for c in cells:
        if c.paired is None:
            continue
        p = c.paired
        rows.append(
            [method_name(c)]
            + ([f"`{c.weighting}`"] if multi else [])
            + [
                f"{p['wins']}/{p['n']}",
                str(p["ties"]),
                fmt_num(p["mean_diff"]),
                fmt_p(p["sign_p"]),
                fmt_p(p["t_p"]),
            ]
        )
    if not rows:
        return None
    header = (
        ["method"]
        + (["weighting"] if multi else [])
        + [
            "wins / seeds",
            "ties",
            f"mean difference in final {grid.metric} (method − baseline)",
            "sign-test p (two-sided, exact)",
            "paired t-test p",
        ]
    )
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
                fmt_pm(*mean_std(done), "{:.0f}") if done else "never",
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
            "all clusters unlocked at step (mean ± std)",
            "runs that got there",
            "per seed",
        ]
    )
    return Table(header, rows)


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
