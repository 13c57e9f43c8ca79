"""The comparison report's sections, built from a grid's results into a document.

:func:`build_document` assembles the whole report: one plain sentence per method against the baseline, the tests
in detail, the primary metric with its figure and
speed-ups, the paired comparison, curriculum progress, the other metrics, the per-timestep view, sample grids
and the provenance (evaluation settings, runs, command, versions, machine and configs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..stats import MIN_SEEDS_FOR_P
from .document import Block, BulletList, Code, Heading, Image, ImageRow, Para, Table
from .figures import STYLE, plot_balanced, plot_clusters, plot_dense, plot_others, plot_primary, plot_ratio, plot_shares
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
    metric_label,
)
from .tables import curriculum_table, other_table, primary_table, ratio_table, stage_cause_table, verdict_table
from .verdict import Verdict, decision, per_cluster_key, rule_cell, sentence, speed_cell, verdict

__all__ = ["build_document", "plain_sentences"]

PAPER = "easy_to_hard"  # the paper's curriculum: always the first method named


def plain_sentences(grid: Grid, cells: list[Cell], v: Verdict | None) -> list[str]:
    """One sentence per method against its weighting's uniform baseline, in plain words, the paper's curriculum
    (``easy_to_hard``) first: on each primary endpoint, its speed-up (or bound) and whether it was shown faster,
    slower or neither (Holm-adjusted p below 0.05 and the interval on one side of 1x); the A/A arm last."""
    if v is None:
        return []
    order = sorted(
        v.comparisons,
        key=lambda c: (
            c.paired_aa,
            c.against != BASELINE,
            c.method != PAPER,
            grid.weightings.index(c.weighting),
            grid.methods.index(c.method),
        ),
    )
    out = []
    for c in order:
        label = c.label if c.against != BASELINE else f"`{c.method}`"
        label += " (the paper's curriculum)" if c.method == PAPER and c.against == BASELINE else ""
        label += " (the paired A/A arm)" if c.paired_aa else ""
        text = (f"With `{c.weighting}`, " if len(grid.weightings) > 1 else "") + label + ": "
        parts = []
        for e in v.primary:
            r = c.endpoints[e]
            if e not in c.holm:  # outside the plan's Holm family: no decision, an unadjusted p
                parts.append(f"{v.names[e]} {speed_cell(r)} (secondary, unadjusted p {fmt_p(r['p'], r['p_reason'])})")
                continue
            outcome = decision(r, c.holm.get(e))
            p = c.holm.get(e)
            tested = f"Holm p {fmt_p(p)}" if p is not None else fmt_p(None, r["p_reason"])
            parts.append(f"{v.names[e]} {speed_cell(r)}, {outcome} ({tested})")
        if c.rule is not None:
            parts.append(f"by the preset's decision rule on {v.names[v.plan.decide]}: {rule_cell(c.rule)}")
        out.append(text + "; ".join(parts) + ".")
    return out


def _family_text(v: Verdict) -> str:
    """Which comparisons Holm's family holds, when the plan names them or splits them by endpoint."""
    parts = []
    if v.plan.family is not None:
        parts.append("of " + ", ".join(f"`{m}`" for m in v.plan.family))
    if v.plan.holm == "per_endpoint" and len(v.primary) > 1:
        parts.append("one family per endpoint")
    return f" ({'; '.join(parts)})" if parts else ""


