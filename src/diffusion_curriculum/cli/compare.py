"""``compare``: run a comparison grid (locally or one Slurm job per run) and write its report, write the report of
the runs finished so far, or print the verdicts of finished grids as one table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .common import add_launcher_options, positive_int, slurm_flags


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the top-level subparsers."""
    compare = sub.add_parser(
        "compare",
        help="run a comparison grid (baseline vs curriculum vs anti-curriculum ...) and write its report",
        description="Train every run of a grid (methods x weightings x seeds, equal steps), evaluate each at fixed "
        "steps and write OUT/report.md and OUT/report.html. A killed grid restarted with the same command skips "
        "finished runs and resumes the others from their last checkpoint.",
    )
    source = compare.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        help=(
            "smoke, quick (default), gmm, curriculum_gmm, digits, curriculum_digits, aa, samplers, samplers_digits, "
            "variance_dev, variance_gmm, variance_digits, variance_uncond, variance_class, uncond, class, text or gpu"
        ),
    )
    source.add_argument("--config", type=Path, help="a grid YAML file (see the presets for the format)")
    compare.add_argument("--out", type=Path, help="output folder (default runs/compare_<name>)")
    compare.add_argument(
        "--workers",
        type=positive_int,
        help="parallel runs (default: the grid's, at most the cores), each with cores / workers torch threads, at "
        "most OMP_NUM_THREADS when set",
    )
    compare.add_argument("--overwrite", action="store_true", help="replace a different grid already in --out")
    compare.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="score images in standard Inception-v3 features (overrides the grid's eval.inception_weights)",
    )
    compare.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the report from the runs finished so far (e.g. while Slurm jobs still run)",
    )
    compare.add_argument(
        "--summary",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="train nothing: print one Markdown table of the verdicts of these finished grid folders",
    )
    compare.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="with --summary: also draw its speed-ups with their 95%% intervals as a forest plot into this file",
    )
    add_launcher_options(compare, "the grid's launcher, else local")
    compare.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> None:
    if args.plot is not None and not args.summary:
        raise UserError("--plot draws the --summary table: give --summary DIR... with it")
    if args.plot is not None and (args.plot.suffix.lower() != ".png" or not args.plot.parent.is_dir()):
        raise UserError(f"--plot {args.plot}: give a .png file in an existing folder")
    if args.summary:
        from ..experiments.report import plot_summary, summary_table

        print(summary_table(args.summary), end="")
        if args.plot is not None:
            plot_summary(args.summary, args.plot)
        return
    from ..experiments.grid import load_grid, preset_path

    grid_file = args.config if args.config is not None else preset_path(args.preset or "quick")
    grid = load_grid(grid_file)
    out = args.out or Path("runs") / f"compare_{grid.name}"
    from ..experiments.runner import run_grid

    report = run_grid(
        grid_file,
        out,
        workers=args.workers,
        overwrite=args.overwrite,
        command="diffusion-curriculum " + " ".join(sys.argv[1:]),
        inception_weights=args.inception_weights,
        launcher=args.launcher,
        slurm=slurm_flags(args),
        report_only=args.report_only,
    )
    print(f"report: {report} (and {report.with_suffix('.html')})")
