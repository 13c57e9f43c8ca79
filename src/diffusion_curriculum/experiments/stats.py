"""Seed statistics for comparing training methods: steps to reach a target, speed-ups and paired tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "final_value",
    "finite",
    "mean_curve",
    "mean_std",
    "paired_comparison",
    "sign_test",
    "speedups",
    "steps_to_reach",
]

Curve = tuple[Sequence[int], Sequence[float | None]]


def finite(value: Any) -> bool:
    """True for a real, finite number: missing metrics arrive as None, NaN or infinity."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the finite values; None where undefined."""
    xs = [float(v) for v in values if finite(v)]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)  # fsum: exact, so the same numbers give the same mean in any order
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def steps_to_reach(
    steps: Sequence[int], values: Sequence[float | None], target: float, lower_is_better: bool
) -> int | None:
    """First evaluated step whose value reaches the target (<= if lower is better, else >=); None if never."""
    for step, value in sorted(zip(steps, values, strict=True), key=lambda sv: sv[0]):
        if finite(value) and (value <= target if lower_is_better else value >= target):
            return int(step)
    return None


def final_value(curve: Curve) -> float | None:
    """The value at the curve's last evaluated step; None when that evaluation has no finite value."""
    steps, values = curve
    if not steps:
        return None
    last = max(range(len(steps)), key=lambda i: steps[i])
    return float(values[last]) if finite(values[last]) else None


def mean_curve(curves: Mapping[Any, Curve]) -> tuple[list[int], list[float]]:
    """Mean over seeds at every evaluated step, over the seeds with a finite value at that step."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves.values():
        for step, value in zip(steps, values, strict=True):
            if finite(value):
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    return steps, [mean_std(by_step[s])[0] for s in steps]


def speedups(
    baseline_curves: Mapping[Any, Curve], method_curves: Mapping[Any, Curve], lower_is_better: bool
) -> dict[str, Any]:
    """How much sooner each method seed reaches the baseline's final value than the baseline does.

    The target is the mean over baseline seeds of each seed's final value; the baseline's steps are
    when its seed-mean curve first reaches it (usually its last step). Per method seed the speed-up
    is baseline steps / the seed's own steps to the target, None where it never gets there; mean and
    std are over the seeds that did.
    """
    target = mean_std([final_value(c) for c in baseline_curves.values()])[0]
    base_steps = steps_to_reach(*mean_curve(baseline_curves), target, lower_is_better) if target is not None else None
    seeds = sorted(method_curves)
    steps: list[int | None] = []
    ratios: list[float | None] = []
    for seed in seeds:
        reached = steps_to_reach(*method_curves[seed], target, lower_is_better) if base_steps is not None else None
        steps.append(reached)
        ratios.append(None if reached is None else (base_steps / reached if reached > 0 else math.inf))
    speed_mean, speed_std = mean_std([r for r in ratios if r is not None])
    steps_mean, steps_std = mean_std([s for s in steps if s is not None])
    return {
        "target": target,
        "baseline_steps": base_steps,
        "seeds": seeds,
        "steps": steps,
        "speedup": ratios,
        "mean": speed_mean,
        "std": speed_std,
        "steps_mean": steps_mean,
        "steps_std": steps_std,
        "reached": sum(s is not None for s in steps),
        "n": len(seeds),
    }


def sign_test(wins: int, losses: int) -> float | None:
    """Two-sided exact binomial sign test (p = 1/2) on wins against losses, ties already dropped."""
    n = wins + losses
    if n == 0:
        return None
    tail = math.fsum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(
    baseline_finals: Mapping[Any, float | None], method_finals: Mapping[Any, float | None], lower_is_better: bool
) -> dict[str, Any]:
    """Seed-paired comparison of final values: wins, ties, sign-test and paired t-test p, mean difference.

    Only seeds with a finite value on both sides count; a win is the method doing better than the
    baseline on the same seed; the difference is method minus baseline.
    """
    from scipy.stats import ttest_rel

    seeds = sorted(s for s in method_finals if finite(method_finals[s]) and finite(baseline_finals.get(s)))
    diffs = [float(method_finals[s]) - float(baseline_finals[s]) for s in seeds]
    better = [d < 0 if lower_is_better else d > 0 for d in diffs]
    ties = sum(d == 0 for d in diffs)
    wins = sum(better)
    losses = len(diffs) - wins - ties
    mean_diff, std_diff = mean_std(diffs)
    t_p = None
    if len(seeds) >= 2 and std_diff:
        t_p = float(ttest_rel([method_finals[s] for s in seeds], [baseline_finals[s] for s in seeds]).pvalue)
    return {
        "seeds": seeds,
        "n": len(seeds),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "sign_p": sign_test(wins, losses),
        "t_p": t_p,
        "mean_diff": mean_diff,
    }