def _summary(grid: Grid, cells: list[Cell], v: Verdict | None) -> list[Block]:
    """The opening: each method against the baseline in one plain sentence, the paper's curriculum first; then
    the tests in detail (where nothing is significant the first sentence says so), what was compared and the
    feature space of the image metrics."""
    info = grid.info
    planned = info.get("runs", [])
    seeds = sorted({e.get("seed", 0) for e in planned})
    weightings = list(dict.fromkeys(e.get("weighting") or "none" for e in planned))
    weight = f" × {len(weightings)} weightings ({', '.join(weightings)})" if len(weightings) > 1 else ""
    methods = ", ".join(f"`{m}`" for m in dict.fromkeys(e.get("method", BASELINE) for e in planned)) or "no method"
    blocks: list[Block] = []
    plain = plain_sentences(grid, cells, v)
    if plain:
        heads = v is not None and any(c.against != BASELINE for c in v.comparisons)
        lead = "Against the uniform baseline (`none`)" + (", then head to head as the preset asks" if heads else "")
        blocks += [Para(lead + ", in plain words:"), BulletList(plain)]
    if v is None or not v.comparisons:
        blocks.append(
            Para(
                "No speed-up can be measured: no run has held-out probe records (train.probe_every) or "
                "there is no method beside the `none` baseline."
            )
        )
    else:
        primary = ", ".join(v.names[e] for e in v.primary)
        shown = [
            f"{c.label} {decision(c.endpoints[e], c.holm.get(e))} on {v.names[e]}"
            for c in v.comparisons
            for e in v.primary
            if decision(c.endpoints[e], c.holm.get(e)) != "not shown"
        ]
        lead = (
            f"Primary endpoints, fixed in the preset before any run: {primary}; one test each (the paired t-test on "
            "log steps, or the sign test where seeds were censored), "
            + (
                f"Holm's correction over {v.family} primary p-values{_family_text(v)} (its first step at α = "
                f"{v.alpha:.2g}). "
                if v.family
                else f"but no primary p-value (fewer than {MIN_SEEDS_FOR_P} pairs, or no spread). "
            )
        )
        if v.plan.decide is not None:
            m = f"{v.plan.margin:.0%}"
            lead += (
                f"Decision rule on {v.names[v.plan.decide]}, fixed in the preset: helps if the 95% interval lies above "
                f"1x with Holm p < 0.05, hurts if below, no effect within ±{m} if the interval lies inside "
                f"{1 / (1 + v.plan.margin):.2f}–{1 + v.plan.margin:.2f}x (two one-sided tests), else undecided, with "
                "the seeds that would decide it if the spread seen held. "
            )
        lead += (
            "Shown after the correction: " + "; ".join(shown) + "."
            if shown
            else "No method was shown faster or slower than uniform sampling on a primary endpoint after the "
            "correction."
        )
        blocks.append(Para(lead))
        order = sorted(
            v.comparisons,
            key=lambda c: (
                c.paired_aa,
                c.method != PAPER,
                weightings.index(c.weighting) if c.weighting in weightings else 0,
            ),
        )
        items = [
            (f"With `{c.weighting}`: " if len(weightings) > 1 else "") + sentence(v, c, grid.metric_name(grid.metric))
            for c in order
        ]
        blocks.append(BulletList(items))
        detectable = []
        for w, by_endpoint in v.detectable.items():
            found = [f"{d:.2f}x on {v.names[e]}" for e, d in by_endpoint.items() if d is not None]
            if found:
                where = f" (`{w}`)" if len(v.detectable) > 1 else ""
                detectable.append(f"{', '.join(found)}{where}, from {v.detectable_from[w]}")
        if detectable:
            blocks.append(
                Para(
                    "The smallest speed-up this grid could detect (paired t-test on log steps at Holm's first-step "
                    f"α = {v.alpha:.2g}, 80% power, from the spread of paired log ratios): {'; '.join(detectable)}."
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
    space = grid.feature_space()
    if space is not None:
        inception = all(x.startswith("inception-") for x in grid.extractors)
        blocks.append(
            Para(
                f"FID and KID (and precision, recall, density and coverage) are computed in {space}"
                + (
                    "."
                    if inception
                    else ": comparable between runs of this package, not with published FIDs, which are computed "
                    "in Inception-v3's features."
                )
                + _noise_floor_text(grid.noise_floors)
                + _fitted_text((info.get("eval") or {}).get("evaluator_fitted"))
            )
        )
    for warning in info.get("warnings", []):
        blocks.append(Para(f"**Warning:** {warning}"))
    for run in grid.runs:
        for note in run.repaired:  # a torn last line left out: say so where the numbers are read
            blocks.append(Para(f"**Repaired:** run `{run.name}`: {note}."))
    return blocks


def _noise_floor_text(floors: list[float]) -> str:
    """The sentence that puts FID beside its evaluator's noise floor, or nothing when no evaluation records one."""
    if not floors:
        return ""
    # One floor per reference: runs of different seeds have different training splits, so a grid has a range.
    shown = f"{floors[0]:.4g}" if len(floors) == 1 else f"{floors[0]:.4g} to {floors[-1]:.4g} (one per training split)"
    return (
        f" The evaluator's noise floor, the FID between two disjoint halves of the real data in these features, "
        f"is {shown}: a FID near it is as close to the data as the data is to itself (FID falls with the "
        "number of images compared, so read it as an order of magnitude)."
    )


def _fitted_text(fitted: dict | None) -> str:
    """The sentence on an evaluator this grid fitted itself (``eval.evaluator: auto``), or nothing."""
    if not fitted:
        return ""
    if fitted.get("labelled"):
        quality = f"a classifier with held-out accuracy {fitted.get('heldout_accuracy', float('nan')):.3f}"
    else:
        quality = f"an autoencoder with held-out reconstruction MSE {fitted.get('heldout_reconstruction_mse'):.3g}"
    return (
        f" The evaluator was fitted by this grid on its own data (`eval.evaluator: auto`, in `evaluator/`): "
        f"{quality}, on {fitted.get('n_train')} training images in {fitted.get('fit_s', 0):.0f} s."
    )


def _sample_path(run: Run, step: int) -> Path:
    """Where a run's sample grid for a step is."""
    return run.dir / "samples" / f"step_{step:08d}.png"


SAMPLE_WIDTH = 512  # sample grids narrower than this (in pixels) are shown enlarged


def _enlarged(path: Path, folder: Path, name: str) -> Path:
    """A sample grid enlarged by nearest-neighbour to at least :data:`SAMPLE_WIDTH` pixels across, written under
    ``folder`` as ``name``: 8x8 digits in a grid a few hundred pixels wide show as specks otherwise, and
    nearest-neighbour keeps every pixel a sharp square. Only image grids (grey or RGB PNGs) are enlarged; a
    scatter plot (an RGBA figure) is returned as it is."""
    from PIL import Image as PILImage

    with PILImage.open(path) as img:
        factor = -(-SAMPLE_WIDTH // img.width)
        if img.mode not in ("L", "RGB") or factor < 2:
            return path
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        img.resize((img.width * factor, img.height * factor), PILImage.NEAREST).save(target)
    return target


def _samples(grid: Grid, figures: Path) -> list[Block]:
    """Seed 0's sample grids side by side, at the final step and at the evaluated step nearest the middle,
    enlarged (:func:`_enlarged`) into ``figures/samples``."""
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
                Image(
                    _enlarged(_sample_path(r, step), figures / "samples", f"{r.name}_step_{step:08d}.png"),
                    f"{grid.label(w, r.method)}, seed {r.seed}, step {step}",
                )
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
            f"Grid wall time {fmt_duration(info.get('wall_s'))}"
            + (f", CPU time {fmt_duration(info['cpu_s'])} (its process and workers)" if "cpu_s" in info else "")
            + f" (started {info.get('started', '?')}, finished {info.get('finished', '?')}); the runs' own wall times "
            f"add up to {fmt_duration(sum(r.wall_s or 0 for r in grid.runs))}. Wall times and images per second "
            "depend on how loaded the machine was while each run ran (runs share its cores with each other and "
            "with anything else running), so they do not measure a method's cost."
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
                "mean images/s (machine load, not the method)",
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


def _endpoint_sections(grid: Grid, v: Verdict, figures: Path) -> list[Block]:
    """The speed-ups: how each endpoint is read, its curves, and the table."""
    blocks: list[Block] = [Heading(2, "Speed-up on each endpoint")]
    pct = f"{v.target_fraction:.0%}"
    blocks.append(
        Para(
            f"Each pair of runs of the same seed has its own target: the baseline run's level at {pct} of the budget "
            f"(step {v.target_step:.0f}). E1 reads it off the sample metric ({grid.metric_name(grid.metric)}, "
            "log-log interpolation between evaluations); E2 off S(s), the mean over clusters of log(L_k(s) / L*_k), "
            "L*_k the baseline's per-cluster loss at that step, so that every noise level counts equally in "
            "relative terms (on images the per-cluster loss includes its irreducible part, which pulls S towards "
            "0: E2 is then a conservative measure); L_simple off the dense curve, whose uniform average over "
            "timesteps weights the least noisy ones most. Per pair, steps to the target are the first step at which "
            "the running best reaches it (log scale in the step). A pair where neither run reached it is dropped "
            "and counted; where one side never did, its steps are known only to exceed the budget, so the method's "
            "speed-up is a bound, with no interval and the sign test on who reached it first instead of the t-test. "
            "Otherwise: the geometric mean of baseline steps ÷ method steps with a 95% bootstrap-t interval (from "
            f"{MIN_SEEDS_FOR_P} pairs; below that the pairs' range) and the paired t-test on log steps."
        )
    )
    if "loss" in v.endpoints and plot_dense(grid, grid.dense_key, v.names["loss"], figures / "dense.png"):
        blocks.append(
            Image(
                figures / "dense.png",
                f"{v.names['loss']} of the EMA model on fixed held-out draws, every "
                f"{grid.info.get('dense_every', '?')} steps: line = mean over seeds, band = min–max. Dotted: the "
                f"baseline's seed mean at {pct} of the budget (dashed).",
            )
        )
    key = per_cluster_key(grid)
    if "e2" in v.endpoints and key and plot_balanced(grid, key, v.target_step, figures / "balanced.png"):
        blocks.append(
            Image(
                figures / "balanced.png",
                f"E2's S(s) = mean over clusters of log(L_k(s) / L*_k) ({key}), each run against its own seed's "
                f"baseline at step {v.target_step:.0f}: line = mean over seeds, band = min–max; a run reaches the "
                "target where S crosses 0.",
            )
        )
    blocks.append(verdict_table(grid, v))
    return blocks


def build_document(grid: Grid, figures: Path) -> list[Block]:
    """Every section of the report, drawing its figures into ``figures``."""
    import matplotlib

    cells = analyse(grid)
    metric = grid.metric
    v = verdict(grid)
    blocks: list[Block] = [Heading(1, f"Comparison report: {grid.info.get('name', grid.out.name)}")]
    blocks += _summary(grid, cells, v)
    with matplotlib.rc_context(STYLE):
        if v is not None:
            blocks += _endpoint_sections(grid, v, figures)
        blocks.append(Heading(2, f"Primary metric: {grid.metric_name(metric)}"))
        if plot_primary(grid, figures / "primary.png"):
            blocks.append(
                Image(
                    figures / "primary.png",
                    f"{metric_label(metric, grid.lower, grid.metric_name(metric))} against the training step: "
                    "line = mean over seeds, "
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
            blocks.append(Para(f"No run has a finite {grid.metric_name(metric)} value."))
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
                    "against the training step: every seed's draws (all processes') summed in up to 50 step bins. The "
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
                "is a baseline, heat maps divide each method by it at the same step (blue = lower than the "
                "baseline, red = higher)."
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
                lim = plot_ratio(grid, key, figures / f"{key}_ratio.png")
                if lim is not None:
                    blocks.append(
                        Image(
                            figures / f"{key}_ratio.png",
                            f"{what}: method ÷ baseline per cluster and step (0 = least noise): blue = lower than the "
                            f"baseline, red = higher. The colour scale (logarithmic) spans ratios {2**-lim:.3g} to "
                            f"{2**lim:.3g}, the largest at the last evaluated step, so that the final differences "
                            "show; larger ones, earlier, saturate.",
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
    blocks += _samples(grid, figures) or [Para("No sample grids found.")]
    blocks += _provenance(grid)
    return blocks
