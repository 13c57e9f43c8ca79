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
from .figures import STYLE, plot_clusters, plot_dense, plot_others, plot_primary, plot_ratio, plot_shares
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
from .verdict import Verdict, sentence, verdict

__all__ = ["build_document", "plain_sentences"]

PAPER = "easy_to_hard"  # the paper's curriculum: always the first method named


def _significance(tests: list[tuple[str, float | None, int]]) -> str:
    """Whether each named difference is significant (Holm-corrected paired Wilcoxon p < 0.05), in words."""
    if not tests:
        return ""
    if min(n for _, _, n in tests) < MIN_SEEDS_FOR_P:
        return f"too few paired seeds for a p-value (fewer than {MIN_SEEDS_FOR_P})"
    ps = " and ".join(fmt_p(p) for _, p, _ in tests)
    significant = [what for what, p, _ in tests if p is not None and p < 0.05]
    if len(tests) == 1:
        verdict_ = "significant" if significant else "not significant"
    elif len(significant) == len(tests):
        verdict_ = "both differences are significant"
    elif significant:
        verdict_ = f"only the {significant[0]} difference is significant"
    else:
        verdict_ = "neither difference is significant"
    return f"{verdict_} after Holm's correction (paired Wilcoxon p {ps})"


def plain_sentences(grid: Grid, cells: list[Cell], v: Verdict | None) -> list[str]:
    """One sentence per method against its weighting's uniform baseline, in plain words, the paper's curriculum
    (``easy_to_hard``) first: how much better or worse its sample metric ended, how many of the baseline's steps
    it needed to reach the baseline's target on the dense curve, and whether those differences are significant."""
    name = grid.metric_name(grid.metric)
    by_cell = {(c.weighting, c.method): c for c in cells}
    compared = {(c.weighting, c.method): c for c in (v.comparisons if v else [])}
    order = sorted(
        (c for c in cells if c.method != BASELINE and (c.weighting, BASELINE) in by_cell),
        key=lambda c: (c.method != PAPER, grid.weightings.index(c.weighting), grid.methods.index(c.method)),
    )
    out = []
    for cell in order:
        comparison = compared.get((cell.weighting, cell.method))
        final = comparison.final if comparison and comparison.final and comparison.final["diff"] is not None else None
        if final is not None:
            mine, base, at = final["method_mean"], final["baseline_mean"], f"step {v.budget}"
        else:
            mine, base, at = cell.final[0], by_cell[(cell.weighting, BASELINE)].final[0], "the end"
        label = f"`{cell.method}`" + (" (the paper's curriculum)" if cell.method == PAPER else "")
        text = (f"With `{cell.weighting}`, " if len(grid.weightings) > 1 else "") + label
        if mine is None or base is None:
            text += f" has no final {name} to compare with the baseline's"
        else:
            change = abs(mine - base) / abs(base) if base else None
            if change is not None and change < 0.005:
                text += " ended level with the uniform baseline"
            else:
                better = (mine < base) == grid.lower
                amount = f"{change:.0%} " if change is not None else ""
                text += f" ended {amount}{'better' if better else 'worse'} than the uniform baseline"
            text += f" ({name} {fmt_num(mine)} against {fmt_num(base)} at {at})"
        tests = []
        if final is not None:
            tests.append((name, comparison.holm.get("final_w"), final["n"]))
        speed = comparison.speed if comparison else None
        if speed and speed["speedup"] is not None:
            ratio = 1 / speed["speedup"]
            text += (
                f" and needed {'only ' if ratio < 1 else ''}{ratio:.2f}x the baseline's steps to reach the baseline's "
                f"{v.target_fraction:.0%}-budget {v.name}"
            )
            tests.append(("speed", comparison.holm.get("speed_w"), speed["n"]))
        significance = _significance(tests)
        out.append(text + (f"; {significance}" if significance else "") + ".")
    return out


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
        blocks += [Para("Against the uniform baseline (`none`), in plain words:"), BulletList(plain)]
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
            lead += f" By the paired t-test on log steps: {named(by_t)}." if by_t else " Nor by the paired t-test."
        blocks.append(Para(lead))
        order = sorted(
            v.comparisons,
            key=lambda c: (
                c.method != "easy_to_hard",
                weightings.index(c.weighting) if c.weighting in weightings else 0,
            ),
        )
        items = [
            (f"With `{c.weighting}`: " if len(weightings) > 1 else "") + sentence(v, c, grid.metric_name(grid.metric))
            for c in order
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
