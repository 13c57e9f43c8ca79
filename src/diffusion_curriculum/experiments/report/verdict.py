"""The answer a grid gives, per method against the uniform baseline: the speed-up to the baseline's
quality at a fraction of its budget, read from the dense held-out curve, with its 95% interval;
the sample metric at equal steps with its interval; Holm-corrected paired tests; and the smallest
speed-up the grid could have detected (../../shared STATISTICS conventions, docs/experiments.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..stats import MIN_SEEDS_FOR_P, holm, metric_at_step, min_detectable_speedup, speedup_to_target
from .results import BASELINE, Grid, fmt_num

__all__ = ["Comparison", "Verdict", "fmt_ci", "sentence", "verdict", "verdict_record"]

DENSE_NAMES = {
    "excess_error_mean": "exact excess denoising error",
    "heldout_loss": "held-out denoising loss",
}


@dataclass
class Comparison:
    """One method (in one weighting) against that weighting's baseline."""

    weighting: str
    method: str
    speed: dict[str, Any]  # stats.speedup_to_target on the dense curve
    final: dict[str, Any] | None  # stats.metric_at_step on the sample metric at the end of the budget
    mid: dict[str, Any] | None  # ... and at the target fraction of the budget
    holm: dict[str, float | None]  # Holm-adjusted p-values: speed_w, speed_t, final_w, final_t, mid_w, mid_t


@dataclass
class Verdict:
    """Every comparison of a grid, the dense curve they read, and the grid's detectable speed-up."""

    key: str
    name: str
    budget: int
    target_fraction: float
    comparisons: list[Comparison]
    min_detectable: dict[str, float | None]  # per weighting

    @property
    def family(self) -> int:
        """How many p-values each test's Holm correction covers."""
        return sum(1 for c in self.comparisons for part in ("speed", "final", "mid") if getattr(c, part))


def verdict(grid: Grid) -> Verdict | None:
    """The comparisons of ``grid``; None without a dense curve or a budget."""
    key, budget = grid.dense_key, grid.budget
    if key is None or not budget:
        return None
    comparisons, detectable = [], {}
    for w in grid.weightings:
        base = grid.group(w, BASELINE)
        if not base:
            continue
        base_dense = {s: r.probe_curve(key) for s, r in base.items()}
        base_sample = {s: r.curve(grid.metric) for s, r in base.items()}
        for m in grid.methods:
            runs = grid.group(w, m)
            if m == BASELINE or not runs:
                continue
            speed = speedup_to_target(
                base_dense, {s: r.probe_curve(key) for s, r in runs.items()}, True, budget, grid.target_fraction
            )
            sample = {s: r.curve(grid.metric) for s, r in runs.items()}
            final = metric_at_step(base_sample, sample, budget)
            mid = metric_at_step(base_sample, sample, grid.target_fraction * budget)
            comparisons.append(Comparison(w, m, speed, final, mid, {}))
        # the baseline seeds' own spread of log steps to the target, for the detectable speed-up
        own = speedup_to_target(base_dense, base_dense, True, budget, grid.target_fraction)
        logs = [math.log(p["baseline_steps"]) for p in own["pairs"] if p["baseline_steps"]]
        detectable[w] = min_detectable_speedup(logs, len(base))
    for test in ("wilcoxon_p", "t_p"):  # one Holm family per test: every p-value the grid reports
        slots = [(c, part) for c in comparisons for part in ("speed", "final", "mid")]
        raw = [getattr(c, part)[test] if getattr(c, part) else None for c, part in slots]
        for (c, part), p in zip(slots, holm(raw), strict=True):
            c.holm[f"{part}_{test[0]}"] = p
    return Verdict(key, DENSE_NAMES.get(key, key), budget, grid.target_fraction, comparisons, detectable)


