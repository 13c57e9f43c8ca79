"""The comparison report of a finished grid: report.md, a self-contained report.html and figures/*.png."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .stats import final_value, finite, mean_curve, mean_std, paired_comparison, speedups

__all__ = ["write_report"]

BASELINE = "none"
METHOD_ORDER = ("none", "easy_to_hard", "hard_to_easy", "random")
METHOD_COLORS = {"none": "#333333", "easy_to_hard": "#d62728", "hard_to_easy": "#1f77b4", "random": "#2ca02c"}
EXTRA_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
WEIGHTING_STYLES = ("-", "--", ":", "-.")
# Scalar metrics of eval.jsonl, in display order, with whether lower is better.
METRICS = {
    "fid": True,
    "kid": True,
    "precision": False,
    "recall": False,
    "density": False,
    "coverage": False,
    "is_analogue": False,
    "class_accuracy": False,
    "nll": True,
    "sliced_wasserstein": True,
    "mmd": True,
    "excess_error_mean": True,
}
PER_CLUSTER = {
    "heldout_cluster_loss": "held-out denoising loss",
    "excess_error": "excess denoising error (vs the optimal denoiser)",
}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "figure.dpi": 110}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; line-height: 1.45; }
main { max-width: 1150px; margin: 2em auto; padding: 0 1em; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f8fa; padding: .8em; overflow: auto; font-size: .85em; }
pre code { background: none; padding: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.row figure { margin: 0; } .row img { image-rendering: pixelated; min-width: 128px; }
"""


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
        """First logged step trained with every cluster unlocked; None for no curriculum or never."""
        if not self.stages or self.stages[0][2] <= 1:
            return None
        return next((s for s, st, n in self.stages if st >= n), None)

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

    def metrics_present(self) -> list[str]:
        """Scalar metrics with at least one finite value, the primary first."""
        names = [self.metric] + [m for m in METRICS if m != self.metric]
        return [m for m in names if any(v is not None for r in self.runs for v in r.curve(m)[1])]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a half-written last line (a killed writer) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def load_results(out: Path) -> Grid:
    """Read grid.json and every finished run's eval.jsonl and metrics.jsonl under ``out``."""
    out = Path(out)
    info = json.loads((out / "grid.json").read_text())
    runs, missing = [], []
    for entry in info.get("runs", []):
        run_dir = out / entry.get("dir", f"runs/{entry['name']}")
        if entry.get("status") != "done":
            missing.append((entry, f"status {entry.get('status', 'unknown')}"))
            continue
        evals = {int(r["step"]): r for r in _read_jsonl(run_dir / "eval.jsonl") if "step" in r}
        if not evals:
            missing.append((entry, "no evaluations in eval.jsonl"))
            continue
        log = [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "step" in r]
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
            )
        )
    return Grid(out, info, runs, missing)


# ----- numbers ------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (weighting, method) cell's numbers on the primary metric."""

    weighting: str
    method: str
    runs: dict[int, Run]
    finals: dict[int, float | None]
    final: tuple[float | None, float | None]
    best: tuple[float | None, float | None]
    speed: dict[str, Any] | None  # None without a baseline in this weighting
    paired: dict[str, Any] | None  # None for the baseline itself or without one


def _analyse(grid: Grid) -> list[Cell]:
    """Final, best, speed-up and paired comparison for every cell, each against its weighting's baseline."""
    cells = []
    pick = min if grid.lower else max
    for w, m, runs in grid.groups():
        curves = {s: r.curve(grid.metric) for s, r in runs.items()}
        finals = {s: final_value(c) for s, c in curves.items()}
        bests = [pick(vs) if (vs := [v for v in c[1] if v is not None]) else None for c in curves.values()]
        base = grid.group(w, BASELINE)
        base_curves = {s: r.curve(grid.metric) for s, r in base.items()}
        speed = speedups(base_curves, curves, grid.lower) if base else None
        paired = None
        if base and m != BASELINE:
            paired = paired_comparison({s: final_value(c) for s, c in base_curves.items()}, finals, grid.lower)
        cells.append(Cell(w, m, runs, finals, mean_std(list(finals.values())), mean_std(bests), speed, paired))
    return cells


