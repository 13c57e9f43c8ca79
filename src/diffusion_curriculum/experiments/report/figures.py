"""Every matplotlib figure of the comparison report, drawn from the results model into PNG files.

Figures are drawn on the Agg canvas outside pyplot's global state; :data:`STYLE` is the rc style the report
draws them under.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..stats import balanced_curve, finite, mean_curve, value_at, vector_at
from .results import BASELINE, PER_CLUSTER, Grid, against_baseline, cluster_mean, metric_label

__all__ = [
    "STYLE",
    "plot_balanced",
    "plot_clusters",
    "plot_dense",
    "plot_others",
    "plot_primary",
    "plot_ratio",
    "plot_shares",
    "ratio_colour_limit",
]

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "figure.dpi": 110}


def _figure(width: float, height: float) -> Any:
    """A matplotlib figure on the Agg canvas, outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _spread(curves: dict[int, tuple[list[int], list[float | None]]]) -> tuple[list[int], list, list, list]:
    """Seed-mean curve with its per-step min and max over seeds."""
    steps, mean = mean_curve(curves)
    by_step: dict[int, list[float]] = {}
    for s, vs in curves.values():
        for step, v in zip(s, vs, strict=True):
            if v is not None:
                by_step.setdefault(step, []).append(v)
    return steps, mean, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]


def _log_if_wide(ax: Any, values: list[float]) -> None:
    """Use a log y axis when positive values span more than a factor of 20."""
    vals = [v for v in values if finite(v)]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 20:
        ax.set_yscale("log")


def _plot_metric(ax: Any, grid: Grid, metric: str, weightings: list[str]) -> list[float]:
    """Seed-mean lines with min-max bands for every method of the given weightings; returns the values."""
    plotted: list[float] = []
    overlaid = len(weightings) > 1
    for w in weightings:
        for m in grid.methods:
            runs = grid.group(w, m)
            steps, mean, lo, hi = _spread({s: r.curve(metric) for s, r in runs.items()})
            if not steps:
                continue
            color = grid.color(m)
            lw = 2.2 if m in (BASELINE, "easy_to_hard") else 1.6
            ls, label = grid.style(w) if overlaid else "-", grid.label(w, m, overlaid)
            ax.plot(steps, mean, color=color, ls=ls, lw=lw, marker="o", ms=3, label=label)
            if len(runs) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
            plotted += lo + hi
    ax.grid(alpha=0.3)
    return plotted


