"""``train`` and ``info``: the run options they share (a config from --config, flags and --set), the config keys
their --help lists, the pacing check both make, and ``info``'s resolved config and cluster table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..names import CONDITIONINGS, OBJECTIVES
from .clusters import cluster_rows, print_clusters
from .common import cluster_numbering, install_hint, missing_extra, positive_int, resolve_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``info`` to the top-level subparsers."""
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


def _config_keys_help() -> str:
    """Every config key with its default, allowed values and meaning, for --set (from the config's own help)."""
    try:
        from ..config import config_reference
    except ModuleNotFoundError as exc:  # --help works in a core-only install
        extra = missing_extra(exc)
        if extra is None:
            raise
        return f"config keys: listed here once the [{extra}] extra is installed ({install_hint(extra)})"

    lines = ["config keys (--set KEY=VALUE, or in the --config YAML file):"]
    for row in config_reference().splitlines()[2:]:
        key, default, allowed, meaning = (cell.strip().strip("`") for cell in row.strip("|").split(" | "))
        allowed = f"; {allowed.replace('`', '')}" if allowed else ""
        lines.append(f"  {key} (default {default}{allowed}): {meaning.replace('`', '')}")
    return "\n".join(lines)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    # these import torch: inside main()'s Ctrl-C handling
    from ..clustering import CLUSTER_METHODS
    from ..pacing import PACING_FUNCTIONS
    from ..samplers import ORDERS, SAMPLERS
    from ..weighting import WEIGHTINGS

    p.add_argument("--config", type=Path, help="YAML config (see configs/); flags below override it")
    p.add_argument(
        "--dataset",
        help="digits, mnist5k, toy2d, swiss_roll, 8gaussians, checkerboard, "
        "moons, gmm, or a path to an image folder / .npz / .npy",
    )
    p.add_argument("--vae", metavar="PATH", help="train on latents of a local diffusers AutoencoderKL folder")
    p.add_argument("--curriculum", choices=ORDERS)
    p.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        help="timestep sampler (curriculum.sampler; its parameters: --set curriculum.sampler_params={...})",
    )
    p.add_argument("--n-clusters", "--clusters", dest="clusters", type=positive_int, help="number of clusters N")
    p.add_argument("--clustering", choices=CLUSTER_METHODS)
    p.add_argument("--pacing", choices=("adaptive", "fixed", *PACING_FUNCTIONS))
    p.add_argument("--patience", type=positive_int, help="adaptive pacing patience (steps)")
    p.add_argument("--weighting", choices=tuple(WEIGHTINGS))
    p.add_argument("--objective", choices=OBJECTIVES)
    p.add_argument(
        "--model",
        metavar="ARCH[-PRESET]",
        help="unet, dit or mlp, optionally with -tiny/-small/-base (e.g. unet-small); or a preset alone",
    )
    p.add_argument("--conditioning", choices=CONDITIONINGS)
    p.add_argument("--max-steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.lr=3e-4 (repeatable)",
    )


def _warn_pacing(config: Any) -> None:
    """Refuse a config whose adaptive pacing cannot fire, or, when it asks for that (it is then fixed
    pacing), say so on stderr."""
    from ..assembly import check_pacing

    warning = check_pacing(config)
    if warning is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"diffusion-curriculum: warning: {warning}", file=sys.stderr)


def _cmd_train(args: argparse.Namespace) -> None:
    config = resolve_config(args)
    from ..training.trainer import Trainer

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

    from ..assembly import build_objective, build_sampler

    config = resolve_config(args)
    _warn_pacing(config)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    objective = build_objective(config)
    sampler = build_sampler(config, objective, rank=0)
    if config.curriculum.sampler == "curriculum":
        print(f"\npacing: {sampler.pacing!r}, watching the {sampler.signal} signal")
        if sampler.pacing is not None and sampler.n_stages > 1:
            print(_curriculum_span_line(sampler, config))
        start = f"order {sampler.order}, first unlocked: cluster {sampler.cluster_order[0]}"
    else:
        print(f"\nsampler: {sampler!r}")
        start = "share: of the first batch"
    space = objective.noise_space()
    unit = "timesteps" if sampler.T is not None else ("sigma" if objective.name == "edm" else "t")
    print(f"\nclusters ({unit}; {cluster_numbering(sampler.n_clusters)}; {start}):")
    print_clusters(cluster_rows(space, sampler.clusters), sampler.T is not None, sampler.stats()["cluster_probs"])


def _curriculum_span_line(sampler: Any, config: Any) -> str:
    """When the sampler's pacing can have every timestep in play (:func:`~..pacing.pacing_span`), as steps and
    as shares of the budget ``train.max_steps``, in one line: a curriculum that can outlast the budget is
    named with the setting that bounds it, and a patience or cap derived from the budget fraction says so."""
    from ..pacing import AdaptivePacing, pacing_span

    budget, cur = config.train.max_steps, config.curriculum
    earliest, latest = pacing_span(sampler.pacing, sampler.n_stages - 1)
    if earliest == latest:
        line = f"curriculum phase: every timestep in play at step {earliest:,} ({earliest / budget:.1%} of "
        return line + f"train.max_steps={budget:,})"
    line = f"curriculum phase: every timestep in play no earlier than step {earliest:,} ({earliest / budget:.1%}"
    if latest is None:
        line += f" of train.max_steps={budget:,}) and with no cap on its stages"
    else:
        line += f") and no later than step {latest:,} ({latest / budget:.1%} of train.max_steps={budget:,})"
    if latest is None or latest > budget:
        line += "; it can take the whole budget: curriculum.budget_fraction bounds its share"
    if isinstance(sampler.pacing, AdaptivePacing) and cur.budget_fraction is not None:
        derived = ["the per-stage cap"] if cur.max_steps_per_stage is None else []
        derived += ["the patience"] if cur.patience is None else []
        if derived:
            line += f"; {' and '.join(derived)} from curriculum.budget_fraction={cur.budget_fraction}"
    return line
