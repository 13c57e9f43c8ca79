"""Variance-optimal importance sampling (samplers/variance_importance.py) against independent references: the
weighted mean of many draws is the uniform mean; the effective-sample-size floor holds and bounds the weights;
one stratified grid over the global batch gives every bin floor or ceil of its quota; the running second moment
is the exact mean of squares while its window is not full; and it moves within tens of steps where loss
importance sampling is still uniform. The balanced variant estimates sum_b pi_b log L_b's gradient: by hand for
losses constant in each bin, and by many draws."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum import DiscreteSchedule, LossImportance, VarianceImportance, cluster_timesteps
from diffusion_curriculum.errors import UserError
from diffusion_curriculum.samplers.variance_importance import ess_fraction, mix_for_ess

F64 = torch.float64
T, K = 1000, 10
CLUSTERS = cluster_timesteps(DiscreteSchedule.linear(T), K)


def _table(hard: int | None = None) -> torch.Tensor:
    """A fixed per-timestep mean loss: falling with t like a diffusion loss, one cluster 10x harder if asked."""
    t = torch.arange(T, dtype=F64)
    loss = 0.02 + 0.5 * torch.exp(-t / 80)
    if hard is not None:
        loss[hard * (T // K) : (hard + 1) * (T // K)] *= 10
    return loss


def _feed(sampler, table: torch.Tensor, steps: int, batch: int = 64, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        t = sampler.sample(batch)
        noise = -torch.log1p(-torch.rand(batch, generator=g, dtype=F64))  # exponential, mean 1, like a chi^2 loss
        sampler.observe(table[t] * noise, t)


def test_the_weighted_mean_of_many_draws_is_the_uniform_mean():
    """After adapting, freeze the density: the importance-weighted mean of 400,000 draws of a per-timestep loss
    table equals the table's uniform mean within four standard errors, and no weight exceeds the largest the
    density allows."""
    table = _table()
    sampler = VarianceImportance(CLUSTERS, seed=3)
    _feed(sampler, table, 100)
    assert not torch.allclose(sampler.bin_probs(), sampler.bin_shares)  # it moved away from uniform
    draws = torch.cat([sampler.sample(4000) for _ in range(100)])
    weights = sampler.loss_weights(draws).to(F64)
    values = weights * table[draws]
    se = float(values.std() / math.sqrt(values.numel()))
    assert abs(float(values.mean()) - float(table.mean())) < 4 * se
    assert float(weights.max()) <= sampler.max_weight + 1e-6
    assert ess_fraction(sampler.bin_shares, sampler.bin_probs()) >= sampler.min_ess - 1e-9


@settings(max_examples=60, deadline=None)
@given(
    target=st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=12),
    min_ess=st.floats(0.05, 0.99),
)
def test_the_mixing_weight_is_the_smallest_that_meets_the_ess_floor(target, min_ess):
    """Against a brute-force scan of lambda on a grid of 2,001 points (float64)."""
    q = torch.tensor(target, dtype=F64)
    q = q / q.sum()
    pi = torch.full_like(q, 1.0 / q.numel())
    lam = mix_for_ess(pi, q, min_ess)
    assert ess_fraction(pi, (1 - lam) * q + lam * pi) >= min_ess - 1e-9
    grid = torch.linspace(0, 1, 2001, dtype=F64)
    ok = [float(x) for x in grid if ess_fraction(pi, (1 - x) * q + x * pi) >= min_ess]
    assert ok and abs(min(ok) - lam) <= 1 / 2000 + 1e-9


def test_ess_fraction_is_the_weights_own_ess():
    """(sum w)^2 / (n sum w^2) over an exact population of draws in proportion to p."""
    p = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    pi = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    population = torch.repeat_interleave(torch.arange(3), torch.tensor([50, 30, 20]))  # 100 draws, shares p
    w = pi[population] / p[population]
    assert ess_fraction(pi, p) == pytest.approx(float(w.sum() ** 2 / (w.numel() * (w**2).sum())), rel=1e-12)


@pytest.mark.parametrize(("world", "batch"), [(2, 64), (3, 17), (4, 5), (8, 64)])
def test_one_stratified_grid_over_the_global_batch_gives_every_bin_floor_or_ceil_of_its_quota(world, batch):
    """R ranks in the same state: their draws together hold floor(B p_b) or ceil(B p_b) of each bin, B = R x
    batch, and no rank's draws are another's (each keeps every R-th draw of the one grid)."""
    table = _table(hard=0)
    ranks = [VarianceImportance(CLUSTERS, seed=9, rank=r, world_size=world) for r in range(world)]
    for step in range(5):  # the same observations on every rank: the state after a reduce over ranks
        t = torch.arange(step, T, 7)
        for sampler in ranks:
            sampler.observe(table[t], t)
    probs = ranks[0].bin_probs()
    assert all(torch.equal(s.bin_probs(), probs) for s in ranks) and not torch.allclose(probs, ranks[0].bin_shares)
    for _ in range(20):
        draws = [s.sample(batch) for s in ranks]
        counts = torch.bincount(torch.cat([s.cluster_of(d) for s, d in zip(ranks, draws, strict=True)]), minlength=K)
        quota = world * batch * probs
        assert bool(((counts >= torch.floor(quota)) & (counts <= torch.ceil(quota))).all()), (counts, quota)
        assert all(d.numel() == batch for d in draws)


def test_the_running_second_moment_is_the_exact_mean_of_squares_until_the_window_fills():
    sampler = VarianceImportance(CLUSTERS, seed=1, history=10)  # a window of 10 x 100 losses per cluster
    seen: list[list[float]] = [[] for _ in range(K)]
    g = torch.Generator().manual_seed(4)
    for _ in range(6):
        t = torch.randint(0, T, (64,), generator=g)
        loss = torch.rand(64, generator=g, dtype=F64) * (1 + t / 100)
        sampler.observe(loss, t)
        for ti, li in zip(t.tolist(), loss.tolist(), strict=True):
            seen[ti // 100].append(li * li)
    for k in range(K):
        assert len(seen[k]) < 1000
        assert float(sampler._m2[k]) == pytest.approx(sum(seen[k]) / len(seen[k]), rel=1e-12)


def test_it_moves_within_50_steps_where_loss_importance_sampling_is_still_uniform():
    """One cluster 10x harder: at batch 64, within 50 steps the harder cluster's draw share has risen well above
    its base share (0.1); Improved DDPM's sampler, waiting for 10 losses at each of 1,000 timesteps, has not
    moved."""
    table = _table(hard=5)
    mine, theirs = VarianceImportance(CLUSTERS, seed=2), LossImportance(CLUSTERS, seed=2)
    _feed(mine, table, 50)
    _feed(theirs, table, 50)
    assert float(mine.cluster_probs()[5]) > 0.2
    assert torch.allclose(theirs.cluster_probs(), theirs.base_shares)


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(UserError, match="world_size"):
        VarianceImportance(CLUSTERS, rank=2, world_size=2)


def test_balanced_with_losses_constant_in_each_bin_draws_uniformly_and_weights_by_the_harmonic_mean():
    """Each bin's losses all equal L_b: m1 = L_b and m2 = L_b^2, so the balanced base is pi_b / L_b / Z (Z =
    sum_c pi_c / L_c), the draw target base x sqrt(m2) is pi itself, no mixing is needed, and the weight of bin b
    is 1 / (L_b Z): the weighted loss of every bin is 1 / Z, the harmonic mean of the bins' losses (by hand)."""
    levels = torch.tensor([1 / (1 + k / 3) for k in range(K)], dtype=F64)  # 1 down to 0.25: weights' ESS 0.87
    sampler = VarianceImportance(CLUSTERS, balance=True, seed=1)
    for _ in range(30):
        t = sampler.sample(64)
        sampler.observe(levels[sampler.cluster_of(t)], t)
    pi = sampler.bin_shares
    z = float((pi / levels).sum())
    assert torch.allclose(sampler.bin_probs(), pi, rtol=1e-12, atol=0) and sampler.mix == 0.0
    t = torch.arange(T)
    weights = sampler.loss_weights(t).to(F64)
    assert torch.allclose(weights, 1.0 / (levels[sampler.cluster_of(t)] * z), rtol=1e-6)
    assert math.isclose(float((weights * levels[sampler.cluster_of(t)]).mean()), 1.0 / z, rel_tol=1e-6)


