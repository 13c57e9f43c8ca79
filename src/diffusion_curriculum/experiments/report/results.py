"""The results model of a finished grid and its numeric summaries.

Reads grid.json and every finished run's eval.jsonl and metrics.jsonl into :class:`Run` and :class:`Grid`;
:func:`analyse` sums each (weighting, method) cell up against its baseline (:class:`Cell`); per-cluster seed
means (:func:`cluster_mean`, :func:`against_baseline`); and the number formats the report's text uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...metrics.directions import LOWER_IS_BETTER
from ...runs.records import read_json, read_jsonl
from ..stats import final_value, finite, mean_std

__all__ = [
    "BASELINE",
    "FEATURE_METRICS",
    "METRICS",
    "PER_CLUSTER",
    "Cell",
    "Grid",
    "Run",
    "against_baseline",
    "analyse",
    "cluster_mean",
    "fmt_duration",
    "fmt_num",
    "fmt_p",
    "fmt_pm",
    "load_results",
    "metric_label",
]

BASELINE = "none"
METHOD_ORDER = (
    "none",
    "easy_to_hard",
    "hard_to_easy",
    "random",
    "learning_progress",
    "speed",
    "loss_importance",
    "logit_normal",
    "matched_marginal",
)
METHOD_COLORS = {"none": "#333333", "easy_to_hard": "#d62728", "hard_to_easy": "#1f77b4", "random": "#2ca02c"}
EXTRA_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
WEIGHTING_STYLES = ("-", "--", ":", "-.")
METRICS = LOWER_IS_BETTER  # scalar metrics of eval.jsonl, in display order, with whether lower is better
FEATURE_METRICS = ("fid", "kid")  # named with their feature space wherever the report shows them
PER_CLUSTER = {
    "heldout_cluster_loss": "held-out denoising loss",
    "excess_error": "excess denoising error (vs the optimal denoiser)",
}


# ----- the grid's files ---------------------------------------------------------------------------
@dataclass
class Run:
    """One finished run: identity, its evaluation records (one per step) and its curriculum stage log."""

    name: str
    method: str
    weighting: str
    seed: int
    dir: Path
    wall_s: float | None
    evals: list[dict[str, Any]]
    stages: list[tuple[int, int, int]] = field(default_factory=list)  # (step, stage, n_stages) per log line
    images_per_s: float | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)  # probe.jsonl: the dense held-out curve
    stage_changes: list[tuple[int, int, str]] = field(default_factory=list)  # (step, new stage, cause)
    repaired: list[str] = field(default_factory=list)  # its files read without a torn last line, and why
    draws: list[tuple[int, list[int]]] = field(default_factory=list)  # (step, draws per cluster since the last line)

    def probe_curve(self, key: str) -> tuple[list[int], list[float | None]]:
        """Steps and values of one scalar of the held-out probe (the dense curve)."""
        steps = [int(r["step"]) for r in self.probes]
        return steps, [float(r[key]) if finite(r.get(key)) else None for r in self.probes]

    def probe_vectors(self, key: str) -> list[tuple[int, list[float]]]:
        """Steps and per-cluster values (cluster 0 = least noise) of one vector of the held-out probe (E2's
        input); a non-finite entry is NaN, so that the step is left out where it is read."""
        return [
            (int(r["step"]), [float(x) if finite(x) else math.nan for x in r[key]])
            for r in self.probes
            if isinstance(r.get(key), list) and r[key]
        ]

    def curve(self, key: str) -> tuple[list[int], list[float | None]]:
        """Steps and values of one scalar metric; lines with non-finite samples count as missing."""
        steps = [int(r["step"]) for r in self.evals]
        values = [None if "nonfinite_samples" in r or not finite(r.get(key)) else float(r[key]) for r in self.evals]
        return steps, values

    def vectors(self, key: str) -> list[tuple[int, np.ndarray]]:
        """Per-cluster values (cluster 0 = least noise) at each evaluated step that has them."""
        return [
            (int(r["step"]), np.array([float(x) if finite(x) else np.nan for x in r[key]]))
            for r in self.evals
            if isinstance(r.get(key), list) and r[key]
        ]

    @property
    def transitions(self) -> list[int]:
        """Steps at which the curriculum stage changed."""
        return [s for (s, st, _), (_, prev, _) in zip(self.stages[1:], self.stages[:-1], strict=True) if st != prev]

    @property
    def all_unlocked(self) -> int | None:
        """The step after which every cluster was in play, as the pacing recorded it (its ``stage_changes``:
        fixed pacing at fraction f of the budget gives round(f x max_steps), the configured phase), not the
        first logged step trained so, which is one later and later still when lines are logged every k steps;
        None for no curriculum or never."""
        if not self.stages or self.stages[0][2] <= 1:
            return None
        n_stages = self.stages[0][2]
        return next((step for step, stage, _ in self.stage_changes if stage >= n_stages), None)

    @property
    def final_step(self) -> int | None:
        """The last evaluated step."""
        return max((int(r["step"]) for r in self.evals), default=None)


@dataclass
class Grid:
    """A grid's metadata, its finished runs and the runs that are missing (with why)."""

    out: Path
    info: dict[str, Any]
    runs: list[Run]
    missing: list[tuple[dict[str, Any], str]]

    @property
    def budget(self) -> int | None:
        """Steps every run trained for."""
        return self.info.get("budget") or max((r.final_step or 0 for r in self.runs), default=None)

    @property
    def target_fraction(self) -> float:
        """Where in the budget the speed-up target is read off the baseline's curve."""
        return float(self.info.get("target_fraction", 0.5))

    @property
    def dense_key(self) -> str | None:
        """The dense curve speed-ups are read from: the exact excess error where the data has it (a
        Gaussian mixture), else the held-out denoising loss; None when no run has probe records."""
        keys = {k for r in self.runs for rec in r.probes for k in rec}
        if "excess_error_mean" in keys:
            return "excess_error_mean"
        return "heldout_loss" if "heldout_loss" in keys else None

    @property
    def metric(self) -> str:
        """The primary (sample-quality) metric."""
        return self.info.get("primary_metric", "fid")

    @property
    def lower(self) -> bool:
        """Whether lower is better for the primary metric."""
        return bool(self.info.get("lower_is_better", METRICS.get(self.metric, True)))

    @property
    def methods(self) -> list[str]:
        """Methods present, the baseline first, then the known orders, then any others by name."""
        found = {r.method for r in self.runs}
        return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))

    @property
    def weightings(self) -> list[str]:
        """Weightings present, ``none`` first, then in grid order."""
        seen = list(dict.fromkeys(r.weighting for r in self.runs))
        return sorted(seen, key=lambda w: w != "none")

    def group(self, weighting: str, method: str) -> dict[int, Run]:
        """The runs of one method and weighting, by seed."""
        return {r.seed: r for r in self.runs if r.weighting == weighting and r.method == method}

    def groups(self) -> list[tuple[str, str, dict[int, Run]]]:
        """Every (weighting, method) cell with at least one run, in display order."""
        return [(w, m, g) for w in self.weightings for m in self.methods if (g := self.group(w, m))]

    def label(self, weighting: str, method: str, with_weighting: bool = True) -> str:
        """A legend label; the weighting is named only when the grid has several (and it is asked for)."""
        name = f"{method} (uniform baseline)" if method == BASELINE else method
        return f"{name} / {weighting}" if with_weighting and len(self.weightings) > 1 else name

    def color(self, method: str) -> str:
        """The method's colour, the same in every figure."""
        others = [m for m in self.methods if m not in METHOD_COLORS]
        return METHOD_COLORS.get(method) or EXTRA_COLORS[others.index(method) % len(EXTRA_COLORS)]

    def style(self, weighting: str) -> str:
        """The weighting's line style in figures that overlay weightings."""
        return WEIGHTING_STYLES[self.weightings.index(weighting) % len(WEIGHTING_STYLES)]

    @property
    def extractors(self) -> list[str]:
        """The feature extractors the runs' evaluations name (eval.jsonl's ``extractor``), ``exact`` left out."""
        found = {e.get("extractor") for r in self.runs for e in r.evals}
        return sorted(x for x in found if isinstance(x, str) and x != "exact")

    def feature_space(self, short: bool = False) -> str | None:
        """The feature space of the runs' FID and KID in words (several, if runs differ); None when no evaluation
        names one (vector data, or records older than the ``extractor`` field)."""
        from ...evaluation import feature_space

        spaces = list(dict.fromkeys(feature_space(x, short=short) for x in self.extractors))
        return " and ".join(spaces) if spaces else None

    @property
    def noise_floors(self) -> list[float]:
        """The real-vs-real FIDs the runs' evaluations record (``fid_noise_floor``: a fitted evaluator's, else
        measured on the FID's reference): the FID two halves of the real data score against each other."""
        found = {e.get("fid_noise_floor") for r in self.runs for e in r.evals}
        return sorted(x for x in found if isinstance(x, int | float))

    def metric_name(self, metric: str) -> str:
        """A metric's name for text, tables and figures: FID and KID with their feature space, e.g.
        ``fid in digits-classifier features``, since a FID means nothing without it."""
        space = self.feature_space(short=True) if metric in FEATURE_METRICS else None
        return f"{metric} in {space}" if space else metric

    def metrics_present(self) -> list[str]:
        """Scalar metrics with at least one finite value, the primary first."""
        names = [self.metric] + [m for m in METRICS if m != self.metric]
        return [m for m in names if any(v is not None for r in self.runs for v in r.curve(m)[1])]


