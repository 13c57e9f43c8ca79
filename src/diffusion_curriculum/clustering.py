"""Group timesteps (or continuous noise levels) into contiguous clusters of denoising tasks.

This is the first step of the curriculum of Kim, Go, Kwon & Kim, "Denoising Task Difficulty-based
Curriculum for Training Diffusion Models" (ICLR 2025, arXiv 2403.10348): the timesteps (or noise
levels) are divided into N clusters C_1, ..., C_N, the difficulty of the denoising tasks rising
from C_N (easiest, noisiest) to C_1 (hardest). Clusters come back sorted by noise ascending:
index 0 is the paper's C_1 (t near 0) and index N-1 is C_N.

The clusterings are contiguous intervals, as in the interval clustering of Go et al., "Addressing
Negative Transfer in Diffusion Models" (ANT, NeurIPS 2023, arXiv 2306.00354), which splits the
timesteps 1..T into k contiguous intervals minimising a sum of per-interval costs by dynamic
programming (ANT offers timestep-, SNR- and gradient-based costs); its SNR-based cost is the
``"snr"`` method here. ``"uniform"`` splits into equal timestep counts; ``"log_snr"`` and the
continuous ``"quantile"`` split are this package's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import UserError
from .schedules import ContinuousNoise, DiscreteSchedule

__all__ = [
    "CLUSTER_METHODS",
    "cluster_noise_levels",
    "cluster_timesteps",
    "snr_cluster_cost",
    "validate_discrete_clusters",
]

CLUSTER_METHODS = ("uniform", "snr", "log_snr")


def cluster_timesteps(schedule: DiscreteSchedule, n_clusters: int, method: str = "uniform") -> list[tuple[int, int]]:
    """Split timesteps 0..T-1 into ``n_clusters`` half-open intervals ``(start, stop)``.

    The clusters C_1..C_N of Kim et al. (arXiv 2403.10348), as indices 0..N-1 (0 = C_1, the
    cleanest). Methods:
      - ``"uniform"``: equal counts; sizes differ by at most 1 (start_i = floor(i T / N)).
      - ``"snr"``: the exact interval dynamic program of ANT (Go et al. 2023, arXiv 2306.00354)
        with its SNR-based cost, minimising sum over clusters of sum_t |SNR(t) - SNR(center)|,
        center the middle timestep.
      - ``"log_snr"``: equal width in log-SNR; where a bin would hold no timestep its edge
        is moved by the fewest steps needed so that every cluster is non-empty.
    """
    T = schedule.T
    if not isinstance(n_clusters, int) or isinstance(n_clusters, bool):
        raise UserError(f"n_clusters must be an int, got {type(n_clusters).__name__}")
    if n_clusters < 1 or n_clusters > T:
        raise UserError(f"n_clusters must be between 1 and T={T}, got {n_clusters}")
    if method == "uniform":
        edges = [(i * T) // n_clusters for i in range(n_clusters + 1)]
    elif method == "snr":
        edges = _snr_dp_edges(schedule.snr, n_clusters)
    elif method == "log_snr":
        edges = _log_snr_edges(schedule.log_snr, n_clusters)
    else:
        raise UserError(f"unknown clustering method {method!r}; choose from {CLUSTER_METHODS}")
    return [(edges[i], edges[i + 1]) for i in range(n_clusters)]


def snr_cluster_cost(snr: Tensor, start: int, stop: int) -> float:
    """ANT's SNR-based cost (Go et al. 2023, arXiv 2306.00354) of one cluster [start, stop):
    sum_t |SNR(t) - SNR(center)|, center the middle timestep (the lower one for even sizes; for
    monotone SNR either gives the same cost)."""
    center = (start + stop - 1) // 2
    seg = snr[start:stop].to(torch.float64)
    return float((seg - snr[center]).abs().sum())


def _snr_cost_matrix(snr: Tensor) -> Tensor:
    """cost[a, b] of cluster [a, b) for all 0 <= a < b <= T in O(T^2) via prefix sums.

    Uses that SNR is non-increasing in t (DiscreteSchedule guarantees it): timesteps before
    the center lie above SNR(center), those after it below.
    """
    T = snr.numel()
    prefix = torch.zeros(T + 1, dtype=torch.float64)
    prefix[1:] = torch.cumsum(snr, 0)
    a = torch.arange(T + 1).unsqueeze(1)
    b = torch.arange(T + 1).unsqueeze(0)
    valid = b > a
    m = ((a + b - 1) // 2).clamp(0, T - 1)
    s_m = snr[m]
    above = (prefix[m] - prefix[a.expand_as(m)]) - (m - a) * s_m
    below = (b - m - 1) * s_m - (prefix[b.expand_as(m)] - prefix[(m + 1).clamp(max=T)])
    cost = above + below
    return torch.where(valid, cost, torch.full_like(cost, float("inf")))


def _snr_dp_edges(snr: Tensor, n: int) -> list[int]:
    if not torch.isfinite(snr).all():
        raise UserError(
            "the 'snr' clustering needs finite SNR at every timestep; this schedule has "
            "alphas_cumprod of exactly 1 (SNR=inf) somewhere, use 'uniform' or 'log_snr'"
        )
    T = snr.numel()
    cost = _snr_cost_matrix(snr.to(torch.float64))
    best = cost[0].clone()  # best[b]: optimal cost of [0, b) in k clusters, here k = 1
    back = []
    for _ in range(1, n):
        total = best.unsqueeze(1) + cost  # total[a, b] = best[a] + cost[a, b]
        best, arg = total.min(dim=0)
        back.append(arg)
    edges = [T]
    for arg in reversed(back):
        edges.append(int(arg[edges[-1]]))
    edges.append(0)
    return edges[::-1]


def _log_snr_edges(log_snr: Tensor, n: int) -> list[int]:
    T = log_snr.numel()
    finite = log_snr[torch.isfinite(log_snr)]
    if finite.numel() == 0:
        raise UserError("the 'log_snr' clustering needs at least one finite log-SNR")
    top, bottom = finite.max(), finite.min()
    levels = top - (top - bottom) * torch.arange(1, n, dtype=torch.float64) / n
    # log-SNR is non-increasing, so the count of timesteps at or above a level is an edge.
    raw = (log_snr.unsqueeze(0) >= levels.unsqueeze(1)).sum(1).tolist()
    edges = [0]
    for k, e in enumerate(raw, start=1):
        edges.append(min(max(int(e), edges[-1] + 1), T - (n - k)))
    edges.append(T)
    return edges


def validate_discrete_clusters(clusters: Sequence[tuple[int, int]], T: int | None = None) -> int:
    """Check that ``clusters`` are non-empty half-open intervals tiling 0..T-1 in order; return T."""
    if len(clusters) == 0:
        raise UserError("clusters must not be empty")
    prev = 0
    for i, (start, stop) in enumerate(clusters):
        if int(start) != start or int(stop) != stop:
            raise UserError(f"cluster {i} has non-integer bounds {(start, stop)}")
        if start != prev or stop <= start:
            raise UserError(
                f"clusters must tile 0..T-1 in ascending order without gaps; cluster {i} is "
                f"{(start, stop)} after a cluster ending at {prev}"
            )
        prev = stop
    if T is not None and prev != T:
        raise UserError(f"clusters end at {prev}, but the schedule has T={T}")
    return int(prev)


def cluster_noise_levels(
    density: ContinuousNoise, n_clusters: int, method: str = "quantile"
) -> list[tuple[float, float]]:
    """Split a continuous noise variable's range [lo, hi] into ``n_clusters`` intervals.

    The continuous counterpart of :func:`cluster_timesteps`, for the noise levels (e.g. EDM's
    sigma) that Kim et al. (arXiv 2403.10348) cluster as they do timesteps.

    ``"quantile"``: each interval holds equal probability mass under the training density,
    so every stage adds the same share of training draws. Sorted by noise ascending.
    """
    if not isinstance(n_clusters, int) or isinstance(n_clusters, bool) or n_clusters < 1:
        raise UserError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if method != "quantile":
        raise UserError(f"unknown noise-level clustering method {method!r}; choose 'quantile'")
    u = torch.arange(n_clusters + 1, dtype=torch.float64) / n_clusters
    edges = density.icdf(u).tolist()
    edges[0], edges[-1] = float(density.lo), float(density.hi)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise UserError(f"n_clusters={n_clusters} is too many for this density: some quantiles coincide")
    return [(edges[i], edges[i + 1]) for i in range(n_clusters)]
