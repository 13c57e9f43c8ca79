"""Command-line interface. Argument parsing and error messages only; the work lives elsewhere.

Every user error ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .clustering import CLUSTER_METHODS, cluster_timesteps
from .schedules import DiscreteSchedule

SCHEDULES = {
    "linear": DiscreteSchedule.linear,
    "cosine": DiscreteSchedule.cosine,
    "scaled_linear": DiscreteSchedule.scaled_linear,
}


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffusion-curriculum",
        description="Denoising-task-difficulty curricula for diffusion models (Kim et al., ICLR 2025).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    clusters = sub.add_parser(
        "clusters",
        help="print the timestep clusters of a schedule",
        description="Print the timestep clusters C_1 (hardest, t near 0) ... C_N (easiest) "
        "with their SNR range.",
    )
    clusters.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear")
    clusters.add_argument("--timesteps", "-T", type=_positive_int, default=1000, metavar="T")
    clusters.add_argument("--n-clusters", "-n", type=_positive_int, default=20, metavar="N")
    clusters.add_argument("--method", choices=CLUSTER_METHODS, default="uniform")
    clusters.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clusters.set_defaults(func=_cmd_clusters)
    return parser


def _cmd_clusters(args: argparse.Namespace) -> None:
    schedule = SCHEDULES[args.schedule](T=args.timesteps)
    if args.n_clusters > schedule.T:
        raise UsageError(f"--n-clusters {args.n_clusters} exceeds --timesteps {schedule.T}")
    found = cluster_timesteps(schedule, args.n_clusters, args.method)
    rows = [
        {
            "cluster": i + 1,
            "start": a,
            "stop": b,
            "snr_high": float(schedule.snr[a]),
            "snr_low": float(schedule.snr[b - 1]),
        }
        for i, (a, b) in enumerate(found)
    ]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'cluster':>7} {'timesteps':>13} {'SNR from':>11} {'to':>11}")
    for r in rows:
        span = f"[{r['start']}, {r['stop']})"
        print(f"{'C_' + str(r['cluster']):>7} {span:>13} {r['snr_high']:>11.4g} {r['snr_low']:>11.4g}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusion-curriculum`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError) as exc:
        print(f"diffusion-curriculum: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
