"""Seed statistics for comparing training methods: steps to a per-pair target inside the budget on each
endpoint (the dense curve, a sample metric, balanced denoising), speed-ups with bootstrap intervals, censored
pairs as bounds with a sign test, the paired t-test with Holm's correction, ratios at equal steps, and the
speed-up a grid could detect from its paired spread (docs/experiments.md, "How a speed-up is measured")."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MIN_SEEDS_FOR_P",
    "balanced_curve",
    "balanced_pair_steps",
    "bootstrap_mean_ci",
    "detectable_speedup",
    "final_value",
    "finite",
    "holm",
    "mean_curve",
    "mean_std",
    "pair_steps",
    "paired_t",
    "ratio_at_step",
    "running_best",
    "sign_test",
    "speedup_from_pairs",
    "steps_to_target",
    "value_at",
    "vector_at",
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


# ----- steps to a target inside the budget, speed-ups with confidence (docs/experiments.md) ---------


def running_best(values: Sequence[float | None], lower_is_better: bool) -> list[float | None]:
    """The best finite value seen up to each evaluation (None before the first finite one)."""
    best: float | None = None
    out: list[float | None] = []
    for value in values:
        if finite(value) and (best is None or (value < best if lower_is_better else value > best)):
            best = float(value)
        out.append(best)
    return out


def value_at(curve: Curve, step: float, *, log: bool = False, log_step: bool = False) -> float | None:
    """The curve's value at ``step``, linear between its two nearest evaluations; ``log_step``: linear in the
    log of the step (as :func:`steps_to_target` reads crossings, so that a curve reaches its own value at
    ``step`` there); ``log``: linear in log value against log step, for a positive metric that falls as a
    power law. At an evaluated step, that evaluation's value exactly. None outside the curve."""
    points = sorted((int(s), float(v)) for s, v in zip(*curve, strict=True) if finite(v) and (not log or v > 0))
    for s_, v_ in points:
        if s_ == step:
            return v_
    for (s0, v0), (s1, v1) in itertools.pairwise(points):
        if s0 < step < s1:
            f = math.log(step / s0) / math.log(s1 / s0) if (log or log_step) and s0 > 0 else (step - s0) / (s1 - s0)
            if log:
                return math.exp(math.log(v0) + (math.log(v1) - math.log(v0)) * f)
            return v0 + (v1 - v0) * f
    return None


def steps_to_target(curve: Curve, target: float, lower_is_better: bool, *, log_values: bool = False) -> float | None:
    """The first step at which the curve's running best reaches ``target``, interpolated between the
    two evaluations that bracket the crossing on a log scale in the step (step = s0 (s1 / s0) ** f, f the
    fraction of the value gap closed at the crossing), the gap measured linearly or, with ``log_values``,
    in log values (log-log interpolation, for a positive sample metric). A curve whose first evaluation
    already reaches the target gives that step. None if it never does."""
    steps, values = curve
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    steps = [int(steps[i]) for i in order]
    best = running_best([values[i] for i in order], lower_is_better)
    scale = (lambda v: math.log(v)) if log_values else (lambda v: v)
    for i, b in enumerate(best):
        if b is None or not (b <= target if lower_is_better else b >= target):
            continue
        if i == 0 or best[i - 1] is None or steps[i - 1] <= 0:
            return float(steps[i])
        prev = best[i - 1]
        if log_values and min(prev, b, target) <= 0:
            raise ValueError("log-log interpolation needs positive values")
        frac = (scale(prev) - scale(target)) / (scale(prev) - scale(b))
        return float(steps[i - 1] * (steps[i] / steps[i - 1]) ** frac)
    return None


def vector_at(vectors: Sequence[tuple[int, Sequence[float]]], step: float) -> list[float] | None:
    """A per-cluster curve's vector at ``step``, each cluster linear between the two nearest evaluations
    that have every cluster finite; None outside them."""
    points = sorted((int(s), [float(x) for x in v]) for s, v in vectors if v and all(finite(x) for x in v))
    for (s0, v0), (s1, v1) in itertools.pairwise(points):
        if s0 <= step <= s1 and len(v0) == len(v1):
            f = 0.0 if s1 == s0 else (step - s0) / (s1 - s0)
            return [a + (b - a) * f for a, b in zip(v0, v1, strict=True)]
    if points and points[-1][0] == step:
        return points[-1][1]
    return None


