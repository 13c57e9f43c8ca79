"""How long the curriculum's stages last under adaptive pacing, and what ended each one.

Trains a config (``configs/gmm.yaml``, ``configs/digits_uncond.yaml``, ...) for a few seeds with
``diffusion-curriculum train``'s own code, sample grids and periodic checkpoints off, and reads the
stage changes back from each run's ``metrics.jsonl`` (``stage_changes``: step, new stage, cause).
Prints, per stage, the mean length over the seeds (the stage trains the clusters unlocked so far;
stage k of the easy-to-hard order adds cluster C_{N-k+1}), the step at which the last stage began
(the length of the curriculum phase) and the share of stage changes that patience triggered rather
than the per-stage cap. Sample quality is not looked at.

Run::

    OMP_NUM_THREADS=1 python benchmarks/stage_lengths.py configs/gmm.yaml --seeds 0,1,2 --max-steps 1000
    OMP_NUM_THREADS=1 python benchmarks/stage_lengths.py configs/digits_uncond.yaml --seeds 0,1,2 --max-steps 1000

Extra ``--set KEY=VALUE`` options override config keys as for ``train``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from diffusion_curriculum.config import load_config, parse_override
from diffusion_curriculum.training.trainer import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Stage lengths and their causes under adaptive pacing.")
    p.add_argument("config", type=Path, help="a training config YAML")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--max-steps", type=int, default=1000, help="training steps per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def stage_changes(metrics: Path) -> list[tuple[int, int, str]]:
    """Every (step, new stage, cause) of a run, from its metrics.jsonl."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [tuple(change) for line in lines for change in line["stage_changes"]]


def run_seed(config_path: Path, seed: int, max_steps: int, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    """One training run; its stage lengths (in order) and causes."""
    config = load_config(
        config_path,
        {
            **overrides,
            "seed": seed,
            "out": str(out),
            "train.max_steps": max_steps,
            "train.sample_every": None,
            "train.checkpoint_every": None,
        },
    )
    start = time.perf_counter()
    train(config, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    changes = stage_changes(out / "metrics.jsonl")
    lengths, previous = [], 0
    for step, _, _ in changes:
        lengths.append(step - previous)
        previous = step
    n_stages = config.curriculum.n_clusters if config.curriculum.cumulative else config.curriculum.n_clusters + 1
    return {
        "seed": seed,
        "lengths": lengths,
        "causes": [cause for _, _, cause in changes],
        "finished": len(changes) == n_stages - 1,
        "last_stage_from": previous if len(changes) == n_stages - 1 else None,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every seed, print the table, optionally write JSON; returns the results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = dict(parse_override(text) for text in args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(args.config, s, args.max_steps, overrides, Path(tmp) / f"seed{s}") for s in seeds]
    n = max(len(r["lengths"]) for r in runs)
    per_stage = []
    for k in range(n):
        values = [r["lengths"][k] for r in runs if len(r["lengths"]) > k]
        per_stage.append({"stage": k + 1, "mean": statistics.mean(values), "runs": len(values)})
    causes = [c for r in runs for c in r["causes"]]
    result = {
        "config": str(args.config),
        "overrides": overrides,
        "max_steps": args.max_steps,
        "runs": runs,
        "per_stage": per_stage,
        "patience_share": causes.count("patience") / len(causes) if causes else None,
    }
    print(f"{args.config} seeds {seeds}, {args.max_steps} steps, overrides {overrides}")
    print("stage  mean length  (runs)")
    for row in per_stage:
        print(f"{row['stage']:>5}  {row['mean']:>11.1f}  ({row['runs']})")
    for r in runs:
        print(
            f"seed {r['seed']}: curriculum over at step {r['last_stage_from']}, "
            f"{r['causes'].count('patience')}/{len(r['causes'])} changes from patience, {r['seconds']:.0f} s"
        )
    print(f"share of stage changes from patience: {causes.count('patience')}/{len(causes)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
