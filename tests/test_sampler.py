"""The curriculum sampler: draws stay in unlocked clusters, stages progress, exact resume."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum import (
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    EDMNoise,
    FixedPacing,
    FlowMatchingTime,
    cluster_timesteps,
)


def _uniform(T, n):
    return cluster_timesteps(DiscreteSchedule.linear(T), n)


def _in_unlocked(sampler, t):
    ok = torch.zeros_like(t, dtype=torch.bool)
    for i in sampler.unlocked:
        a, b = sampler.clusters[i]
        ok |= (t >= a) & (t < b)
    return bool(ok.all())


@settings(max_examples=50, deadline=None)
@given(
    T=st.integers(2, 400),
    data=st.data(),
    order=st.sampled_from(["easy_to_hard", "hard_to_easy", "random", "none"]),
    cumulative=st.booleans(),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_draws_never_leave_the_unlocked_clusters(T, data, order, cumulative, steps, seed):
    n = data.draw(st.integers(1, min(T, 12)))
    sampler = CurriculumSampler(_uniform(T, n), FixedPacing(steps), order, seed, cumulative=cumulative)
    stages_seen = set()
    for _ in range(steps * (n + 2)):
        t = sampler.sample(32)
        assert t.dtype == torch.long
        assert _in_unlocked(sampler, t)
        stages_seen.add(sampler.stage)
        sampler.observe(1.0)
    assert sampler.finished
    assert sampler.unlocked == list(range(n))
    assert stages_seen == set(range(1, sampler.n_stages + 1))


def test_first_stage_of_each_order():
    clusters = _uniform(1000, 10)
    e2h = CurriculumSampler(clusters, FixedPacing(5), "easy_to_hard")
    h2e = CurriculumSampler(clusters, FixedPacing(5), "hard_to_easy")
    t = e2h.sample(10_000)
    assert t.min() >= 900 and t.max() <= 999
    t = h2e.sample(10_000)
    assert t.min() >= 0 and t.max() <= 99
    none = CurriculumSampler(clusters, order="none")
    assert none.finished and none.n_stages == 1
    t = none.sample(20_000)
    assert t.min() < 10 and t.max() > 990


def test_easy_to_hard_adds_the_next_harder_cluster_each_stage():
    sampler = CurriculumSampler(_uniform(100, 4), FixedPacing(1), "easy_to_hard")
    seen = []
    while True:
        seen.append(sampler.unlocked)
        if sampler.finished:
            break
        sampler.observe(0.0)
    assert seen == [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert sampler.transitions == [(1, 2), (2, 3), (3, 4)]


def test_non_cumulative_trains_one_cluster_then_all():
    sampler = CurriculumSampler(_uniform(100, 3), FixedPacing(1), "easy_to_hard", cumulative=False)
    seen = []
    while not sampler.finished:
        seen.append(sampler.unlocked)
        sampler.observe(0.0)
    seen.append(sampler.unlocked)
    assert seen == [[2], [1], [0], [0, 1, 2]]


def test_random_order_is_seeded_and_a_permutation():
    clusters = _uniform(100, 8)
    a = CurriculumSampler(clusters, FixedPacing(1), "random", seed=5)
    b = CurriculumSampler(clusters, FixedPacing(1), "random", seed=5, rank=3)
    c = CurriculumSampler(clusters, FixedPacing(1), "random", seed=6)
    assert a.cluster_order == b.cluster_order  # same on every rank
    assert sorted(a.cluster_order) == list(range(8))
    assert a.cluster_order != c.cluster_order


def test_draws_are_uniform_over_the_unlocked_timesteps():
    sampler = CurriculumSampler(_uniform(10, 5), FixedPacing(1), "easy_to_hard", seed=1)
    sampler.observe(0.0)  # stage 2: clusters 3 and 4, timesteps 6..9
    counts = torch.bincount(sampler.sample(400_000), minlength=10).double()
    assert counts[:6].sum() == 0
    freq = counts[6:] / counts.sum()
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.005)


def test_ranks_draw_different_streams_and_seeds_reproduce():
    clusters = _uniform(1000, 4)
    r0 = CurriculumSampler(clusters, order="none", seed=1, rank=0).sample(64)
    r1 = CurriculumSampler(clusters, order="none", seed=1, rank=1).sample(64)
    again = CurriculumSampler(clusters, order="none", seed=1, rank=0).sample(64)
    assert not torch.equal(r0, r1)
    assert torch.equal(r0, again)


def test_explicit_generator_is_used():
    sampler = CurriculumSampler(_uniform(1000, 4), order="none")
    a = sampler.sample(16, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_state_dict_round_trip_mid_curriculum_gives_identical_future():
    clusters = cluster_timesteps(DiscreteSchedule.cosine(200), 6, "snr")

    def make():
        return CurriculumSampler(clusters, AdaptivePacing(6, ema=0.5, max_steps_per_stage=20), "random", seed=11)

    g = torch.Generator().manual_seed(0)
    losses = torch.rand(300, generator=g).tolist()
    a = make()
    for loss in losses[:40]:
        t = a.sample(8)
        a.observe(torch.full((8,), loss) + t / 1000, t)
    assert 1 < a.stage < a.n_stages  # genuinely mid-curriculum
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    for loss in losses[40:]:
        ta, tb = a.sample(8), b.sample(8)
        assert torch.equal(ta, tb)
        per_sample = torch.full((8,), loss) + ta / 1000
        assert a.observe(per_sample, ta) == b.observe(per_sample, tb)
        assert a.stage == b.stage
    assert a.transitions == b.transitions
    assert a.stats() == b.stats()


def test_state_dict_survives_torch_save(tmp_path):
    a = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2), seed=3)
    for loss in [1.0, 1.0, 1.0, 1.0]:
        a.observe(loss)
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2), seed=3)
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert b.stage == a.stage and torch.equal(a.sample(10), b.sample(10))


def test_load_state_dict_refuses_other_clusters_or_order():
    a = CurriculumSampler(_uniform(100, 4), FixedPacing(1))
    with pytest.raises(ValueError, match="clusters"):
        CurriculumSampler(_uniform(100, 5), FixedPacing(1)).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="order"):
        CurriculumSampler(_uniform(100, 4), FixedPacing(1), "hard_to_easy").load_state_dict(a.state_dict())


def test_stats_report_histogram_and_cluster_losses():
    sampler = CurriculumSampler(_uniform(10, 2), order="none")
    t = sampler.sample(100)
    loss = (t < 5).double() * 2.0 + 1.0  # cluster 0 loses 3, cluster 1 loses 1
    sampler.observe(loss, t)
    stats = sampler.stats(reset=True)
    assert sum(stats["draw_counts"]) == 100
    assert stats["cluster_loss"] == pytest.approx([3.0, 1.0])
    assert stats["unlocked_intervals"] == [(0, 10)]
    assert sum(sampler.stats()["draw_counts"]) == 0


def test_observe_uses_the_mean_of_per_sample_losses():
    seen = []

    class Spy(FixedPacing):
        def update(self, loss, stage, n_stages):
            seen.append(loss)
            return False

    sampler = CurriculumSampler(_uniform(10, 2), Spy(5))
    sampler.observe(torch.tensor([1.0, 2.0, 6.0]))
    sampler.observe(4.0)
    assert seen == [3.0, 4.0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([(0, 5), (6, 10)], FixedPacing(1)), "tile"),
        (([(0, 5), (5, 5), (5, 10)], FixedPacing(1)), "tile"),
        (([], FixedPacing(1)), "empty"),
        (([(0, 10)], None), "pacing"),
        (([(0, 10)], FixedPacing(1), "backwards"), "unknown order"),
    ],
)
def test_bad_construction_raises(args, match):
    with pytest.raises(ValueError, match=match):
        CurriculumSampler(*args)


@pytest.mark.parametrize("density", [EDMNoise(), FlowMatchingTime(logit_std=1.0), FlowMatchingTime()])
@pytest.mark.parametrize("order", ["easy_to_hard", "hard_to_easy", "random"])
def test_continuous_draws_stay_in_unlocked_clusters(density, order):
    sampler = CurriculumSampler.from_schedule(density, 5, FixedPacing(1), order, seed=2)
    while True:
        x = sampler.sample(5000, dtype=torch.float64)
        ok = torch.zeros_like(x, dtype=torch.bool)
        for i in sampler.unlocked:
            a, b = sampler.clusters[i]
            ok |= (x >= a) & (x <= b)
        assert ok.all()
        if sampler.finished:
            break
        sampler.observe(0.0)


def test_continuous_draws_follow_the_truncated_density():
    density = EDMNoise()
    sampler = CurriculumSampler.from_schedule(density, 4, FixedPacing(1), "easy_to_hard", seed=0)
    sampler.observe(0.0)  # the two noisiest quantile clusters: sigma above the median
    x = sampler.sample(200_000, dtype=torch.float64)
    median = math.exp(-1.2)
    assert (x >= sampler.clusters[2][0]).all()
    assert abs(float(x.log().mean()) - (-1.2 + 1.2 * math.sqrt(2 / math.pi))) < 0.01
    assert sampler.clusters[2][0] == pytest.approx(median, rel=1e-3)
    # equal-mass clusters get equal shares of the draws
    assert sampler.stats()["draw_counts"][2] / 200_000 == pytest.approx(0.5, abs=0.01)


def test_from_schedule_discrete_uses_the_requested_method():
    sched = DiscreteSchedule.linear(100)
    sampler = CurriculumSampler.from_schedule(sched, 4, FixedPacing(1), method="snr")
    assert sampler.clusters == cluster_timesteps(sched, 4, "snr")