def _read_jsonl(path: Path, repaired: list[str]) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (:func:`~...runs.records.read_jsonl`): a torn last line is left out,
    said on stderr and noted in ``repaired`` (the report names the run); any other bad line stops the
    report naming the file and line."""
    log = read_jsonl(path)
    if log.repaired is not None:
        repaired.append(log.repaired)
    return log.records


def load_results(out: Path) -> Grid:
    """Read grid.json and every finished run's eval.jsonl and metrics.jsonl under ``out``."""
    out = Path(out)
    info = read_json(out / "grid.json", "grid record")
    runs, missing = [], []
    for entry in info.get("runs", []):
        run_dir = out / entry.get("dir", f"runs/{entry['name']}")
        if entry.get("status") != "done":
            missing.append((entry, f"status {entry.get('status', 'unknown')}"))
            continue
        repaired: list[str] = []
        evals = {int(r["step"]): r for r in _read_jsonl(run_dir / "eval.jsonl", repaired) if "step" in r}
        if not evals:
            missing.append((entry, "no evaluations in eval.jsonl"))
            continue
        log = [r for r in _read_jsonl(run_dir / "metrics.jsonl", repaired) if "step" in r]
        probes = {int(r["step"]): r for r in _read_jsonl(run_dir / "probe.jsonl", repaired) if "step" in r}
        changes = [tuple(c) for r in log for c in r.get("stage_changes") or []]
        speed = mean_std([r.get("images_per_s") for r in log])[0]
        runs.append(
            Run(
                name=entry["name"],
                method=entry.get("method", BASELINE),
                weighting=entry.get("weighting") or "none",
                seed=int(entry.get("seed", 0)),
                dir=run_dir,
                wall_s=entry.get("wall_s"),
                evals=[evals[s] for s in sorted(evals)],
                stages=[(int(r["step"]), int(r.get("stage", 1)), int(r.get("n_stages", 1))) for r in log],
                images_per_s=speed,
                probes=[probes[s] for s in sorted(probes)],
                stage_changes=[(int(c[0]), int(c[1]), str(c[2])) for c in changes],
                repaired=repaired,
                draws=[(int(r["step"]), r["cluster_draws"]) for r in log if isinstance(r.get("cluster_draws"), list)],
            )
        )
    return Grid(out, info, runs, missing)