def balanced_curve(vectors: Sequence[tuple[int, Sequence[float]]], reference: Sequence[float]) -> Curve:
    """E2's curve: at each evaluation, S = the mean over clusters k of log(L_k / L*_k), ``reference`` the
    L*_k (the same seed's baseline at the target step). Every noise level counts equally, in relative
    terms: S <= 0 means the run is, on average over clusters, at least as far as the reference. An
    evaluation with a cluster missing, not finite or not positive has no value (None)."""
    ref = [float(x) for x in reference]
    steps, values = [], []
    for step, vector in vectors:
        steps.append(int(step))
        ok = len(vector) == len(ref) and all(finite(x) and x > 0 for x in vector) and all(r > 0 for r in ref)
        values.append(math.fsum(math.log(x / r) for x, r in zip(vector, ref, strict=True)) / len(ref) if ok else None)
    return steps, values


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are left out and stay None):
    the k-th smallest of m is multiplied by m - k + 1, and the adjusted values are made monotone."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


MIN_SEEDS_FOR_P = 5  # no p-value and no interval is reported for fewer paired seeds (the range instead)
_TIES = 1e-12  # values whose spread is below this, relative to their size, are equal up to rounding


def bootstrap_mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 4000, seed: int = 0
) -> tuple[float, float] | None:
    """A studentized (bootstrap-t) interval for the mean of ``values``: the seeds are resampled with
    replacement, each resample's mean is standardised by its own standard error, and the quantiles of
    that t* distribution scale the sample's standard error (Efron & Tibshirani, "An Introduction to
    the Bootstrap", 1993, ch. 12). Written here rather than taken from scipy.stats.bootstrap because
    its percentile and BCa intervals under-cover at the 5-12 seeds grids have (about 88% for a 95%
    interval at 8 normal seeds in a one-off check of 1,000 synthetic grids, against 95-96% for this one,
    whose coverage tests/test_stats.py checks).
    Resamples with no spread (up to rounding) are left out. None for fewer than 3 values (two seeds have no
    resamples worth the name) or no spread at all."""
    import numpy as np

    xs = np.asarray([float(v) for v in values], dtype=np.float64)
    n = xs.size
    tiny = _TIES * max(1.0, float(np.abs(xs).max())) if n else 0.0  # a spread of rounding error is none
    if n < 3 or np.ptp(xs) <= tiny:
        return None
    mean, se = xs.mean(), xs.std(ddof=1) / math.sqrt(n)
    draws = xs[np.random.default_rng(seed).integers(0, n, (resamples, n))]
    se_star = draws.std(axis=1, ddof=1) / math.sqrt(n)
    keep = se_star > tiny
    t_star = (draws.mean(axis=1)[keep] - mean) / se_star[keep]
    upper_q, lower_q = np.quantile(t_star, [(1 + confidence) / 2, (1 - confidence) / 2])
    return float(mean - upper_q * se), float(mean - lower_q * se)


def paired_t(differences: Sequence[float]) -> tuple[float | None, str | None]:
    """The two-sided paired t-test p-value on per-pair differences, or None and why not: fewer than
    :data:`MIN_SEEDS_FOR_P` pairs, or every difference equal (no spread: the test is undefined, and a
    p of 0 or 1 would be a number no data produced)."""
    from scipy.stats import ttest_1samp

    d = [float(x) for x in differences]
    if len(d) < MIN_SEEDS_FOR_P:
        return None, f"too few pairs ({len(d)} < {MIN_SEEDS_FOR_P})"
    if max(d) - min(d) <= _TIES * max(1.0, max(abs(x) for x in d)):
        return None, "every pair's difference is the same (up to rounding): the t-test is undefined"
    return float(ttest_1samp(d, 0.0).pvalue), None


def sign_test(wins: int, losses: int) -> tuple[float | None, str | None]:
    """The two-sided sign test (exact binomial at 1/2) on which run of each pair reached the target first:
    the censoring-aware test of a method with censored seeds, whose steps are known only to exceed the
    budget. Ties are left out. None and why below :data:`MIN_SEEDS_FOR_P` untied pairs."""
    from scipy.stats import binomtest

    n = wins + losses
    if n < MIN_SEEDS_FOR_P:
        return None, f"too few untied pairs for a sign test ({n} < {MIN_SEEDS_FOR_P})"
    return float(binomtest(wins, n, 0.5).pvalue), None


