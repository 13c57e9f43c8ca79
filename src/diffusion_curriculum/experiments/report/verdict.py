"""The answer a grid gives, per method against the uniform baseline, on the endpoints its preset fixed before
any run (docs/experiments.md, "The verdict's endpoints"):

- ``e1``, sample quality: steps to the same seed's baseline value of the sample metric at the target step;
- ``e2``, balanced denoising: steps until every cluster's loss is, on average in log terms, at the same
  seed's baseline level at the target step;
- ``loss``: steps to the same seed's baseline value of the dense curve (L_simple on images, the exact excess
  error on synthetic data), which weights the least noisy timesteps most.

Each is a speed-up over paired seeds (an estimate with its 95% interval, or a bound where seeds were
censored), tested by the preset's primary test with Holm's correction over the primary endpoints x
comparisons only; the others are secondary and their p-values unadjusted. A preset's contrasts (``verdict.contrasts``)
put two methods head to head on the same targets, each pair of seeds reading the steps both took to that seed's
baseline level, and join Holm's family. The paired A/A arm's spread is the instrument's noise floor and sets the
speed-up the grid could detect.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from ..grid import VerdictPlan, verdict_plan
from ..stats import (
    MIN_SEEDS_FOR_P,
    balanced_pair_steps,
    detectable_speedup,
    finite,
    holm,
    pair_steps,
    ratio_at_step,
    speedup_from_pairs,
)
from .results import BASELINE, Grid, fmt_num, fmt_p

__all__ = [
    "ENDPOINT_NAMES",
    "Comparison",
    "Verdict",
    "decision",
    "describe",
    "fmt_ci",
    "pairs_cell",
    "per_cluster_key",
    "rule_cell",
    "rule_decision",
    "seeds_to_decide",
    "sentence",
    "speed_cell",
    "verdict",
    "verdict_record",
]

DENSE_NAMES = {
    "excess_error_mean": "exact excess denoising error",
    "heldout_loss": "held-out denoising loss",
}
ENDPOINT_NAMES = {"e1": "E1, sample quality", "e2": "E2, balanced denoising", "loss": "L_simple"}
ALPHA = 0.05
VERDICT_FORMAT = 2  # 1: one endpoint (the dense curve), two test families (Wilcoxon and t)


@dataclass
class Comparison:
    """One method (in one weighting) against that weighting's baseline, or against another method of the grid
    (a preset's ``verdict.contrasts``: steps to the same target, the baseline's level, side by side), on every
    endpoint."""

    weighting: str
    method: str
    endpoints: dict[str, dict[str, Any]]  # endpoint -> stats.speedup_from_pairs
    final: dict[str, Any] | None  # stats.ratio_at_step of the sample metric at the end of the budget (secondary)
    holm: dict[str, float | None]  # primary endpoint -> its Holm-adjusted p (only for a method in the family)
    paired_aa: bool = False  # the uniform baseline with another timestep stream: the instrument's check
    rule: dict[str, Any] | None = None  # the preset's decision rule on its endpoint (:func:`rule_decision`)
    against: str = BASELINE  # the method compared with: the baseline, or another method (a preset's contrast)

    @property
    def label(self) -> str:
        """The comparison as tables and sentences name it: the method, and what it is compared with when that is
        not the uniform baseline."""
        tail = " (paired A/A)" if self.paired_aa else ""
        return f"`{self.method}`" + (f" against `{self.against}`" if self.against != BASELINE else "") + tail


@dataclass
class Verdict:
    """Every comparison of a grid, the endpoints they read, the Holm family and the detectable speed-up."""

    budget: int
    target_fraction: float
    primary: tuple[str, ...]
    endpoints: tuple[str, ...]  # those measured, primary first
    names: dict[str, str]  # each endpoint in words
    comparisons: list[Comparison]
    family: int  # primary p-values Holm's correction covers (in its largest family, with per-endpoint families)
    detectable: dict[str, dict[str, float | None]]  # weighting -> endpoint -> smallest detectable speed-up
    detectable_from: dict[str, str]  # weighting -> whose paired spread it comes from
    plan: VerdictPlan = field(default_factory=VerdictPlan)

    @property
    def alpha(self) -> float:
        """Holm's most stringent level for this family: the first step of its procedure."""
        return ALPHA / max(1, self.family)

    @property
    def target_step(self) -> float:
        return self.target_fraction * self.budget