# ----- numbers ------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (weighting, method) cell's numbers on the primary (sample) metric."""

    weighting: str
    method: str
    runs: dict[int, Run]
    finals: dict[int, float | None]
    final: tuple[float | None, float | None]
    best: tuple[float | None, float | None]


def analyse(grid: Grid) -> list[Cell]:
    """Final and best primary metric for every cell (the comparisons with the baseline are :mod:`.verdict`'s)."""
    cells = []
    pick = min if grid.lower else max
    for w, m, runs in grid.groups():
        curves = {s: r.curve(grid.metric) for s, r in runs.items()}
        finals = {s: final_value(c) for s, c in curves.items()}
        bests = [pick(vs) if (vs := [v for v in c[1] if v is not None]) else None for c in curves.values()]
        cells.append(Cell(w, m, runs, finals, mean_std(list(finals.values())), mean_std(bests)))
    return cells


def fmt_num(x: float | None) -> str:
    """A metric value with four significant digits; a dash when missing."""
    return "—" if x is None else f"{x:.4g}"


def fmt_pm(mean: float | None, std: float | None, fmt: str | None = None) -> str:
    """Mean ± std (std to two significant digits, the mean to the same decimals unless ``fmt`` is given);
    the mean alone when there is no spread (one seed)."""
    if mean is None:
        return "—"
    if std is None:
        return (fmt or "{:.4g}").format(mean)
    if fmt is not None:
        return f"{fmt.format(mean)} ± {fmt.format(std)}"
    if std <= 1e-9 * abs(mean):  # identical seeds up to rounding
        return f"{mean:.4g} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def fmt_p(p: float | None, reason: str | None = None) -> str:
    """A p-value to 3 significant digits; where there is none, why (``reason``), else a dash."""
    if p is None:
        return f"no p-value: {reason}" if reason else "—"
    return f"{p:.3g}"