def _num(x: float | None) -> str:
    """A metric value with four significant digits; a dash when missing."""
    return "—" if x is None else f"{x:.4g}"


def _pm(mean: float | None, std: float | None, fmt: str | None = None) -> str:
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


def _p(p: float | None) -> str:
    """A p-value, or a dash when the test is undefined."""
    return "—" if p is None else f"{p:.3g}"


def _duration(seconds: float | None) -> str:
    """Seconds as h:mm:ss."""
    if seconds is None:
        return "—"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----- figures ------------------------------------------------------------------------------------
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


def _arrow(metric: str, lower: bool | None = None) -> str:
    """The metric's name with which way is better."""
    lower = METRICS.get(metric, True) if lower is None else lower
    return f"{metric} ({'lower' if lower else 'higher'} is better)"


def _plot_primary(grid: Grid, path: Path) -> bool:
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
        target = mean_std([final_value(r.curve(grid.metric)) for r in grid.group(w, BASELINE).values()])[0]
        if target is not None:
            ax.axhline(target, color="0.45", ls=":", lw=1.2, label="baseline's final (speed-up target)")
        ax.set_ylabel(_arrow(grid.metric, grid.lower) if i == 0 else "")
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


def _plot_others(grid: Grid, metrics: list[str], path: Path) -> None:
    """Small multiples: every other scalar metric against step, weightings as line styles."""
    cols = min(3, len(metrics))
    nrows = -(-len(metrics) // cols)
    fig = _figure(4.2 * cols, 3.1 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _log_if_wide(ax, _plot_metric(ax, grid, metric, grid.weightings))
        ax.set_title(_arrow(metric))
        ax.set_xlabel("training step")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # label -> handle, over all panels: a method may lack a metric in some
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(4, len(legend)))
    fig.savefig(path)


def _cluster_mean(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray] | None:
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


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each step for a heat map over irregular steps."""
    if len(steps) == 1:
        half = max(float(steps[0]) / 2, 0.5)
        return np.array([steps[0] - half, steps[0] + half], dtype=float)
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])


def _plot_clusters(grid: Grid, key: str, path: Path) -> bool:
    """Per-cluster value against step, one panel per method and weighting, lines coloured by noise level."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    data = {(w, m): d for w, m, runs in grid.groups() if (d := _cluster_mean(list(runs.values()), key))}
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


def _against_baseline(grid: Grid, key: str) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per (weighting, method) but the baseline: common steps, its and the baseline's seed means (steps x clusters)."""
    panels = []
    for w, m, runs in grid.groups():
        base = grid.group(w, BASELINE)
        if m == BASELINE or not base:
            continue
        mine, theirs = _cluster_mean(list(runs.values()), key), _cluster_mean(list(base.values()), key)
        if mine is None or theirs is None or mine[1].shape[1] != theirs[1].shape[1]:
            continue
        steps = np.intersect1d(mine[0], theirs[0])
        if len(steps):
            a = mine[1][np.isin(mine[0], steps)]
            b = theirs[1][np.isin(theirs[0], steps)]
            panels.append((w, m, steps, a, b))
    return panels


def _ratio_table(grid: Grid, key: str) -> Table | None:
    """The last common step's ratio to the baseline in numbers: low-noise half, high-noise half, all clusters."""
    rows = []
    for w, m, steps, a, b in _against_baseline(grid, key):
        mine, theirs = a[-1], b[-1]
        half = len(mine) // 2
        pair = np.stack([mine, theirs])
        if half == 0 or not (np.isfinite(pair).all() and (pair > 0).all()):
            continue  # ratios and their logs need positive values
        log_ratio = np.log(mine / theirs)
        cells = [np.exp(log_ratio[:half].mean()), np.exp(log_ratio[half:].mean()), mine.sum() / theirs.sum()]
        rows.append([grid.label(w, m), str(int(steps[-1])), *(_num(float(c)) for c in cells)])
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


def _plot_ratio(grid: Grid, key: str, path: Path) -> bool:
    """Heat map of each method's per-cluster value divided by its baseline's at the same step (log2)."""
    from matplotlib.ticker import MaxNLocator

    with np.errstate(divide="ignore", invalid="ignore"):
        panels = [(w, m, steps, np.log2(a / b)) for w, m, steps, a, b in _against_baseline(grid, key)]
    if not panels:
        return False
    finite_vals = np.concatenate([p[3][np.isfinite(p[3])] for p in panels])
    lim = max(float(np.abs(finite_vals).max()) if finite_vals.size else 0.0, 0.1)
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
    bar = fig.colorbar(mesh, ax=axes, shrink=0.9)
    bar.set_label("log2(method ÷ baseline)")
    fig.savefig(path)
    return True


# ----- the document -------------------------------------------------------------------------------
@dataclass
class Heading:
    """A section title."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; `code` and **bold** are the only inline markup."""

    text: str


@dataclass
class Table:
    """A table of already formatted cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """One picture with a caption: a figure of this report or a run's sample grid."""

    path: Path
    caption: str


@dataclass
class ImageRow:
    """Pictures side by side, each with its caption."""

    items: list[Image]


@dataclass
class Code:
    """A literal block."""

    text: str
    lang: str = ""


Block = Heading | Para | Table | Image | ImageRow | Code


def _markdown(blocks: list[Block], out: Path) -> str:
    """The document as Markdown, pictures as paths relative to the report."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def rel(path: Path) -> str:
        return path.relative_to(out).as_posix()

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Table) and not b.rows:
            parts.append("*(none)*")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, Image):
            parts.append(f"![{b.caption}]({rel(b.path)})\n\n*{b.caption}*")
        elif isinstance(b, ImageRow):
            lines = ["| " + " | ".join(cell(i.caption) for i in b.items) + " |", "|" + "---|" * len(b.items)]
            lines.append("| " + " | ".join(f"![{cell(i.caption)}]({rel(i.path)})" for i in b.items) + " |")
            parts.append("\n".join(lines))
        else:
            parts.append(f"```{b.lang}\n{b.text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape text for HTML and turn `code` and **bold** into tags."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _data_uri(path: Path) -> str:
    """A PNG file as a data URI, so the HTML needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html(blocks: list[Block], title: str) -> str:
    """The document as one self-contained HTML page: inline CSS, pictures embedded as base64 PNG."""

    def img(i: Image) -> str:
        src, alt, cap = _data_uri(i.path), html.escape(i.caption), _inline(i.caption)
        return f'<figure><img src="{src}" alt="{alt}"><figcaption>{cap}</figcaption></figure>'

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table) and not b.rows:
            parts.append("<p><em>(none)</em></p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            parts.append(img(b))
        elif isinstance(b, ImageRow):
            parts.append('<div class="row">' + "".join(img(i) for i in b.items) + "</div>")
        else:
            parts.append(f"<pre><code>{html.escape(b.text.rstrip())}</code></pre>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# ----- sections -----------------------------------------------------------------------------------
def _method(cell: Cell) -> str:
    """A method's name for tables and text."""
    return f"`{cell.method}` (baseline)" if cell.method == BASELINE else f"`{cell.method}`"


def _reached_text(speed: dict[str, Any]) -> str:
    """Per-seed steps and speed-ups, 'not reached' where a seed never got to the target."""
    parts = []
    for seed, steps, ratio in zip(speed["seeds"], speed["steps"], speed["speedup"], strict=True):
        parts.append(f"s{seed}: not reached" if steps is None else f"s{seed}: {steps} ({ratio:.2f}×)")
    return ", ".join(parts)


def _unlock_note(grid: Grid, budget: int) -> str:
    """When the curriculum had every cluster unlocked, on average, as a sentence; empty without one."""
    unlocked = [r.all_unlocked for r in grid.runs if r.method == "easy_to_hard"]
    mean, std = mean_std([s for s in unlocked if s is not None])
    if mean is None:
        return ""
    got = sum(s is not None for s in unlocked)
    return (
        f" `easy_to_hard` had every cluster unlocked at step {_pm(mean, std, '{:.0f}')} (mean over the {got} of "
        f"{len(unlocked)} runs that got there) of the {budget}-step budget."
    )


def _summary(grid: Grid, cells: list[Cell]) -> list[Block]:
    """The opening paragraphs, generated from the numbers."""
    info, metric = grid.info, grid.metric
    planned = info.get("runs", [])
    seeds = sorted({e.get("seed", 0) for e in planned})
    weightings = list(dict.fromkeys(e.get("weighting") or "none" for e in planned))
    budget = max((r.final_step or 0 for r in grid.runs), default=0)
    weight = f" × {len(weightings)} weightings ({', '.join(weightings)})" if len(weightings) > 1 else ""
    methods = ", ".join(f"`{m}`" for m in dict.fromkeys(e.get("method", BASELINE) for e in planned)) or "no method"
    text = [
        f"Grid `{info.get('name', grid.out.name)}` compares {methods}{weight} over {len(seeds)} seed(s) at an equal "
        + (f"budget of {budget} training steps" if budget else "step budget")
        + f"; {len(grid.runs)} of {len(planned)} runs finished"
        + (f" ({len(grid.missing)} missing, listed below)" if grid.missing else "")
        + f". The primary metric is {_arrow(metric, grid.lower)}; `none` (uniform timestep sampling) is the baseline."
    ]
    for w in grid.weightings:
        group = [c for c in cells if c.weighting == w]
        prefix = f"With weighting `{w}`: " if len(grid.weightings) > 1 else ""
        base = next((c for c in group if c.method == BASELINE), None)
        others = [c for c in group if c.method != BASELINE]
        if base is None:
            text.append(prefix + "no `none` baseline finished, so there are no speed-ups or paired comparisons.")
            continue
        if not others:
            text.append(prefix + "only the baseline finished: there is nothing to compare it with.")
            continue
        speed = base.speed
        if speed is None or speed["target"] is None:
            text.append(prefix + f"the baseline has no final {metric}, so no speed-up can be measured.")
            continue
        sentence = (
            f"{prefix}the baseline ended at {metric} {_num(speed['target'])} (mean of its seeds' final values), "
            f"which its seed-mean curve first reached at step {speed['baseline_steps']}. "
        )
        reached = sorted(
            (c for c in others if c.speed and c.speed["reached"]), key=lambda c: (-c.speed["reached"], -c.speed["mean"])
        )
        if reached:
            c = reached[0]
            s = c.speed
            head = "Soonest to reach it" if s["mean"] > 1 else "No method reached it sooner on average; closest"
            sentence += (
                f"{head}: **{c.method}**, at step {_pm(s['steps_mean'], s['steps_std'], '{:.0f}')}, "
                f"a speed-up of {_pm(s['mean'], s['std'], '{:.2f}')}× (mean ± std over the {s['reached']} of "
                f"{s['n']} seeds that reached it"
                + (f"; the other {s['n'] - s['reached']} did not within the budget" if s["reached"] < s["n"] else "")
                + ")"
                + ("; a speed-up below 1 means slower than the baseline" if s["mean"] < 1 else "")
                + ". "
            )
            rest = [
                f"`{o.method}` {_pm(o.speed['mean'], o.speed['std'], '{:.2f}')}× ({o.speed['reached']}/{o.speed['n']})"
                if o.speed["reached"]
                else f"`{o.method}` not reached (0/{o.speed['n']})"
                for o in others
                if o is not c
            ]
            if rest:
                sentence += "Others: " + "; ".join(rest) + ". "
        else:
            sentence += f"No other method reached the baseline's final {metric} within the budget. "
        for c in others:
            if c.method in ("easy_to_hard", "hard_to_easy") and c.paired and c.final[0] is not None:
                worse = (c.final[0] > base.final[0]) if grid.lower else (c.final[0] < base.final[0])
                verdict = "equal to" if c.final[0] == base.final[0] else ("worse than" if worse else "better than")
                name = "The anti-curriculum `hard_to_easy`" if c.method == "hard_to_easy" else "The curriculum"
                sentence += (
                    f"{name} ended {verdict} the baseline on average ({metric} {_pm(*c.final)} against "
                    f"{_pm(*base.final)}), better on {c.paired['wins']} and worse on {c.paired['losses']} of "
                    f"{c.paired['n']} paired seeds. "
                )
        text.append(sentence.strip())
    if len(seeds) == 1:
        text.append("With a single seed there is no spread and no significance test: treat every number as one draw.")
    if any(r.transitions for r in grid.runs):
        text.append(
            f"Speed-ups in this report come from the sample-quality (primary) metric, {metric}, scored on samples "
            "of the whole model. While a curriculum keeps clusters locked, the model has not yet trained the noise "
            "levels its sampler also passes through, so its mid-curriculum sample quality is handicapped by "
            "construction; the held-out loss per cluster (the per-timestep view below) is the fairer view of "
            "learning progress." + _unlock_note(grid, budget)
        )
    return [Para(t[0].upper() + t[1:]) for t in text]


def _primary_table(grid: Grid, cells: list[Cell]) -> Table:
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
        row = [_method(c)] + ([f"`{c.weighting}`"] if multi else [])
        have = sum(f is not None for f in c.finals.values())
        row += [str(len(c.runs)), _pm(*c.final) + (f" ({have}/{len(c.finals)} seeds)" if have < len(c.finals) else "")]
        row.append(_pm(*c.best))
        s = c.speed
        if s is None:
            row += ["no baseline", "—", "—", "—"]
        elif c.method == BASELINE:
            bs = s["baseline_steps"]
            row += [f"{bs} (seed-mean curve)" if bs is not None else "—", "1 (reference)", "—", "—"]
        else:
            row += [
                _pm(s["steps_mean"], s["steps_std"], "{:.0f}") if s["reached"] else "not reached",
                (_pm(s["mean"], s["std"], "{:.2f}") + "×") if s["reached"] else "not reached",
                f"{s['reached']}/{s['n']}",
                _reached_text(s),
            ]
        rows.append(row)
    return Table(header, rows)


def _other_table(grid: Grid, cells: list[Cell], metrics: list[str]) -> Table:
    """Final value (mean ± std over seeds) of every other scalar metric, one row per metric."""
    header = ["metric"] + [grid.label(c.weighting, c.method) for c in cells]
    rows = []
    for metric in metrics:
        row = [_arrow(metric)]
        for c in cells:
            finals = [final_value(r.curve(metric)) for r in c.runs.values()]
            have = sum(f is not None for f in finals)
            row.append(_pm(*mean_std(finals)) + (f" ({have}/{len(finals)} seeds)" if have < len(finals) else ""))
        rows.append(row)
    return Table(header, rows)


def _paired_table(grid: Grid, cells: list[Cell]) -> Table | None:
    """Seed-paired comparison of each method's final primary metric with its baseline's."""
    multi = len(grid.weightings) > 1
    rows = []
    for c in cells:
        if c.paired is None:
            continue
        p = c.paired
        rows.append(
            [_method(c)]
            + ([f"`{c.weighting}`"] if multi else [])
            + [
                f"{p['wins']}/{p['n']}",
                str(p["ties"]),
                _num(p["mean_diff"]),
                _p(p["sign_p"]),
                _p(p["t_p"]),
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


def _curriculum_table(grid: Grid) -> Table | None:
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
                _pm(*mean_std(done), "{:.0f}") if done else "never",
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


def _sample_path(run: Run, step: int) -> Path:
    """Where a run's sample grid for a step is."""
    return run.dir / "samples" / f"step_{step:08d}.png"


def _samples(grid: Grid) -> list[Block]:
    """Seed 0's sample grids side by side, at the final step and at the evaluated step nearest the middle."""
    blocks: list[Block] = []
    for w in grid.weightings:
        shown = []
        for m in grid.methods:
            runs = grid.group(w, m)
            if runs:
                shown.append(runs[0] if 0 in runs else runs[min(runs)])
        if len(grid.weightings) > 1:
            blocks.append(Heading(3, f"Weighting `{w}`"))
        final = max(r.final_step or 0 for r in shown)
        common = set.intersection(*(_sample_steps(r) for r in shown))
        evaluated = {int(e["step"]) for r in shown for e in r.evals}
        middle = sorted(common & evaluated - {final}, key=lambda s: (abs(s - final / 2), s))
        for step in ([middle[0]] if middle else []) + [final]:
            items = [
                Image(_sample_path(r, step), f"{grid.label(w, r.method)}, seed {r.seed}, step {step}")
                for r in shown
                if _sample_path(r, step).is_file()
            ]
            absent = [f"`{r.name}`" for r in shown if not _sample_path(r, step).is_file()]
            if items:
                blocks.append(ImageRow(items))
            if absent:
                blocks.append(Para(f"No sample grid at step {step} for " + ", ".join(absent) + "."))
    return blocks


def _sample_steps(run: Run) -> set[int]:
    """The steps a run saved sample grids at."""
    return {int(p.stem[5:]) for p in (run.dir / "samples").glob("step_*.png") if p.stem[5:].isdigit()}


def _provenance(grid: Grid) -> list[Block]:
    """Evaluation settings in words, runs with their wall times, missing runs, versions, machine, configs."""
    info = grid.info
    ev = info.get("eval", {})
    blocks: list[Block] = [
        Heading(2, "Evaluation settings"),
        Para(
            f"Every {ev.get('every', '?')} training steps and at the last step, each run's model drew "
            f"{ev.get('n', '?')} samples with the `{ev.get('solver', '?')}` solver in {ev.get('steps', '?')} sampling "
            f"steps, from sampling seed {ev.get('seed', '?')} (the same for every run and step), and every metric "
            "was computed from those samples; the held-out per-cluster loss uses held-out data at fixed noise draws. "
            "Seeds are paired: runs with the same seed share the training config's `seed`."
        ),
        Heading(2, "Runs"),
        Para(
            f"Grid wall time {_duration(info.get('wall_s'))} (started {info.get('started', '?')}, finished "
            f"{info.get('finished', '?')}); the runs' own wall times add up to "
            f"{_duration(sum(r.wall_s or 0 for r in grid.runs))}."
        ),
        Table(
            [
                "run",
                "method",
                "weighting",
                "seed",
                "wall time",
                "last evaluated step",
                "evaluations",
                "non-finite",
                "mean images/s",
            ],
            [
                [
                    f"`{r.name}`",
                    r.method,
                    r.weighting,
                    str(r.seed),
                    _duration(r.wall_s),
                    str(r.final_step),
                    str(len(r.evals)),
                    str(sum("nonfinite_samples" in e for e in r.evals)),
                    _num(r.images_per_s),
                ]
                for r in sorted(
                    grid.runs, key=lambda r: (grid.weightings.index(r.weighting), grid.methods.index(r.method), r.seed)
                )
            ],
        ),
    ]
    if grid.missing:
        blocks += [
            Heading(3, "Missing runs"),
            Table(
                ["run", "method", "weighting", "seed", "why"],
                [
                    [
                        f"`{e.get('name', '?')}`",
                        str(e.get("method", "?")),
                        str(e.get("weighting", "none")),
                        str(e.get("seed", "?")),
                        why,
                    ]
                    for e, why in grid.missing
                ],
            ),
        ]
    blocks += [Heading(2, "Command"), Code(str(info.get("command", "")), "bash")]
    for key, title, header in (("versions", "Versions", "version"), ("machine", "Machine", "value")):
        values = info.get(key) or {}
        rows = [[k, "none" if v is None else str(v)] for k, v in values.items()]
        blocks += [Heading(2, title), Table(["", header], rows)]
    for key, title in (("grid_config", "Grid config"), ("base_config", "Base train config")):
        if key in info:
            blocks += [Heading(2, title), Code(yaml.safe_dump(info[key], sort_keys=False), "yaml")]
    return blocks


def _document(grid: Grid, figures: Path) -> list[Block]:
    """Every section of the report, drawing its figures into ``figures``."""
    import matplotlib

    cells = _analyse(grid)
    metric = grid.metric
    blocks: list[Block] = [Heading(1, f"Comparison report: {grid.info.get('name', grid.out.name)}")]
    blocks += _summary(grid, cells)
    with matplotlib.rc_context(STYLE):
        blocks.append(Heading(2, f"Primary metric: {metric}"))
        if _plot_primary(grid, figures / "primary.png"):
            blocks.append(
                Image(
                    figures / "primary.png",
                    f"{_arrow(metric, grid.lower)} against the training step: line = mean over seeds, shaded band = "
                    "min–max over seeds, dotted line = the baseline's final value (the speed-up target)."
                    + (
                        " The strip beneath marks the steps at which a run's curriculum stage changed (every seed, "
                        "one row per method)."
                        if any(r.transitions for r in grid.runs)
                        else ""
                    ),
                )
            )
        else:
            blocks.append(Para(f"No run has a finite {metric} value."))
        blocks.append(
            Para(
                f"Speed-up: the target is the baseline's final {metric} averaged over its seeds (those with a final "
                "value); the baseline's steps are when its seed-mean curve first reaches it; each method seed's "
                "steps are when its own curve first reaches it (at an evaluated step); speed-up = baseline steps ÷ "
                "method steps. Mean ± std (sample std) are over the seeds that reached the target; `not reached` "
                "seeds are counted in the `reached` column."
            )
        )
        blocks.append(_primary_table(grid, cells))
        paired = _paired_table(grid, cells)
        if paired is not None:
            n_max = max(c.paired["n"] for c in cells if c.paired)
            blocks += [
                Heading(2, "Paired comparison with the baseline"),
                Para(
                    f"Final {metric} of each method against the baseline on the same seed: a win is a better value. "
                    "Sign test: exact two-sided binomial (p = ½), ties dropped; paired t-test: "
                    "`scipy.stats.ttest_rel`; both undefined (—) without paired seeds, the t-test also with fewer "
                    "than 2 seeds or identical differences."
                    + (
                        f" With {n_max} paired seeds the smallest possible sign-test p is {_p(2.0 ** (1 - n_max))}."
                        if n_max > 1
                        else ""
                    )
                ),
                paired,
            ]
        curriculum = _curriculum_table(grid)
        if curriculum is not None:
            blocks += [Heading(2, "Curriculum progress"), curriculum]
        others = [m for m in grid.metrics_present() if m != metric]
        if others:
            _plot_others(grid, others, figures / "metrics.png")
            blocks += [
                Heading(2, "Other metrics"),
                Image(
                    figures / "metrics.png",
                    "Every other metric against the training step: mean over seeds, shaded = min–max over seeds"
                    + ("; weightings as line styles." if len(grid.weightings) > 1 else "."),
                ),
                Para("Final values, mean ± std over seeds (seeds with a value, where not all have one):"),
                _other_table(grid, cells, others),
            ]
        blocks.append(Heading(2, "Per-timestep view"))
        blocks.append(
            Para(
                "What each method has learned at each noise level, independent of whether locked clusters spoil "
                "its samples: the value per timestep cluster (cluster 0 = least noise), mean over seeds. Where there "
                "is a baseline, heat maps divide each method by it at the same step (log2: blue = lower than the "
                "baseline)."
            )
        )
        drawn = False
        for key, what in PER_CLUSTER.items():
            if _plot_clusters(grid, key, figures / f"{key}.png"):
                drawn = True
                blocks.append(
                    Image(
                        figures / f"{key}.png",
                        f"{what} per cluster against the training step; ticks "
                        "at the top of a panel mark that method's stage changes.",
                    )
                )
                if _plot_ratio(grid, key, figures / f"{key}_ratio.png"):
                    blocks.append(
                        Image(
                            figures / f"{key}_ratio.png",
                            f"{what}: method ÷ baseline per cluster and step (log2): blue = lower than the baseline, "
                            "red = higher.",
                        )
                    )
                    table = _ratio_table(grid, key)
                    if table is not None:
                        blocks += [
                            Para(
                                f"{what[0].upper() + what[1:]} at the last evaluated step, method ÷ baseline "
                                "(seed means; below 1: lower than the baseline). Halves split the clusters into "
                                "the less noisy and the noisier half; the sum over all clusters is dominated by the "
                                "least noisy ones."
                            ),
                            table,
                        ]
        if not drawn:
            blocks.append(Para("No per-cluster values were recorded."))
    blocks.append(Heading(2, "Samples"))
    blocks.append(Para("Sample grids of seed 0 (or the lowest seed run) at equal steps, one method per column."))
    blocks += _samples(grid) or [Para("No sample grids found.")]
    blocks += _provenance(grid)
    return blocks


def write_report(out: Path) -> tuple[Path, Path]:
    """Write OUT/report.md and a self-contained OUT/report.html (and OUT/figures/*.png) from a grid's results."""
    out = Path(out)
    grid = load_results(out)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    blocks = _document(grid, figures)
    md, page = out / "report.md", out / "report.html"
    md.write_text(_markdown(blocks, out))
    page.write_text(_html(blocks, f"Comparison report: {grid.info.get('name', out.name)}"))
    return md, page