def test_balanced_weighted_mean_of_many_draws_is_the_balanced_objective():
    """After adapting, freeze the density: the weighted mean of 400,000 draws of a per-timestep loss table equals
    sum_b base_b L_b (the balanced objective's value at the running means, base_b = pi_b / m1_b normalised)
    within four standard errors; the weights' mean is 1 under the draws; the ESS floor holds for that base."""
    table = _table(hard=7)
    sampler = VarianceImportance(CLUSTERS, balance=True, seed=5)
    _feed(sampler, table, 100)
    bins = sampler.cluster_of(torch.arange(T))
    per_bin = torch.zeros(K, dtype=F64).index_add_(0, bins, table) / torch.bincount(bins, minlength=K).to(F64)
    m1 = sampler._m1
    base = sampler.bin_shares / m1 / (sampler.bin_shares / m1).sum()
    draws = torch.cat([sampler.sample(4000) for _ in range(100)])
    weights = sampler.loss_weights(draws).to(F64)
    values = weights * table[draws]
    se = float(values.std() / math.sqrt(values.numel()))
    assert abs(float(values.mean()) - float((base * per_bin).sum())) < 4 * se
    assert abs(float(weights.mean()) - 1.0) < 4 * float(weights.std() / math.sqrt(weights.numel()))
    assert ess_fraction(base, sampler.bin_probs()) >= sampler.min_ess - 1e-9
    assert float(base[0]) < float(sampler.bin_shares[0]) < float(base[-1])  # low noise (large loss) weighs less
