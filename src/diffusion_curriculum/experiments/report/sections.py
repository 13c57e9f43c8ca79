"""The comparison report's sections, built from a grid's results into a document.

:func:`build_document` assembles the whole report: the summary in words, the primary metric with its figure and
speed-ups, the paired comparison, curriculum progress, the other metrics, the per-timestep view, sample grids
and the provenance (evaluation settings, runs, command, versions, machine and configs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..stats import mean_std
from .document import Block, Code, Heading, Image, ImageRow, Para, Table
from .figures import STYLE, plot_clusters, plot_others, plot_primary, plot_ratio
from .results import (
    BASELINE,
    PER_CLUSTER,
    Cell,
    Grid,
    Run,
    analyse,
    fmt_duration,
    fmt_num,
    fmt_p,
    fmt_pm,
    metric_label,
)
from .tables import curriculum_table, other_table, paired_table, primary_table, ratio_table

__all__ = ["build_document"]


def _unlock_note(grid: Grid, budget: int) -> str:
    """When the curriculum had every cluster unlocked, on average, as a sentence; empty without one."""
    unlocked = [r.all_unlocked for r in grid.runs if r.method == "easy_to_hard"]
    mean, std = mean_std([s for s in unlocked if s is not None])
    if mean is None:
        return ""
    got = sum(s is not None for s in unlocked)
    return (
        f" `easy_to_hard` had every cluster unlocked at step {fmt_pm(mean, std, '{:.0f}')} (mean over the {got} of "
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
        + f". The primary metric is {metric_label(metric, grid.lower)}; "
        + "`none` (uniform timestep sampling) is the baseline."
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
            f"{prefix}the baseline ended at {metric} {fmt_num(speed['target'])} (mean of its seeds' final values), "
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
                f"{head}: **{c.method}**, at step {fmt_pm(s['steps_mean'], s['steps_std'], '{:.0f}')}, "
                f"a speed-up of {fmt_pm(s['mean'], s['std'], '{:.2f}')}× (mean ± std over the {s['reached']} of "
                f"{s['n']} seeds that reached it"
                + (f"; the other {s['n'] - s['reached']} did not within the budget" if s["reached"] < s["n"] else "")
                + ")"
                + ("; a speed-up below 1 means slower than the baseline" if s["mean"] < 1 else "")
                + ". "
            )
            rest = [
                f"`{o.method}` {fmt_pm(o.speed['mean'], o.speed['std'], '{:.2f}')}× "
                f"({o.speed['reached']}/{o.speed['n']})"
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
                    f"{name} ended {verdict} the baseline on average ({metric} {fmt_pm(*c.final)} against "
                    f"{fmt_pm(*base.final)}), better on {c.paired['wins']} and worse on {c.paired['losses']} of "
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
    blocks: list[Block] = [Heading(1, f"Comparison report: {grid.info.get('name', grid.out.name)}")]
    blocks += _summary(grid, cells)
    with matplotlib.rc_context(STYLE):
        blocks.append(Heading(2, f"Primary metric: {metric}"))
        if plot_primary(grid, figures / "primary.png"):
            blocks.append(
                Image(
                    figures / "primary.png",
                    f"{metric_label(metric, grid.lower)} against the training step: line = mean over seeds, "
                    "shaded band = min–max over seeds, dotted line = the baseline's final value (the speed-up target)."
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
        blocks.append(primary_table(grid, cells))
        paired = paired_table(grid, cells)
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
                        f" With {n_max} paired seeds the smallest possible sign-test p is {fmt_p(2.0 ** (1 - n_max))}."
                        if n_max > 1
                        else ""
                    )
                ),
                paired,
            ]
        curriculum = curriculum_table(grid)
        if curriculum is not None:
            blocks += [Heading(2, "Curriculum progress"), curriculum]
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
