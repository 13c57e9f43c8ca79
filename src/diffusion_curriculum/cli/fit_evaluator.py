"""``fit-evaluator``: train the network whose features the image metrics use, either the shipped classifier of a
built-in data set again or a classifier or autoencoder for the user's own images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from .common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fit-evaluator`` to the top-level subparsers."""
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
    fit.add_argument("--downsample", type=positive_int, default=1, help="as data.downsample of the runs (default 1)")
    fit.add_argument("--epochs", type=positive_int, help="default: about 1,500 steps, 1 to 30 epochs (own data)")
    fit.add_argument("--overwrite", action="store_true", help="replace an evaluator already in --out (own data)")
    fit.set_defaults(func=_cmd_fit_evaluator)


def _cmd_fit_evaluator(args: argparse.Namespace) -> None:
    from ..metrics.evaluator import EVALUATOR_DATASETS, fit_evaluator

    if args.dataset in EVALUATOR_DATASETS:
        if args.downsample != 1:
            raise UserError(
                f"--downsample: the shipped {args.dataset} evaluator is fitted at full size; "
                f"to fit one at another size, save the data as an .npz and pass its path"
            )
        record = fit_evaluator(args.dataset, seed=args.seed, epochs=args.epochs, out_dir=args.out)
        print(json.dumps(record))
        return
    from ..metrics.fitted import fit_user_evaluator

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
