"""``evaluate``: score a fixed set of samples from a run's final model (or every checkpoint), write
RUN/eval.jsonl and RUN/eval.png, and print each record in words (or as JSON lines)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..names import SOLVERS
from .common import cluster_numbering, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the top-level subparsers."""
    evaluate = sub.add_parser(
        "evaluate",
        help="score a run's samples (FID, KID, precision/recall, class accuracy; exact metrics for synthetic data)",
        description="Generate a fixed set of samples (fixed count, seed and solver) from a run's final model, "
        "or from every checkpoint with --all-checkpoints, score them and write RUN/eval.jsonl and RUN/eval.png.",
    )
    evaluate.add_argument("run", type=Path, help="a run folder")
    evaluate.add_argument("--all-checkpoints", action="store_true", help="evaluate every kept checkpoint")
    evaluate.add_argument("--n", type=positive_int, default=2000, help="samples per evaluation")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--solver", choices=SOLVERS, help="default: the run's")
    evaluate.add_argument("--steps", type=positive_int, help="solver steps (default: the run's)")
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


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from ..evaluation import EvalSettings, evaluate_run

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
    from ..evaluation import feature_space
    from ..metrics.directions import lower_is_better

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
        lines.append(f"  held-out denoising loss per cluster ({cluster_numbering(len(losses))}): {shown}")
    return "\n".join(lines)