def verdict_record(grid: Grid, v: Verdict) -> dict[str, Any]:
    """The verdict as JSON-ready data (the report's verdict.json): what a summary across grids reads, so
    that no number in it is copied by hand. Per comparison: the speed-up with its interval, seeds faster
    and censored, the sample metric's difference at the end of the budget with its interval, and the
    Holm-adjusted p-values (None below the minimum number of seeds)."""

    def at_step(m: dict[str, Any] | None) -> dict[str, Any] | None:
        if m is None:
            return None
        keys = ("step", "n", "baseline_mean", "method_mean", "diff", "ci")
        return {k: (list(m[k]) if k == "ci" and m[k] is not None else m[k]) for k in keys}

    return {
        "name": grid.info.get("name", grid.out.name),
        "dense_key": v.key,
        "dense_name": v.name,
        "metric": grid.metric,
        "metric_name": grid.metric_name(grid.metric),
        "lower_is_better": grid.lower,
        "budget": v.budget,
        "target_fraction": v.target_fraction,
        "holm_family": v.family,
        "min_detectable_speedup": v.min_detectable,
        "comparisons": [
            {
                "weighting": c.weighting,
                "method": c.method,
                "speedup": c.speed["speedup"],
                "speedup_ci": None if c.speed["ci"] is None else list(c.speed["ci"]),
                "faster": c.speed["faster"],
                "pairs": c.speed["n"],
                "censored": c.speed["censored"],
                "final": at_step(c.final),
                "mid": at_step(c.mid),
                "holm": dict(c.holm) if c.speed["n"] >= MIN_SEEDS_FOR_P else {},
            }
            for c in v.comparisons
        ],
    }


def fmt_ci(ci: tuple[float, float] | None, fmt: str = "{:.2f}") -> str:
    """An interval as 'lo–hi'; a dash without one."""
    return "—" if ci is None else f"{fmt.format(ci[0])}–{fmt.format(ci[1])}"


def fmt_holm(p: float | None, n: int) -> str:
    """A Holm-adjusted p, or why there is none."""
    if n < MIN_SEEDS_FOR_P:
        return f"too few seeds ({n} < {MIN_SEEDS_FOR_P})"
    return "—" if p is None else f"{p:.3g}"


def censoring(speed: dict[str, Any]) -> str:
    """Which side of which pairs never reached the target, from :func:`~..stats.speedup_to_target`'s
    pairs: a censored baseline seed flatters the baseline, a censored method seed the method, so a
    reader needs to know which it was."""
    method = [str(r["seed"]) for r in speed["pairs"] if r["steps"] is None]
    baseline = [str(r["baseline_seed"]) for r in speed["pairs"] if r["baseline_steps"] is None]
    parts = []
    if method:
        parts.append(f"the method never reached the target on seed{'s' * (len(method) > 1)} {', '.join(method)}")
    if baseline:
        parts.append(f"the baseline never reached the target on seed{'s' * (len(baseline) > 1)} {', '.join(baseline)}")
    return "; ".join(parts) + ", counted at the budget"


def sentence(v: Verdict, c: Comparison, metric: str) -> str:
    """One comparison in plain words, steps first (docs: "How we report a speed-up")."""
    s = c.speed
    if s["speedup"] is None or s["target"] is None:
        return f"`{c.method}`: no speed-up could be measured (the baseline's curve has no value at the target step)."
    ratio, ci = 1 / s["speedup"], s["ci"]
    steps_ci = None if ci is None else (1 / ci[1], 1 / ci[0])
    pct = f"{v.target_fraction:.0%}"
    enough = s["n"] >= MIN_SEEDS_FOR_P
    p_text = f"Holm p {fmt_holm(c.holm.get('speed_w'), s['n'])}" if enough else "no p-value: too few seeds"
    text = (
        f"`{c.method}` reaches the baseline's {pct}-budget {v.name} in {ratio:.2f}x the steps "
        f"(speed-up {s['speedup']:.2f}x, 95% CI {fmt_ci(steps_ci)}x the steps, faster on {s['faster']}/{s['n']} "
        f"seeds, {p_text})"
    )
    if s["censored"]:
        text += f"; {s['censored']} pair(s) censored at the budget ({censoring(s)})"
    if c.final and c.final["diff"] is not None:
        f = c.final
        text += (
            f". At the end of the budget its {metric} is {fmt_num(f['method_mean'])} against "
            f"{fmt_num(f['baseline_mean'])} (difference {fmt_num(f['diff'])}, 95% CI {fmt_ci(f['ci'], '{:.3g}')})"
        )
    return text + "."
