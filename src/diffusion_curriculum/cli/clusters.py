"""``clusters``: the timestep clusters of a DDPM schedule with their SNR range, and the cluster table that ``info``
prints too (one computation and one layout for both)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError
from .common import cluster_numbering, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``clusters`` to the top-level subparsers."""
    # these import torch: inside main()'s Ctrl-C handling
    from ..clustering import CLUSTER_METHODS
    from ..schedules import BETA_SCHEDULES

    clusters = sub.add_parser(
        "clusters",
        help="print the timestep clusters of a schedule",
        description="Print the timestep clusters of the trainer's DDPM schedule (objective.beta_schedule; cosine "
        "is squaredcos_cap_v2) with their SNR range: cluster 0 (least noise, t near 0; the hardest) to cluster "
        "N-1 (most noise; the easiest), the numbering of info, the logs and the report.",
    )
    clusters.add_argument(
        "--schedule",
        choices=(*BETA_SCHEDULES, "cosine"),
        default="linear",
        help="objective.beta_schedule (cosine: squaredcos_cap_v2)",
    )
    clusters.add_argument("--timesteps", "-T", type=positive_int, default=1000, metavar="T")
    clusters.add_argument("--n-clusters", "-n", type=positive_int, default=20, metavar="N")
    clusters.add_argument("--method", choices=CLUSTER_METHODS, default="uniform")
    clusters.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clusters.set_defaults(func=_cmd_clusters)


def _cmd_clusters(args: argparse.Namespace) -> None:
    from ..clustering import cluster_timesteps
    from ..schedules import DiscreteSchedule

    beta_schedule = "squaredcos_cap_v2" if args.schedule == "cosine" else args.schedule
    schedule = DiscreteSchedule.ddpm(beta_schedule, args.timesteps)
    if args.n_clusters > schedule.T:
        raise UserError(f"--n-clusters {args.n_clusters} exceeds --timesteps {schedule.T}")
    rows = cluster_rows(schedule, cluster_timesteps(schedule, args.n_clusters, args.method))
    if args.json:
        print(json.dumps(rows))
        return
    print(f"clusters (timesteps of the {beta_schedule} schedule, T = {schedule.T}; {cluster_numbering(len(rows))}):")
    print_clusters(rows, discrete=True)


def cluster_rows(space: Any, clusters: list[tuple]) -> list[dict[str, Any]]:
    """Each cluster's index (0 = least noise), bounds, and SNR at its less and its more noisy end, from the noise
    space's own ``snr``: the one computation behind ``info`` and ``clusters``."""
    import torch

    from ..schedules import DiscreteSchedule

    rows = []
    for i, (a, b) in enumerate(clusters):
        if isinstance(space, DiscreteSchedule):
            high, low = float(space.snr[a]), float(space.snr[b - 1])
        else:
            high, low = (float(v) for v in space.snr(torch.tensor([a, b], dtype=torch.float64)))
        rows.append({"cluster": i, "start": a, "stop": b, "snr_high": high, "snr_low": low})
    return rows


def print_clusters(rows: list[dict[str, Any]], discrete: bool, shares: list[float] | None = None) -> None:
    """The cluster table: index, range (half-open for timesteps), SNR range and, for ``info``, each share."""
    print(f"{'cluster':>7} {'range':>22} {'SNR from':>11} {'to':>11}" + (f" {'share':>7}" if shares else ""))
    for r in rows:
        a, b = r["start"], r["stop"]
        span = f"[{a}, {b})" if discrete else f"[{a:.4g}, {b:.4g}]"
        share = f" {shares[r['cluster']]:>7.3f}" if shares else ""
        print(f"{r['cluster']:>7} {span:>22} {r['snr_high']:>11.4g} {r['snr_low']:>11.4g}{share}")