def pair_steps(
    baseline_curves: Mapping[Any, Curve],
    method_curves: Mapping[Any, Curve],
    target_step: float,
    lower_is_better: bool,
    *,
    pairs: Sequence[tuple[Any, Any]] | None = None,
    log_values: bool = False,
) -> list[dict[str, Any]]:
    """Steps to the target of each pair (``pairs``: (baseline seed, method seed); default the same seed on
    both sides), the target being the pair's own baseline curve at ``target_step`` (per-pair targets: a
    seed's probe set, split and noise define its own level). ``log_values``: log-log interpolation of both
    the target and the crossing (a positive sample metric). A side that never reaches it is None
    (censored). The rows :func:`speedup_from_pairs` takes."""
    if pairs is None:
        pairs = [(s, s) for s in sorted(method_curves) if s in baseline_curves]
    rows = []
    for b_seed, m_seed in pairs:
        target = value_at(baseline_curves[b_seed], target_step, log=log_values, log_step=True)
        if target is None:
            b = m = None
        else:
            b = steps_to_target(baseline_curves[b_seed], target, lower_is_better, log_values=log_values)
            m = steps_to_target(method_curves[m_seed], target, lower_is_better, log_values=log_values)
        rows.append({"baseline_seed": b_seed, "seed": m_seed, "target": target, "baseline_steps": b, "steps": m})
    return rows


def balanced_pair_steps(
    baseline_vectors: Mapping[Any, Sequence[tuple[int, Sequence[float]]]],
    method_vectors: Mapping[Any, Sequence[tuple[int, Sequence[float]]]],
    target_step: float,
    *,
    pairs: Sequence[tuple[Any, Any]] | None = None,
) -> list[dict[str, Any]]:
    """E2's steps to the target per pair: the reference L* is the pair's own baseline per-cluster curve at
    ``target_step`` (:func:`vector_at`), each side's :func:`balanced_curve` against it, and a side reaches the
    target at the first step its running best S is <= 0 (linear in S, which is already a log, and log in the
    step). The baseline reaches it at the target step or, by noise, a little earlier. Rows as
    :func:`pair_steps` gives them (``target``: the reference vector)."""
    if pairs is None:
        pairs = [(s, s) for s in sorted(method_vectors) if s in baseline_vectors]
    rows = []
    for b_seed, m_seed in pairs:
        reference = vector_at(baseline_vectors[b_seed], target_step)
        if reference is None or not all(x > 0 for x in reference):
            b = m = None
        else:
            b = steps_to_target(balanced_curve(baseline_vectors[b_seed], reference), 0.0, True)
            m = steps_to_target(balanced_curve(method_vectors[m_seed], reference), 0.0, True)
        rows.append({"baseline_seed": b_seed, "seed": m_seed, "target": reference, "baseline_steps": b, "steps": m})
    return rows


def speedup_from_pairs(rows: Sequence[Mapping[str, Any]], budget: int) -> dict[str, Any]:
    """The speed-up over paired seeds from each pair's steps to its target (:func:`pair_steps`; None for a
    side that never reached it), with censoring done right:

    - a pair where neither side reached the target says nothing about the ratio: dropped and counted;
    - with no censored pair left, the speed-up is an estimate: the geometric mean of baseline steps /
      method steps, a 95% bootstrap-t interval over pairs and the paired t-test on the log ratios (both
      from :data:`MIN_SEEDS_FOR_P` pairs; below that the range of the pairs' ratios instead);
    - with censored pairs left, a side's steps are known only to exceed the budget: counted at the budget,
      the mean is an upper bound when only method seeds were censored ("< x", the method is at most that
      fast), a lower bound when only baseline seeds were (">"), and undetermined when both kinds occur. A
      bound gets no interval and no t-test; the test is the sign test on which run reached the target
      first (:func:`sign_test`).
    """
    out_rows, logs, wins, losses, ties = [], [], 0, 0, 0
    dropped = censored_method = censored_baseline = 0
    for r in rows:
        b, m = r["baseline_steps"], r["steps"]
        row = dict(r)
        if b is None and m is None:
            dropped += 1
            row.update(censored="both", log_ratio=None)
            out_rows.append(row)
            continue
        censored_method += m is None
        censored_baseline += b is None
        row.update(
            censored="method" if m is None else ("baseline" if b is None else None),
            log_ratio=math.log((budget if b is None else b) / (budget if m is None else m)),
        )
        logs.append(row["log_ratio"])
        first_m = m is not None and (b is None or m < b)
        first_b = b is not None and (m is None or b < m)
        wins, losses, ties = wins + first_m, losses + first_b, ties + (not first_m and not first_b)
        out_rows.append(row)
    n = len(logs)
    if censored_method and censored_baseline:
        kind = "undetermined"
    elif censored_method:
        kind = "upper_bound"
    elif censored_baseline:
        kind = "lower_bound"
    else:
        kind = "estimate" if n else "none"
    mean_log = math.fsum(logs) / n if n else None
    estimate = kind == "estimate"
    ci = bootstrap_mean_ci(logs) if estimate and n >= MIN_SEEDS_FOR_P else None
    if estimate:
        p, why = paired_t(logs)
        test = "t"
    elif kind in ("upper_bound", "lower_bound", "undetermined"):
        p, why = sign_test(wins, losses)
        test = "sign"
    else:
        p, why, test = None, "no pair", None
    return {
        "pairs": out_rows,
        "n": n,
        "dropped": dropped,
        "censored_method": censored_method,
        "censored_baseline": censored_baseline,
        "kind": kind,
        "speedup": None if mean_log is None or kind == "undetermined" else math.exp(mean_log),
        "ci": None if ci is None else (math.exp(ci[0]), math.exp(ci[1])),
        "range": (math.exp(min(logs)), math.exp(max(logs))) if logs else None,
        "sd_log": mean_std(logs)[1] if estimate else None,
        "faster": wins,
        "slower": losses,
        "ties": ties,
        "test": test,
        "p": p,
        "p_reason": why,
    }


