"""``sample``: draw samples from a run's final model (or one of its checkpoints) into a PNG grid or an .npz."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import SOLVERS
from .common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sample`` to the top-level subparsers."""
    sample = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Sample from a run folder's final model (or one of its checkpoints) and write a "
        "PNG grid or an .npz of the raw samples.",
    )
    sample.add_argument("run", type=Path, help="a run folder (runs/NAME) or its model/ folder")
    sample.add_argument("--checkpoint", metavar="latest|PATH", help="use a checkpoint's EMA weights")
    sample.add_argument("--solver", choices=SOLVERS, help="default: the run's")
    sample.add_argument("--steps", type=positive_int, help="solver steps (default: the run's)")
    sample.add_argument("--n", type=positive_int, default=64, help="number of samples")
    sample.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    sample.add_argument("--label", type=int, help="class label for class-conditional models")
    sample.add_argument("--prompt", help="caption for text-conditional models")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", type=Path, required=True, help="output file: .png or .npz")
    sample.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> None:
    from ..sampling import sample_to_file

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
