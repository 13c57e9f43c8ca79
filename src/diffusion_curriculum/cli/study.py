"""``study convergence`` and ``study entropy``: the task-difficulty study (the paper's first half; docs/study.md),
how fast each timestep interval's loss converges and the relative entropy between consecutive marginals."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..names import OBJECTIVES
from .common import Parser, add_launcher_options, positive_int, resolve_config, slurm_flags

if TYPE_CHECKING:
    from ..config import Config


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``study`` and its subcommands to the top-level subparsers."""
    # these import torch: inside main()'s Ctrl-C handling
    from ..clustering import CLUSTER_METHODS
    from ..schedules import BETA_SCHEDULES
    from ..weighting import WEIGHTINGS

    study = sub.add_parser(
        "study",
        help="measure how hard each denoising task is: convergence per interval, KL across t",
        description="The task-difficulty study (the paper's first half). See docs/study.md.",
    )
    study_sub = study.add_subparsers(dest="study", required=True, metavar="STUDY", parser_class=Parser)
    conv = study_sub.add_parser(
        "convergence",
        help="train one model per timestep interval and compare how fast each loss converges",
        description="Split the noise levels into K intervals; for each, train a fresh model on that interval "
        "alone (same data, model, seed and budget) and record its loss curve, steps to converge and held-out "
        "denoising quality. Writes OUT/study.jsonl, convergence.png, loss_curves.png and study.md. A restarted "
        "study skips finished runs.",
    )
    _add_study_options(conv)
    conv.add_argument("--model", metavar="ARCH[-PRESET]", help="unet, dit or mlp, optionally -tiny/-small/-base")
    conv.add_argument("--objective", choices=OBJECTIVES)
    conv.add_argument("--weighting", choices=tuple(WEIGHTINGS))
    conv.add_argument("--intervals", type=positive_int, default=20, help="number of intervals K (default 20)")
    conv.add_argument("--clustering", choices=CLUSTER_METHODS, help="how to split the timesteps (default uniform)")
    conv.add_argument("--max-steps", type=positive_int, help="training steps per interval")
    conv.add_argument("--batch-size", type=positive_int)
    conv.add_argument("--workers", type=positive_int, help="parallel runs (default: the number of cores)")
    conv.add_argument("--threads", type=positive_int, default=1, help="torch threads per run (default 1)")
    conv.add_argument("--tolerance", type=float, default=0.05, help="converged within this fraction of the drop")
    conv.add_argument("--window", type=positive_int, help="smoothing window in logged points (default 2%%)")
    conv.add_argument("--plateau-fraction", type=float, default=0.2, help="tail of the run that defines the plateau")
    add_launcher_options(conv, "local")
    conv.set_defaults(func=_cmd_study_convergence)
    ent = study_sub.add_parser(
        "entropy",
        help="relative entropy between consecutive marginals p(x_{t-1}) and p(x_t)",
        description="Closed-form and Monte Carlo estimates of KL(p_{t-1} || p_t) across t for the data set "
        "under the config's DDPM schedule. Writes OUT/study.jsonl, kl.png and study.md.",
    )
    _add_study_options(ent)
    ent.add_argument("--beta-schedule", choices=BETA_SCHEDULES)
    ent.add_argument("--timesteps", "-T", type=positive_int, metavar="T")
    ent.add_argument("--points", type=positive_int, default=40, help="log-spaced t for the Monte Carlo estimators")
    ent.add_argument(
        "--samples", type=positive_int, help="Monte Carlo draws per t (default 1000000 for mixtures, else 2000)"
    )
    ent.set_defaults(func=_cmd_study_entropy)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers, got {text!r}")
    return seeds


def _add_study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML training config (see configs/); flags below override it")
    p.add_argument("--dataset", help="as for train: digits, mnist5k, gmm, toy2d sets, or a path")
    p.add_argument("--seeds", type=_seed_list, default=[0], help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--out", type=Path, help="output folder (default runs/study_<study>_<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="replace a different study already in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")


def _study_config(args: argparse.Namespace, flags: dict[str, str]) -> tuple[Config, Path]:
    config = resolve_config(args, flags)
    out = args.out or Path("runs") / f"study_{args.study}_{Path(config.data.dataset).name}"
    return config, out


def _cmd_study_convergence(args: argparse.Namespace) -> None:
    from ..study.convergence import run_convergence_study
    from ..study.rule import ConvergenceRule

    flags = {
        "dataset": "data.dataset",
        "objective": "objective.name",
        "weighting": "objective.weighting",
        "intervals": "curriculum.n_clusters",
        "clustering": "curriculum.clustering",
        "max_steps": "train.max_steps",
        "batch_size": "train.batch_size",
    }
    config, out = _study_config(args, flags)
    rule = ConvergenceRule(args.tolerance, args.window, args.plateau_fraction)
    workers = args.workers or os.cpu_count() or 1
    given = slurm_flags(args)
    slurm = None
    if args.launcher == "slurm":
        from ..slurm import SlurmOptions

        slurm = SlurmOptions(cpus_per_run=args.threads).updated(key="", **given)
    elif given:
        raise UserError(f"--{next(iter(given)).replace('_', '-')}: a Slurm option; add --launcher slurm")
    run_convergence_study(
        config,
        out,
        seeds=args.seeds,
        rule=rule,
        workers=workers,
        threads=args.threads,
        overwrite=args.overwrite,
        slurm=slurm,
    )
    print(f"study: {out / 'study.md'} (numbers in {out / 'study.jsonl'})")


def _cmd_study_entropy(args: argparse.Namespace) -> None:
    from ..study.entropy import run_entropy_study

    flags = {"dataset": "data.dataset", "beta_schedule": "objective.beta_schedule", "timesteps": "objective.timesteps"}
    config, out = _study_config(args, flags)
    run_entropy_study(config, out, seeds=args.seeds, points=args.points, samples=args.samples, overwrite=args.overwrite)
    print(f"study: {out / 'study.md'} (numbers in {out / 'study.jsonl'})")
