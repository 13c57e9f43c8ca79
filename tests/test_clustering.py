"""Clustering: tiling, optimality of the SNR dynamic program, equal-mass quantiles."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum import (
    DiscreteSchedule,
    EDMNoise,
    FlowMatchingTime,
    cluster_noise_levels,
    cluster_timesteps,
)
from diffusion_curriculum.clustering import snr_cluster_cost


def test_uniform_T1000_N20_is_the_papers_split():
    clusters = cluster_timesteps(DiscreteSchedule.linear(1000), 20)
    assert clusters == [(50 * i, 50 * (i + 1)) for i in range(20)]


def _assert_tiles(clusters, T):
    assert clusters[0][0] == 0 and clusters[-1][1] == T
    for (_, b), (c, _) in itertools.pairwise(clusters):
        assert b == c
    assert all(b > a for a, b in clusters)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 300), data=st.data(), method=st.sampled_from(["uniform", "snr", "log_snr"]))
def test_every_method_tiles_exactly(T, data, method):
    n = data.draw(st.integers(1, T))
    sched = DiscreteSchedule.cosine(T) if T > 1 else DiscreteSchedule.from_alphas_cumprod(torch.tensor([0.5]))
    clusters = cluster_timesteps(sched, n, method)
    assert len(clusters) == n
    _assert_tiles(clusters, T)
    if method == "uniform":
        sizes = [b - a for a, b in clusters]
        assert max(sizes) - min(sizes) <= 1


def _brute_force_best_cost(snr, n):
    T = snr.numel()
    best = float("inf")
    for cuts in itertools.combinations(range(1, T), n - 1):
        edges = [0, *cuts, T]
        cost = sum(snr_cluster_cost(snr, a, b) for a, b in itertools.pairwise(edges))
        best = min(best, cost)
    return best


@pytest.mark.parametrize("T", [5, 8, 11])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("make", [DiscreteSchedule.linear, DiscreteSchedule.cosine])
def test_snr_clusters_are_optimal_against_brute_force(T, n, make):
    sched = make(T)
    clusters = cluster_timesteps(sched, n, "snr")
    _assert_tiles(clusters, T)
    cost = sum(snr_cluster_cost(sched.snr, a, b) for a, b in clusters)
    best = _brute_force_best_cost(sched.snr, n)
    assert cost == pytest.approx(best, rel=1e-12, abs=1e-9)


def test_snr_clusters_on_a_random_monotone_schedule():
    g = torch.Generator().manual_seed(3)
    ac = torch.sort(torch.rand(10, generator=g, dtype=torch.float64) * 0.98 + 0.01, descending=True).values
    sched = DiscreteSchedule.from_alphas_cumprod(ac)
    clusters = cluster_timesteps(sched, 3, "snr")
    cost = sum(snr_cluster_cost(sched.snr, a, b) for a, b in clusters)
    assert cost == pytest.approx(_brute_force_best_cost(sched.snr, 3), rel=1e-12)


def test_snr_method_refuses_infinite_snr():
    sched = DiscreteSchedule.from_alphas_cumprod(torch.tensor([1.0, 0.5, 0.1]))
    with pytest.raises(ValueError, match="finite SNR"):
        cluster_timesteps(sched, 2, "snr")


def test_log_snr_clusters_have_equal_width_where_possible():
    sched = DiscreteSchedule.linear(1000)
    clusters = cluster_timesteps(sched, 10, "log_snr")
    ls = sched.log_snr
    width = (ls[0] - ls[-1]) / 10
    # Each boundary timestep is the first one below its log-SNR level.
    for k, (a, _) in enumerate(clusters[1:], start=1):
        level = ls[0] - k * width
        assert ls[a] < level <= ls[a - 1]


@pytest.mark.parametrize("n", [0, -1, 11])
def test_bad_cluster_counts_raise(n):
    with pytest.raises(ValueError):
        cluster_timesteps(DiscreteSchedule.linear(10), n)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown clustering method"):
        cluster_timesteps(DiscreteSchedule.linear(10), 2, "kmeans")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    density=st.sampled_from(
        [
            EDMNoise(),
            EDMNoise(sigma_min=0.01, sigma_max=10, p_mean=0.0, p_std=2.0),
            FlowMatchingTime(),
            FlowMatchingTime(logit_mean=0.5, logit_std=1.0),
        ]
    ),
)
def test_quantile_clusters_have_equal_mass(n, density):
    clusters = cluster_noise_levels(density, n)
    assert clusters[0][0] == density.lo and clusters[-1][1] == density.hi
    masses = [float(density.cdf(torch.tensor(b)) - density.cdf(torch.tensor(a))) for a, b in clusters]
    assert max(abs(m - 1 / n) for m in masses) < 1e-6
    for (_, b), (c, _) in itertools.pairwise(clusters):
        assert b == c
