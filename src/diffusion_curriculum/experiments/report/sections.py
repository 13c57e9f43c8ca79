"""The comparison report's sections, built from a grid's results into a document.

:func:`build_document` assembles the whole report: the summary in words, the primary metric with its figure and
speed-ups, the paired comparison, curriculum progress, the other metrics, the per-timestep view, sample grids
and the provenance (evaluation settings, runs, command, versions, machine and configs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..stats import MIN_SEEDS_FOR_P
from .document import Block, BulletList, Code, Heading, Image, ImageRow, Para, Table
from .figures import STYLE, plot_clusters, plot_dense, plot_others, plot_primary, plot_ratio, plot_shares
from .results import (
    BASELINE,
    PER_CLUSTER,
    Grid,
    Run,
    analyse,
    fmt_duration,
    fmt_num,
    metric_label,
)
from .tables import curriculum_table, other_table, primary_table, ratio_table, stage_cause_table, verdict_table
from .verdict import Verdict, sentence, verdict

__all__ = ["build_document"]


def _summary(grid: Grid, v: Verdict | None) -> list[Block]:
    """The opening: what was compared, then the answer per method in words, the paper's curriculum
    first; where nothing is significant the first sentence says so."""
    info = grid.info
    planned = info.get("runs", [])
    seeds = sorted({e.get("seed", 0) for e in planned})
    weightings = list(dict.fromkeys(e.get("weighting") or "none" for e in planned))
    weight = f" × {len(weightings)} weightings ({', '.join(weightings)})" if len(weightings) > 1 else ""
    methods = ", ".join(f"`{m}`" for m in dict.fromkeys(e.get("method", BASELINE) for e in planned)) or "no method"
    blocks: list[Block] = []
    if v is None or not v.comparisons:
        blocks.append(
            Para(
                "No speed-up can be measured: no run has held-out probe records (train.probe_every) or "
                "there is no method beside the `none` baseline."
            )
        )
    else:
        def named(cs: list) -> str:
            return ", ".join(
                f"`{c.method}` ({c.speed['speedup']:.2f}x{'' if len(weightings) == 1 else ', ' + c.weighting})"
                for c in cs
            )

        if min(c.speed["n"] for c in v.comparisons) < MIN_SEEDS_FOR_P:
            lead = f"No method's speed-up can be called significant: fewer than {MIN_SEEDS_FOR_P} paired seeds."
        else:
            by_w = [c for c in v.comparisons if (c.holm.get("speed_w") or 1.0) < 0.05]
            by_t = [c for c in v.comparisons if (c.holm.get("speed_t") or 1.0) < 0.05]
            lead = (
                f"Speed-ups significant after Holm's correction (p < 0.05) by the Wilcoxon test: {named(by_w)}."
                if by_w
                else "No method's speed-up is significant after Holm's correction (p < 0.05) by the Wilcoxon test"
                + f" (with {v.comparisons[0].speed['n']} pairs and {v.family} hypotheses its smallest possible "
                f"corrected p is {min(1.0, v.family * 2.0 ** (1 - v.comparisons[0].speed['n'])):.3g})."
            )
            lead += (
                f" By the paired t-test on log steps: {named(by_t)}." if by_t else " Nor by the paired t-test."
            )
        blocks.append(Para(lead))
        order = sorted(
            v.comparisons,
            key=lambda c: (
                c.method != "easy_to_hard",
                weightings.index(c.weighting) if c.weighting in weightings else 0,
            ),
        )
        items = [
            (f"With `{c.weighting}`: " if len(weightings) > 1 else "") + sentence(v, c, grid.metric) for c in order
        ]
        blocks.append(BulletList(items))
        mds = [
            f"{d:.2f}x" + (f" (`{w}`)" if len(v.min_detectable) > 1 else "")
            for w, d in v.min_detectable.items()
            if d is not None
        ]
        if mds:
            blocks.append(
                Para(
                    "The smallest speed-up this grid could detect (paired t-test on log steps, α = 0.05, 80% power, "
                    f"from the baseline seeds' spread of steps to the target): {', '.join(mds)}."
                )
            )
    blocks.append(
        Para(
            f"Grid `{info.get('name', grid.out.name)}` compares {methods}{weight} over {len(seeds)} seed(s) at an "
            f"equal budget of {grid.budget} steps; {len(grid.runs)} of {len(planned)} runs finished"
            + (f" ({len(grid.missing)} missing, listed below)" if grid.missing else "")
            + ". `none` (uniform timestep sampling) is the baseline."
        )
    )
    for warning in info.get("warnings", []):
        blocks.append(Para(f"**Warning:** {warning}"))
    for run in grid.runs:
        for note in run.repaired:  # a torn last line left out: say so where the numbers are read
            blocks.append(Para(f"**Repaired:** run `{run.name}`: {note}."))
    return blocks


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
            f"Grid wall time {fmt_duration(info.get('wall_s'))} (started {info.get('started', '?')}, finished "
            f"{info.get('finished', '?')}); the runs' own wall times add up to "
            f"{fmt_duration(sum(r.wall_s or 0 for r in grid.runs))}."
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
                    fmt_duration(r.wall_s),
                    str(r.final_step),
                    str(len(r.evals)),
                    str(sum("nonfinite_samples" in e for e in r.evals)),
                    fmt_num(r.images_per_s),
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


def build_document(grid: Grid, figures: Path) -> list[Block]:
    """Every section of the report, drawing its figures into ``figures``."""
    import matplotlib

    cells = analyse(grid)
    metric = grid.metric
    v = verdict(grid)
    blocks: list[Block] = [Heading(1, f"Comparison report: {grid.info.get('name', grid.out.name)}")]
    blocks += _summary(grid, v)
    with matplotlib.rc_context(STYLE):
        if v is not None:
            blocks.append(Heading(2, f"Speed-up: the dense {v.name} curve"))
            if plot_dense(grid, v.key, v.name, figures / "dense.png"):
                blocks.append(
                    Image(
                        figures / "dense.png",
                        f"{v.name} of the EMA model (the one each run exports) on fixed held-out draws, "
                        f"every {grid.info.get('dense_every', '?')} steps: line = mean over seeds, band = min–max. "
                        f"Dotted: the target, the baseline's seed mean at {v.target_fraction:.0%} of the budget "
                        "(dashed).",
                    )
                )
            blocks += [
                Para(
                    "Per seed, steps to the target are the first step at which the running best of the curve "
                    "reaches it, interpolated between evaluations (linear in the value, log scale in the step); a "
                    "seed that never reaches it is censored and counted at the budget (a bound in its favour). "
                    "Speed-up = baseline steps ÷ method steps over pairs of seeds; the table gives their geometric "
                    "mean with a 95% bootstrap-t interval over pairs. The Δ columns are method − baseline of "
                    f"{metric} at equal steps. p-values: paired Wilcoxon signed-rank and t-test (on log steps for the "
                    "speed-up), Holm-corrected over every p-value of the grid, none below "
                    f"{MIN_SEEDS_FOR_P} pairs."
                ),
                verdict_table(grid, v),
            ]
        blocks.append(Heading(2, f"Primary metric: {metric}"))
        if plot_primary(grid, figures / "primary.png"):
            blocks.append(
                Image(
                    figures / "primary.png",
                    f"{metric_label(metric, grid.lower)} against the training step: line = mean over seeds, "
                    "shaded band = min–max over seeds."
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
        blocks.append(primary_table(grid, cells))
        curriculum = curriculum_table(grid)
        if curriculum is not None:
            blocks += [Heading(2, "Curriculum progress"), curriculum]
        causes = stage_cause_table(grid)
        if causes is not None:
            blocks += [Para("What triggered each stage change, summed over seeds:"), causes]
        if plot_shares(grid, figures / "shares.png"):
            blocks += [
                Heading(2, "Where the samples went"),
                Image(
                    figures / "shares.png",
                    "The share of the training draws each timestep cluster received (cluster 0 = least noise) "
                    "against the training step: every seed's draws (rank 0's) summed in up to 50 step bins. The "
                    "uniform baseline gives each cluster its share of the noise levels throughout; a curriculum's "
                    "locked clusters get none.",
                ),
            ]
        others = [m for m in grid.metrics_present() if m != metric]
        if others:
            plot_others(grid, others, figures / "metrics.png")
            blocks += [
                Heading(2, "Other metrics"),
                Image(
                    figures / "metrics.png",
                    "Every other metric against the training step: mean over seeds, shaded = min–max over seeds"
                    + ("; weightings as line styles." if len(grid.weightings) > 1 else "."),
                ),
                Para("Final values, mean ± std over seeds (seeds with a value, where not all have one):"),
                other_table(grid, cells, others),
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
            if plot_clusters(grid, key, figures / f"{key}.png"):
                drawn = True
                blocks.append(
                    Image(
                        figures / f"{key}.png",
                        f"{what} per cluster against the training step; ticks "
                        "at the top of a panel mark that method's stage changes.",
                    )
                )
                if plot_ratio(grid, key, figures / f"{key}_ratio.png"):
                    blocks.append(
                        Image(
                            figures / f"{key}_ratio.png",
                            f"{what}: method ÷ baseline per cluster and step (log2): blue = lower than the baseline, "
                            "red = higher.",
                        )
                    )
                    table = ratio_table(grid, key)
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