def plot_dense(grid: Grid, key: str, label: str, path: Path) -> bool:
    """The dense held-out curve speed-ups are read from, one panel per weighting: seed mean with a
    min-max band per method, the target (the baseline's seed mean at the target step) as a dotted
    line and the target step as a dashed one."""
    ws = grid.weightings
    budget = grid.budget or 0
    fig = _figure(max(6.5, 5.0 * len(ws)), 4.4)
    axes = fig.subplots(1, len(ws), squeeze=False)[0]
    any_data = False
    for ax, w in zip(axes, ws, strict=True):
        values: list[float] = []
        for m in grid.methods:
            runs = grid.group(w, m)
            steps, mean, lo, hi = _spread({s: r.probe_curve(key) for s, r in runs.items()})
            if not steps:
                continue
            color = grid.color(m)
            ax.plot(steps, mean, color=color, lw=2.0 if m == BASELINE else 1.5, label=grid.label(w, m, False))
            if len(runs) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
            values += lo + hi
        base = {s: r.probe_curve(key) for s, r in grid.group(w, BASELINE).items()}
        target_step = grid.target_fraction * budget
        target = value_at(mean_curve(base), target_step) if base else None
        if target is not None:
            ax.axhline(target, color="0.35", ls=":", lw=1.2, label="target: baseline at the target step")
            ax.axvline(target_step, color="0.35", ls="--", lw=0.9)
        any_data |= bool(values)
        _log_if_wide(ax, values)
        ax.set_xlabel("training step")
        ax.set_ylabel(label if ax is axes[0] else "")
        if len(ws) > 1:
            ax.set_title(f"weighting: {w}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    if any_data:
        fig.savefig(path)
    return any_data


def plot_balanced(grid: Grid, key: str, target_step: float, path: Path) -> bool:
    """E2's curve, one panel per weighting: for every run, S(s) = mean over clusters of log(L_k(s) / L*_k)
    against its own seed's baseline at ``target_step`` (:func:`~..stats.balanced_curve`); seed mean with a
    min-max band per method, and the target S = 0."""
    ws = grid.weightings
    fig = _figure(max(6.5, 5.0 * len(ws)), 4.4)
    axes = fig.subplots(1, len(ws), squeeze=False)[0]
    any_data = False
    for ax, w in zip(axes, ws, strict=True):
        references = {s: vector_at(r.probe_vectors(key), target_step) for s, r in grid.group(w, BASELINE).items()}
        for m in grid.methods:
            curves = {
                s: balanced_curve(r.probe_vectors(key), references[s])
                for s, r in grid.group(w, m).items()
                if references.get(s) is not None
            }
            steps, mean, lo, hi = _spread(curves)
            if not steps:
                continue
            any_data = True
            color = grid.color(m)
            ax.plot(steps, mean, color=color, lw=2.0 if m == BASELINE else 1.5, label=grid.label(w, m, False))
            if len(curves) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
        ax.axhline(0.0, color="0.35", ls=":", lw=1.2, label="target: S = 0")
        ax.axvline(target_step, color="0.35", ls="--", lw=0.9)
        ax.set_xlabel("training step")
        ax.set_ylabel("S = mean log(L_k / L*_k)" if ax is axes[0] else "")
        if len(ws) > 1:
            ax.set_title(f"weighting: {w}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    if any_data:
        fig.savefig(path)
    return any_data


def plot_primary(grid: Grid, path: Path) -> bool:
    """Primary metric against step, one panel per weighting, with a strip of stage changes beneath."""
    rug = [m for m in grid.methods if any(r.transitions for r in grid.runs if r.method == m)]
    ws = grid.weightings
    if not ws:
        return False
    fig = _figure(max(6.5, 5.0 * len(ws)), 4.6 + 0.18 * len(rug))
    rows = 2 if rug else 1
    axes = fig.subplots(rows, len(ws), squeeze=False, sharex="col", height_ratios=[5, 0.5 + 0.3 * len(rug)][:rows])
    any_data = False
    for i, w in enumerate(ws):
        ax = axes[0][i]
        values = _plot_metric(ax, grid, grid.metric, [w])
        any_data |= bool(values)
        _log_if_wide(ax, values)
        ax.set_ylabel(metric_label(grid.metric, grid.lower, grid.metric_name(grid.metric)) if i == 0 else "")
        if len(ws) > 1:
            ax.set_title(f"weighting: {w}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        if rug:
            strip = axes[1][i]
            for k, m in enumerate(rug):
                xs = [s for r in grid.group(w, m).values() for s in r.transitions]
                strip.vlines(xs, k - 0.4, k + 0.4, color=grid.color(m), lw=0.9)
            strip.set_yticks(range(len(rug)), rug if i == 0 else [])
            strip.set_ylim(len(rug) - 0.4, -0.6)  # first method on top, as in the legend
            strip.set_xlabel("training step")
            strip.set_title("curriculum stage changes (all seeds)", fontsize=9, loc="left")
        else:
            ax.set_xlabel("training step")
    if any_data:
        fig.savefig(path)
    return any_data


def plot_others(grid: Grid, metrics: list[str], path: Path) -> None:
    """Small multiples: every other scalar metric against step, weightings as line styles."""
    cols = min(3, len(metrics))
    nrows = -(-len(metrics) // cols)
    fig = _figure(4.2 * cols, 3.1 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _log_if_wide(ax, _plot_metric(ax, grid, metric, grid.weightings))
        ax.set_title(metric_label(metric, name=grid.metric_name(metric)))
        ax.set_xlabel("training step")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # label -> handle, over all panels: a method may lack a metric in some
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(4, len(legend)))
    fig.savefig(path)


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each step for a heat map over irregular steps."""
    if len(steps) == 1:
        half = max(float(steps[0]) / 2, 0.5)
        return np.array([steps[0] - half, steps[0] + half], dtype=float)
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])


def plot_clusters(grid: Grid, key: str, path: Path) -> bool:
    """Per-cluster value against step, one panel per method and weighting, lines coloured by noise level."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    data = {(w, m): d for w, m, runs in grid.groups() if (d := cluster_mean(list(runs.values()), key))}
    if not data:
        return False
    ws, ms = grid.weightings, grid.methods
    n = max(d[1].shape[1] for d in data.values())
    cmap = colormaps["viridis"]
    fig = _figure(3.6 * len(ms) + 1.0, 3.0 * len(ws) + 0.4)
    axes = fig.subplots(len(ws), len(ms), squeeze=False, sharex=True, sharey=True)
    values = np.concatenate([d[1].ravel() for d in data.values()])
    for i, w in enumerate(ws):
        for j, m in enumerate(ms):
            ax = axes[i][j]
            if (w, m) not in data:
                ax.set_visible(False)
                continue
            steps, mean = data[(w, m)]
            for c in range(mean.shape[1]):
                ax.plot(steps, mean[:, c], color=cmap(c / max(n - 1, 1)), lw=1.2)
            for s in sorted({s for r in grid.group(w, m).values() for s in r.transitions}):
                ax.axvline(s, ymin=0.96, ymax=1.0, color=grid.color(m), lw=0.8)
            ax.set_title(grid.label(w, m), color=grid.color(m))
            ax.grid(alpha=0.3)
            if i == len(ws) - 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel(PER_CLUSTER[key].split(" (")[0])
    _log_if_wide(axes[0][0], values.tolist())
    bar = fig.colorbar(ScalarMappable(Normalize(0, max(n - 1, 1)), cmap), ax=axes, shrink=0.9)
    bar.set_label("cluster (0 = least noise)")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path)
    return True


def _share_matrix(runs: list, budget: int, n_bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Step-bin edges and the share of draws per cluster in each bin (bins x clusters), summed over runs;
    NaN for a bin without draws. At most as many bins as logged steps; None when no run logged its draws."""
    rows = [(step, counts) for r in runs for step, counts in r.draws]
    if not rows:
        return None
    n = max(len(c) for _, c in rows)
    n_bins = min(n_bins, len({step for step, _ in rows}))  # no empty bins between sparse log lines
    edges = np.linspace(0, max(budget, max(step for step, _ in rows)), n_bins + 1)
    totals = np.zeros((n_bins, n))
    for step, counts in rows:
        b = min(max(int(np.searchsorted(edges, step, side="left")) - 1, 0), n_bins - 1)
        totals[b, : len(counts)] += counts
    sums = totals.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return edges, np.where(sums > 0, totals / sums, np.nan)


def plot_shares(grid: Grid, path: Path, n_bins: int = 50) -> bool:
    """Heat map per method and weighting: the share of the draws each cluster received against the step
    (training draws of every seed's rank 0, in at most ``n_bins`` step bins)."""
    from matplotlib.ticker import MaxNLocator

    budget = grid.budget or 1
    panels = [(w, m, d) for w, m, runs in grid.groups() if (d := _share_matrix(list(runs.values()), budget, n_bins))]
    if not panels:
        return False
    vmax = max(float(np.nanmax(d[1])) for _, _, d in panels if np.isfinite(d[1]).any())
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = _figure(4.3 * cols + 1.0, 2.9 * nrows + 0.3)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (w, m, (edges, shares)) in zip(axes.flat, panels, strict=False):
        n = shares.shape[1]
        mesh = ax.pcolormesh(edges, np.arange(n + 1) - 0.5, shares.T, cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(grid.label(w, m), color=grid.color(m))
        ax.set_xlabel("training step")
        ax.set_ylabel("cluster (0 = least noise)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(mesh, ax=axes, shrink=0.9).set_label("share of the draws")
    fig.savefig(path)
    return True


def ratio_colour_limit(log2_ratios: list[np.ndarray]) -> float:
    """The symmetric colour limit of the ratio heat maps: the largest |log2 ratio| at each panel's last step
    (rows are steps, columns clusters), at least 0.02 (ratios within 1.4% show as white).

    Early steps, where a curriculum's locked clusters can be many times off the baseline, would otherwise set the
    scale and wash out the final differences (ratios of 1.03-1.17 are 0.04-0.23 in log2), which are the ones that
    matter; larger values saturate, and then arrows on the colour bar say so."""
    finals = np.concatenate([r[-1][np.isfinite(r[-1])] for r in log2_ratios if len(r)] or [np.zeros(0)])
    return max(float(np.abs(finals).max()) if finals.size else 0.0, 0.02)


def plot_ratio(grid: Grid, key: str, path: Path) -> float | None:
    """Heat map of each method's per-cluster value divided by its baseline's at the same step, coloured in log2
    within :func:`ratio_colour_limit` (labelled as ratios); returns that limit, None when nothing was drawn."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    with np.errstate(divide="ignore", invalid="ignore"):
        panels = [(w, m, steps, np.log2(a / b)) for w, m, steps, a, b in against_baseline(grid, key)]
    if not panels:
        return None
    lim = ratio_colour_limit([p[3] for p in panels])
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = _figure(4.3 * cols + 1.0, 2.9 * nrows + 0.3)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (w, m, steps, ratio) in zip(axes.flat, panels, strict=False):
        n = ratio.shape[1]
        mesh = ax.pcolormesh(
            _edges(steps.astype(float)), np.arange(n + 1) - 0.5, ratio.T, cmap="RdBu_r", vmin=-lim, vmax=lim
        )
        ax.set_title(f"{grid.label(w, m)} ÷ baseline", color=grid.color(m))
        ax.set_xlabel("training step")
        ax.set_ylabel("cluster (0 = least noise)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    beyond = any((np.abs(p[3][np.isfinite(p[3])]) > lim).any() for p in panels)
    bar = fig.colorbar(mesh, ax=axes, shrink=0.9, extend="both" if beyond else "neither")
    bar.formatter = FuncFormatter(lambda x, _: f"{2.0**x:.3g}")
    bar.set_label("method ÷ baseline (log scale)")
    fig.savefig(path)
    return lim