def fmt_duration(seconds: float | None) -> str:
    """Seconds as h:mm:ss."""
    if seconds is None:
        return "—"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def metric_label(metric: str, lower: bool | None = None, name: str | None = None) -> str:
    """The metric's name (``name``, e.g. :meth:`Grid.metric_name`'s, else the metric's key) with which way is better."""
    lower = METRICS.get(metric, True) if lower is None else lower
    return f"{name or metric} ({'lower' if lower else 'higher'} is better)"


# ----- per-cluster values -------------------------------------------------------------------------
def cluster_mean(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps and the seed-mean per-cluster values (steps x clusters, NaN where no seed has a value)."""
    by_step: dict[int, list[np.ndarray]] = {}
    for r in runs:
        for step, vec in r.vectors(key):
            by_step.setdefault(step, []).append(vec)
    if not by_step:
        return None
    n = max(len(v) for vs in by_step.values() for v in vs)
    steps = np.array(sorted(by_step))
    stack = np.full((len(steps), max(len(v) for v in by_step.values()), n), np.nan)
    for i, s in enumerate(steps):
        for j, v in enumerate(by_step[s]):
            stack[i, j, : len(v)] = v
    count = np.isfinite(stack).sum(1)
    mean = np.where(count > 0, np.nansum(stack, 1) / np.maximum(count, 1), np.nan)
    return steps, mean


def against_baseline(grid: Grid, key: str) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per (weighting, method) but the baseline: common steps, its and the baseline's seed means (steps x clusters)."""
    panels = []
    for w, m, runs in grid.groups():
        base = grid.group(w, BASELINE)
        if m == BASELINE or not base:
            continue
        mine, theirs = cluster_mean(list(runs.values()), key), cluster_mean(list(base.values()), key)
        if mine is None or theirs is None or mine[1].shape[1] != theirs[1].shape[1]:
            continue
        steps = np.intersect1d(mine[0], theirs[0])
        if len(steps):
            a = mine[1][np.isin(mine[0], steps)]
            b = theirs[1][np.isin(theirs[0], steps)]
            panels.append((w, m, steps, a, b))
    return panels