def ratio_at_step(
    baseline_curves: Mapping[Any, Curve],
    method_curves: Mapping[Any, Curve],
    step: float,
    *,
    pairs: Sequence[tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """A metric at one step, method against baseline per pair: as log ratios (``scale`` "log": the mean
    log(method / baseline), its interval and the ratio exp of it; FID-type metrics are skewed, and a
    difference of their means can have limits of 100 and more) when every value is positive, as
    differences (``scale`` "linear") otherwise (a log-likelihood can be negative). Values interpolated
    between evaluations (log-log on the log scale). A secondary comparison: its t-test p is unadjusted."""
    if pairs is None:
        pairs = [(s, s) for s in sorted(method_curves) if s in baseline_curves]
    positive = all(
        not finite(v) or v > 0 for curves in (baseline_curves, method_curves) for c in curves.values() for v in c[1]
    )
    values = []
    for b_seed, m_seed in pairs:
        b = value_at(baseline_curves[b_seed], step, log=positive)
        m = value_at(method_curves[m_seed], step, log=positive)
        if b is not None and m is not None:
            values.append((b, m))
    if positive:
        diffs = [math.log(m / b) for b, m in values]
        centre = {"baseline_mean": _geomean([b for b, _ in values]), "method_mean": _geomean([m for _, m in values])}
    else:
        diffs = [m - b for b, m in values]
        centre = {
            "baseline_mean": mean_std([b for b, _ in values])[0],
            "method_mean": mean_std([m for _, m in values])[0],
        }
    n = len(diffs)
    ci = bootstrap_mean_ci(diffs) if n >= MIN_SEEDS_FOR_P else None
    p, why = paired_t(diffs)
    mean = mean_std(diffs)[0]
    to_scale = math.exp if positive else (lambda x: x)
    return {
        "step": step,
        "n": n,
        "scale": "log" if positive else "linear",
        **centre,
        "effect": None if mean is None else to_scale(mean),  # the ratio (log scale) or the difference
        "ci": None if ci is None else (to_scale(ci[0]), to_scale(ci[1])),
        "range": (to_scale(min(diffs)), to_scale(max(diffs))) if diffs else None,
        "diffs": diffs,
        "p": p,
        "p_reason": why,
    }


def _geomean(values: Sequence[float]) -> float | None:
    return math.exp(math.fsum(math.log(v) for v in values) / len(values)) if values else None


def detectable_speedup(sd_log: float | None, n_pairs: int, alpha: float, power: float = 0.8) -> float | None:
    """The smallest speed-up a two-sided paired t-test on log steps detects with ``n_pairs`` pairs at level
    ``alpha`` (a grid's Holm alpha: 0.05 over the primary family's size, the first step of Holm's procedure)
    with probability ``power``, from ``sd_log``, the standard deviation of the paired log ratios (the paired
    A/A arm's, the instrument's own noise). Exact: the noncentrality at which the noncentral t distribution
    puts ``power`` beyond the critical values is solved for (the usual normal shortcut, (t_{1-alpha/2} +
    t_power) sd / sqrt(n), gives too little power at a few pairs and a small alpha). None below 2 pairs or
    without a spread."""
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    if sd_log is None or n_pairs < 2 or not finite(sd_log) or sd_log <= 0:
        return None
    df = n_pairs - 1
    critical = t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:  # the lower tail, below -critical, is negligible (and NaN in scipy) here
        return float(nct.sf(critical, df, nc)) - power

    high = critical + 4.0  # the power at nc = critical is about 1/2; widen until it passes ``power``
    while shortfall(high) < 0:
        high *= 2.0
    nc = brentq(shortfall, 0.0, high)
    return math.exp(nc * sd_log / math.sqrt(n_pairs))