def _plan(grid: Grid) -> VerdictPlan:
    """The preset's verdict plan (its ``verdict`` key, as the runner saved the grid), the dense curve alone
    for a grid fixed before there was one."""
    return verdict_plan((grid.info.get("grid_config") or {}).get("verdict"))


def per_cluster_key(grid: Grid) -> str | None:
    """The probe's per-cluster curve E2 reads: the plan's ``per_cluster``, else the exact excess error where the
    data has it, else the held-out loss per cluster; None when no probe logs one."""
    keys = {k for r in grid.runs for rec in r.probes for k, v in rec.items() if isinstance(v, list)}
    for key in (_plan(grid).per_cluster, "excess_error", "heldout_cluster_loss"):
        if key in keys:
            return key
    return None


def _paired_aa(grid: Grid) -> set[str]:
    """Labels of the grid's paired A/A arms: the baseline order with only ``curriculum.sampler_stream`` set."""
    out = set()
    for entry in (grid.info.get("grid_config") or {}).get("methods") or []:
        if isinstance(entry, dict) and entry.get("name") == BASELINE:
            cur = entry.get("curriculum") or {}
            if set(cur) == {"sampler_stream"} and cur["sampler_stream"] != 0:
                out.add(entry.get("label", BASELINE))
    return out


def _pairs(grid: Grid, e: str, base: dict, runs: dict, step: float, per_cluster: str | None) -> list[dict[str, Any]]:
    """Each seed's steps to the endpoint's target, the baseline's and the method's (stats.pair_steps rows)."""
    if e == "e1":
        sample_b = {s: r.curve(grid.metric) for s, r in base.items()}
        sample_m = {s: r.curve(grid.metric) for s, r in runs.items()}
        positive = all(v is None or v > 0 for c in (*sample_b.values(), *sample_m.values()) for v in c[1])
        return pair_steps(sample_b, sample_m, step, grid.lower, log_values=positive)
    if e == "e2":
        vectors_b = {s: r.probe_vectors(per_cluster) for s, r in base.items()}
        return balanced_pair_steps(vectors_b, {s: r.probe_vectors(per_cluster) for s, r in runs.items()}, step)
    dense_b = {s: r.probe_curve(grid.dense_key) for s, r in base.items()}
    return pair_steps(dense_b, {s: r.probe_curve(grid.dense_key) for s, r in runs.items()}, step, True)


def _contrast(rows_b: list[dict[str, Any]], rows_a: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Method a against method b, seed by seed: the steps each took to the same target (the uniform baseline's
    level of that seed), b's in the baseline's place, so that the speed-up is b's steps over a's."""
    steps_b = {r["seed"]: r for r in rows_b}
    return [
        r | {"baseline_seed": r["seed"], "baseline_steps": steps_b[r["seed"]]["steps"]}
        for r in rows_a
        if r["seed"] in steps_b
    ]


def _final(grid: Grid, base: dict, runs: dict, budget: int) -> dict[str, Any] | None:
    """The sample metric at the end of the budget, method over baseline (secondary); None without pairs."""
    final = ratio_at_step(
        {s: r.curve(grid.metric) for s, r in base.items()}, {s: r.curve(grid.metric) for s, r in runs.items()}, budget
    )
    return final if final["n"] else None


def verdict(grid: Grid) -> Verdict | None:
    """The comparisons of ``grid`` on every endpoint its runs allow; None without a budget or any endpoint."""
    budget = grid.budget
    if not budget:
        return None
    step = grid.target_fraction * budget
    dense, per_cluster = grid.dense_key, per_cluster_key(grid)
    have_sample = any(v is not None for r in grid.runs for v in r.curve(grid.metric)[1])
    available = {"e1": have_sample, "e2": per_cluster is not None, "loss": dense is not None}
    primary = tuple(e for e in _plan(grid).primary if available[e])
    endpoints = primary + tuple(e for e in ("e1", "e2", "loss") if available[e] and e not in primary)
    if not endpoints:
        return None
    names = dict(ENDPOINT_NAMES)
    names["loss"] = f"L_simple ({DENSE_NAMES.get(dense or '', dense)})"
    aa_labels = _paired_aa(grid)
    plan = _plan(grid)
    comparisons: list[Comparison] = []
    for w in grid.weightings:
        base = grid.group(w, BASELINE)
        if not base:
            continue
        rows_of: dict[str, dict[str, list[dict[str, Any]]]] = {}  # method -> endpoint -> its pairs with the baseline
        for m in grid.methods:
            runs = grid.group(w, m)
            if m == BASELINE or not runs:
                continue
            rows_of[m] = {e: _pairs(grid, e, base, runs, step, per_cluster) for e in endpoints}
            results = {e: speedup_from_pairs(rows, budget) for e, rows in rows_of[m].items()}
            final = _final(grid, base, runs, budget)
            comparisons.append(Comparison(w, m, results, final, {}, m in aa_labels))
        for a, b in plan.contrasts:
            if a in rows_of and b in rows_of:
                results = {e: speedup_from_pairs(_contrast(rows_of[b][e], rows_of[a][e]), budget) for e in endpoints}
                final = _final(grid, grid.group(w, b), grid.group(w, a), budget)
                comparisons.append(Comparison(w, a, results, final, {}, against=b))
    # Holm's family: the primary test's p-value of every primary endpoint of every comparison the plan names
    # (all of them unless it lists a family) and of every contrast it names, as one family or one per endpoint.
    slots = [
        (c, e)
        for c in comparisons
        if plan.family is None or c.method in plan.family or c.against != BASELINE
        for e in primary
    ]
    families = [slots] if plan.holm == "joint" else [[s for s in slots if s[1] == e] for e in primary]
    for group in families:
        for (c, e), p in zip(group, holm([c.endpoints[e]["p"] for c, e in group]), strict=True):
            c.holm[e] = p
    family = max((sum(c.endpoints[e]["p"] is not None for c, e in group) for group in families), default=0)
    v = Verdict(budget, grid.target_fraction, primary, endpoints, names, comparisons, family, {}, {}, plan)
    if plan.decide in primary:
        for c in comparisons:
            if plan.decide in c.holm:
                c.rule = rule_decision(c.endpoints[plan.decide], c.holm[plan.decide], plan.margin, v.alpha)
    for w in grid.weightings:
        mine = [c for c in comparisons if c.weighting == w and c.against == BASELINE]
        aa = [c for c in mine if c.paired_aa]
        source = aa or mine
        v.detectable_from[w] = "the paired A/A arm" if aa else "the median paired spread of the comparisons"
        v.detectable[w] = {}
        for e in endpoints:
            spreads = [c.endpoints[e]["sd_log"] for c in source if c.endpoints[e]["sd_log"] is not None]
            pairs = max((c.endpoints[e]["n"] for c in source), default=0)
            sd = statistics.median(spreads) if spreads else None
            v.detectable[w][e] = detectable_speedup(sd, pairs, v.alpha)
    return v


def fmt_ci(ci: tuple[float, float] | list[float] | None, fmt: str = "{:.2f}") -> str:
    """An interval as 'lo–hi'; a dash without one."""
    return "—" if ci is None else f"{fmt.format(ci[0])}–{fmt.format(ci[1])}"


def speed_cell(r: dict[str, Any]) -> str:
    """A speed-up as a table shows it: an estimate with its interval (or its pairs' range below 5 pairs), a
    bound with its direction and no interval, or why there is none."""
    if r["kind"] == "estimate":
        spread = fmt_ci(r["ci"]) if r["ci"] is not None else f"range {fmt_ci(r['range'])}"
        return f"{r['speedup']:.2f}x ({spread})"
    if r["kind"] == "upper_bound":
        return f"< {r['speedup']:.2f}x (bound)"
    if r["kind"] == "lower_bound":
        return f"> {r['speedup']:.2f}x (bound)"
    if r["kind"] == "undetermined":
        return "undetermined (censored on both sides)"
    return "—"


def pairs_cell(r: dict[str, Any]) -> str:
    """Pairs where the method reached the target first, out of the pairs used; censored and dropped pairs."""
    text = f"{r['faster']}/{r['n']}"
    censored = r["censored_method"] + r["censored_baseline"]
    if censored:
        text += f", {censored} censored"
    if r["dropped"]:
        text += f", {r['dropped']} dropped (neither reached)"
    return text


def describe(r: dict[str, Any], what: str, other: str = "the baseline") -> str:
    """One endpoint's result in words, steps first; "reaches" only where the runs did. ``other``: what the method
    is compared with (the baseline, or another method in a contrast)."""
    dropped = f"; {r['dropped']} pair(s) where neither run reached it left out" if r["dropped"] else ""
    if r["kind"] == "estimate":
        spread = (
            f"95% CI {fmt_ci(r['ci'])}x"
            if r["ci"] is not None
            else f"no interval below {MIN_SEEDS_FOR_P} pairs or without spread; the {r['n']} pairs' speed-ups range "
            f"{fmt_ci(r['range'])}x"
        )
        return (
            f"reaches {what} in {1 / r['speedup']:.2f}x {other}'s steps (speed-up {r['speedup']:.2f}x, {spread}; "
            f"first on {r['faster']}/{r['n']} pairs){dropped}"
        )
    if r["kind"] in ("upper_bound", "lower_bound"):
        side = "the method" if r["kind"] == "upper_bound" else other
        count = r["censored_method"] if r["kind"] == "upper_bound" else r["censored_baseline"]
        sign = "<" if r["kind"] == "upper_bound" else ">"
        return (
            f"{side} never reached {what} within the budget on {count} of {r['n']} pairs: speed-up "
            f"{sign} {r['speedup']:.2f}x, a bound (those runs counted at the budget), with no interval; the method "
            f"was first on {r['faster']} and {other} on {r['slower']} pairs{dropped}"
        )
    if r["kind"] == "undetermined":
        return (
            f"runs of both sides never reached {what} ({r['censored_method']} method, {r['censored_baseline']} "
            f"seeds of {other}): no estimate and no bound; the method was first on {r['faster']} and {other} on "
            f"{r['slower']} pairs{dropped}"
        )
    return f"no pair reached {what}{dropped}"


def _test_text(v: Verdict, c: Comparison, e: str) -> str:
    r = c.endpoints[e]
    test = {"t": "paired t-test on log steps", "sign": "sign test on who reached it first"}.get(r["test"] or "", "")
    if e in c.holm:
        if r["p"] is None:
            return f"primary, {test}: {fmt_p(None, r['p_reason'])}"
        return f"primary, {test}, Holm p {fmt_p(c.holm.get(e))}"
    role = "secondary (outside the Holm family)" if e in v.primary else "secondary"
    return f"{role}, {test}, unadjusted p {fmt_p(r['p'], r['p_reason'])}"


def sentence(v: Verdict, c: Comparison, metric: str) -> str:
    """One comparison in plain words: each endpoint (primary first) with its test, then the sample metric at
    the end of the budget as a ratio."""
    pct = f"{v.target_fraction:.0%}"
    label = f"`{c.method}`" + (
        " (the paired A/A arm: the baseline with another timestep stream)" if c.paired_aa else ""
    )
    other = "the baseline"
    if c.against != BASELINE:
        other = f"`{c.against}`"
        label = f"{c.label} (head to head: the steps each took to the uniform baseline's level)"
    parts = []
    for e in v.endpoints:
        what = f"the baseline's {pct}-budget {v.names[e]} level"
        parts.append(f"on {v.names[e]}, {describe(c.endpoints[e], what, other)} ({_test_text(v, c, e)})")
    text = f"{label}: " + "; ".join(parts)
    if c.paired_aa:
        with_ci = [e for e in v.endpoints if c.endpoints[e]["ci"] is not None]
        misses = [e for e in with_ci if not c.endpoints[e]["ci"][0] <= 1 <= c.endpoints[e]["ci"][1]]
        if not with_ci:
            text += ". It has no interval to check against 1x (too few pairs, or no spread)"
        elif misses:
            text += (
                f". Its interval misses 1x on {', '.join(v.names[e] for e in misses)}: an A/A interval that misses "
                "1x says the instrument, not a method, is off"
            )
        else:
            text += f". Its intervals cover 1x on all {len(with_ci)} endpoints with one, as an A/A check must"
    f = c.final
    if f and f["effect"] is not None:
        if f["scale"] == "log":
            text += (
                f". At the end of the budget its {metric} is {fmt_num(f['method_mean'])} against "
                f"{fmt_num(f['baseline_mean'])} (geometric means; ratio {f['effect']:.3g}, "
                + (f"95% CI {fmt_ci(f['ci'], '{:.3g}')}" if f["ci"] else f"range {fmt_ci(f['range'], '{:.3g}')}")
                + f"; secondary, unadjusted p {fmt_p(f['p'], f['p_reason'])})"
            )
        else:
            text += (
                f". At the end of the budget its {metric} is {fmt_num(f['method_mean'])} against "
                f"{fmt_num(f['baseline_mean'])} (difference {fmt_num(f['effect'])}; secondary, unadjusted p "
                f"{fmt_p(f['p'], f['p_reason'])})"
            )
    return text + "."


def verdict_record(grid: Grid, v: Verdict) -> dict[str, Any]:
    """The verdict as JSON-ready data (the report's verdict.json): what a summary across grids reads, so that no
    number in it is copied by hand. Per comparison and endpoint: the kind (estimate or bound), the speed-up, its
    interval or range, pairs first, censored and dropped, the test and its p (Holm-adjusted for a primary
    endpoint); the sample metric at the budget as a ratio."""

    def endpoint(c: Comparison, e: str) -> dict[str, Any]:
        r = c.endpoints[e]
        keys = ("kind", "speedup", "n", "dropped", "censored_method", "censored_baseline", "faster", "slower", "test")
        out = {k: r[k] for k in keys}
        out.update(
            ci=None if r["ci"] is None else list(r["ci"]),
            range=None if r["range"] is None else list(r["range"]),
            primary=e in c.holm,
            p=c.holm[e] if e in c.holm else r["p"],
            p_reason=r["p_reason"],
        )
        return out

    def at_budget(f: dict[str, Any] | None) -> dict[str, Any] | None:
        if f is None:
            return None
        out = {k: f[k] for k in ("step", "n", "scale", "baseline_mean", "method_mean", "effect", "p", "p_reason")}
        out.update(
            ci=None if f["ci"] is None else list(f["ci"]), range=None if f["range"] is None else list(f["range"])
        )
        return out

    return {
        "format": VERDICT_FORMAT,
        "name": grid.info.get("name", grid.out.name),
        "metric": grid.metric,
        "metric_name": grid.metric_name(grid.metric),
        "lower_is_better": grid.lower,
        "budget": v.budget,
        "target_fraction": v.target_fraction,
        "primary": list(v.primary),
        "endpoints": {e: v.names[e] for e in v.endpoints},
        "holm_family": v.family,
        "holm_alpha": v.alpha,
        "detectable_speedup": v.detectable,
        "detectable_from": v.detectable_from,
        "holm": v.plan.holm,
        "family": None if v.plan.family is None else list(v.plan.family),
        "decide": v.plan.decide,
        "margin": v.plan.margin,
        "comparisons": [
            {
                "weighting": c.weighting,
                "method": c.method,
                "against": c.against,
                "paired_aa": c.paired_aa,
                "rule": c.rule,
                "endpoints": {e: endpoint(c, e) for e in v.endpoints},
                "final": at_budget(c.final),
            }
            for c in v.comparisons
        ],
    }


def decision(r: dict[str, Any], p: float | None) -> str:
    """A primary endpoint's outcome in words: "faster" or "slower" where the Holm-adjusted p is below 0.05 and
    the result lies on that side of 1x (an estimate's whole interval; a bound whose direction and whose sign
    test agree), else "not shown"."""
    if p is None or p >= ALPHA:
        return "not shown"
    if r["kind"] == "estimate" and r["ci"] is not None:
        return "faster" if r["ci"][0] > 1 else ("slower" if r["ci"][1] < 1 else "not shown")
    if r["kind"] == "upper_bound" and r["speedup"] < 1 and r["slower"] > r["faster"]:
        return "slower"
    if r["kind"] == "lower_bound" and r["speedup"] > 1 and r["faster"] > r["slower"]:
        return "faster"
    return "not shown"


def seeds_to_decide(mean_log: float, sd_log: float, margin: float, alpha: float, most: int = 10_000) -> int | None:
    """The fewest pairs at which, if the mean and spread of the paired log speed-ups seen so far held, the
    interval would decide: a (1 - ``alpha``) t interval that excludes 1x (an effect), or a 95% one that lies inside
    the equivalence margin (no effect within ``margin``). A plug-in estimate from the pairs at hand (the
    report's intervals are bootstrap-t; the t interval is the usual planning approximation); None beyond
    ``most`` pairs or without a spread."""
    from scipy.stats import t

    if not (finite(mean_log) and finite(sd_log)) or sd_log <= 0:
        return None
    effect, room = abs(mean_log), math.log1p(margin) - abs(mean_log)
    for n in range(2, most + 1):
        half = sd_log / math.sqrt(n)
        if t.ppf(1 - alpha / 2, n - 1) * half < effect or (room > 0 and t.ppf(0.975, n - 1) * half < room):
            return n
    return None


def rule_decision(r: dict[str, Any], p: float | None, margin: float, alpha: float) -> dict[str, Any]:
    """A preset's decision rule on one endpoint of one method in its Holm family, fixed before any run:

    - "helps": the speed-up's 95% interval lies above 1x and its Holm-adjusted p is below 0.05 (a bound: its
      direction, the sign test's Holm p and the pairs agree, as in :func:`decision`);
    - "hurts": the same below 1x;
    - "no effect within +-margin": the 95% interval lies inside 1/(1 + margin)..(1 + margin) (two one-sided
      tests, each at 2.5%);
    - otherwise "undecided", with the pairs that would decide it (:func:`seeds_to_decide`, at Holm's first-step
      level ``alpha`` for an effect) where an estimate gives a spread; a bound gives none.
    """
    outcome = decision(r, p)
    if outcome != "not shown":
        return {"decision": "helps" if outcome == "faster" else "hurts", "seeds_needed": None}
    ci = r["ci"]
    if r["kind"] == "estimate" and ci is not None and 1 / (1 + margin) <= ci[0] and ci[1] <= 1 + margin:
        return {"decision": f"no effect within ±{margin:.0%}", "seeds_needed": None}
    needed = None
    if r["kind"] == "estimate" and r.get("sd_log") is not None:
        needed = seeds_to_decide(math.log(r["speedup"]), r["sd_log"], margin, alpha)
    return {"decision": "undecided", "seeds_needed": needed}


def rule_cell(rule: dict[str, Any] | None) -> str:
    """The decision rule's outcome as a table shows it."""
    if rule is None:
        return "—"
    if rule["decision"] != "undecided":
        return rule["decision"]
    n = rule["seeds_needed"]
    return "undecided" + (f", about {n} seeds would decide it" if n is not None else "")
