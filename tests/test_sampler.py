"""The curriculum sampler: draws stay in unlocked clusters and are stratified, stages progress, the
watched signal, exact resume."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from diffusion_curriculum import (
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    EDMNoise,
    FixedPacing,
    FlowMatchingTime,
    cluster_timesteps,
)
from diffusion_curriculum.errors import UserError
from diffusion_curriculum.samplers import SIGNALS, stratified_counts


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
    assert sampler.transitions == [(1, 2, "fixed"), (2, 3, "fixed"), (3, 4, "fixed")]


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


# ----- stratified draws ---------------------------------------------------------------------------
def _expected_extra(quotas: torch.Tensor) -> list[float]:
    """E[counts - floor(quotas)] of stratified_counts by brute force: its counts are piecewise constant
    in the offset, changing only where offset + k meets a cumulative fractional part, so averaging them
    at the midpoints of those pieces, weighted by the pieces' lengths, integrates the offset exactly."""
    frac = quotas - torch.floor(quotas)
    cuts = sorted({0.0, 1.0, *[float(c) % 1.0 for c in torch.cumsum(frac, 0)]})
    expected = torch.zeros_like(quotas)
    for lo, hi in itertools.pairwise(cuts):
        if hi > lo:
            expected += (hi - lo) * (stratified_counts(quotas, (lo + hi) / 2) - torch.floor(quotas))
    return expected.tolist()


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=12),
    batch=st.integers(0, 700),
    offset=st.floats(0.0, 1.0, exclude_max=True),
)
def test_stratified_counts_are_floor_or_ceil_sum_to_the_batch_and_are_unbiased(sizes, batch, offset):
    quotas = (batch * torch.tensor(sizes)).to(torch.float64) / sum(sizes)
    counts = stratified_counts(quotas, offset)
    assert counts.dtype == torch.long and int(counts.sum()) == batch
    assert (counts >= torch.floor(quotas)).all() and (counts <= torch.ceil(quotas)).all()
    frac = (quotas - torch.floor(quotas)).tolist()
    assert _expected_extra(quotas) == pytest.approx(frac, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 500),
    data=st.data(),
    method=st.sampled_from(["uniform", "snr", "log_snr"]),
    cumulative=st.booleans(),
    batch=st.integers(0, 300),
    seed=st.integers(0, 2**31),
)
def test_every_batch_gives_each_unlocked_cluster_its_exact_share(T, data, method, cumulative, batch, seed):
    n = data.draw(st.integers(1, min(T, 10)))
    clusters = cluster_timesteps(DiscreteSchedule.linear(T), n, method)
    sampler = CurriculumSampler(clusters, FixedPacing(1), "random", seed, cumulative=cumulative)
    for _ in range(data.draw(st.integers(0, sampler.n_stages - 1))):
        sampler.observe(1.0)
    sizes = {i: clusters[i][1] - clusters[i][0] for i in sampler.unlocked}
    total = sum(sizes.values())
    for _ in range(3):
        t = sampler.sample(batch)
        assert _in_unlocked(sampler, t)
        for i, size in sizes.items():
            count = int(((t >= clusters[i][0]) & (t < clusters[i][1])).sum())
            assert (batch * size) // total <= count <= -(-(batch * size) // total), (i, count)


@pytest.mark.parametrize("density", [EDMNoise(), FlowMatchingTime(logit_std=1.0)])
@pytest.mark.parametrize("batch", [1, 7, 64, 250])
def test_continuous_batches_give_each_cluster_its_share_of_the_mass(density, batch):
    sampler = CurriculumSampler.from_schedule(density, 6, FixedPacing(1), "easy_to_hard", seed=4)
    for _ in range(2):
        sampler.observe(0.0)  # stage 3: the three noisiest equal-mass clusters, a third each
    for _ in range(5):
        before = torch.tensor(sampler.stats()["draw_counts"])
        sampler.sample(batch, dtype=torch.float64)
        counts = torch.tensor(sampler.stats()["draw_counts"]) - before
        assert counts[:3].sum() == 0 and counts.sum() == batch
        assert ((counts[3:] == batch // 3) | (counts[3:] == -(-batch // 3))).all(), counts


def test_draws_are_uniform_within_each_cluster_chi_square():
    """Stratification fixes how many draws each cluster gets; within a cluster they must stay uniform.
    Unequal clusters (snr clustering) at stage 3, 4,000 batches of 48, fixed seed; Pearson's
    chi-square per cluster against the uniform counts."""
    clusters = cluster_timesteps(DiscreteSchedule.linear(200), 5, "snr")
    sampler = CurriculumSampler(clusters, FixedPacing(1), "easy_to_hard", seed=12)
    sampler.observe(0.0)
    sampler.observe(0.0)
    counts = torch.zeros(200, dtype=torch.long)
    for _ in range(4000):
        counts += torch.bincount(sampler.sample(48), minlength=200)
    for i in sampler.unlocked:
        a, b = clusters[i]
        observed = counts[a:b].double().numpy()
        assert observed.sum() > 0
        assert chisquare(observed).pvalue > 1e-3, f"cluster {i} [{a}, {b}) is not uniform"


# ----- the watched signal -------------------------------------------------------------------------
class _Spy(FixedPacing):
    """A pacing that records what it is given and never advances."""

    def __init__(self):
        super().__init__(10**9)
        self.seen = []

    def update(self, loss, stage, n_stages):
        self.seen.append(loss)
        return False


def _losses_for(t: torch.Tensor) -> torch.Tensor:
    return 0.01 + (1000 - t).double() ** 2 / 1e5  # falls with the noise level, by orders of magnitude


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_watched_signal_against_a_brute_force_computation(signal):
    clusters = _uniform(1000, 5)
    spy = _Spy()
    sampler = CurriculumSampler(clusters, spy, "easy_to_hard", seed=2, signal=signal)
    sampler.stage = 3  # clusters 2, 3, 4; the newest is 2
    sampler._refresh()
    t = sampler.sample(40)
    loss = _losses_for(t)
    sampler.observe(loss, t)
    means = {}
    for i in (2, 3, 4):
        a, b = clusters[i]
        in_cluster = [float(x) for x, ti in zip(loss, t, strict=True) if a <= ti < b]
        means[i] = sum(in_cluster) / len(in_cluster)
    expected = {
        "geomean": math.exp(sum(math.log(m) for m in means.values()) / 3),
        "newest": means[2],
        "mean": float(loss.mean()),
    }[signal]
    assert spy.seen == [pytest.approx(expected, rel=1e-12)]
    sampler.observe(float(loss.mean()))  # without timesteps: the scalar as given
    assert spy.seen[1] == pytest.approx(float(loss.mean()), rel=1e-12)


def test_geomean_signal_moves_by_the_nth_root_when_one_cluster_is_rescaled():
    """Each cluster's loss enters relative to its own level: multiplying one cluster's losses by k
    multiplies the geometric mean of n clusters by k**(1/n), whatever the cluster's scale."""
    clusters = _uniform(1000, 4)
    spies = [_Spy(), _Spy()]
    samplers = [CurriculumSampler(clusters, spy, "none", seed=5, signal="geomean") for spy in spies]
    for s in samplers:
        s.stage, s.n_stages = 1, 2  # let the pacing see "none"'s single stage
    t = samplers[0].sample(64)
    loss = _losses_for(t)
    samplers[0].observe(loss, t)
    rescaled = torch.where(t < 250, 7.0 * loss, loss)  # cluster 0 only
    samplers[1].observe(rescaled, t)
    assert spies[1].seen[0] == pytest.approx(spies[0].seen[0] * 7.0 ** (1 / 4), rel=1e-12)


def test_unknown_signal_is_refused():
    with pytest.raises(UserError, match="signal"):
        CurriculumSampler(_uniform(100, 2), FixedPacing(1), signal="median")


# ----- causes, the pacing's view, old states --------------------------------------------------------
def test_stage_changes_record_their_cause_and_stats_show_the_pacing_signal():
    pacing = AdaptivePacing(3, ema=None, max_steps_per_stage=8)
    sampler = CurriculumSampler(_uniform(100, 3), pacing, "easy_to_hard")
    for loss in [1.0, 1.0, 1.0, 1.0]:  # flat: patience 3 fires at step 4
        sampler.observe(loss)
    assert sampler.transitions == [(4, 2, "patience")]
    assert sampler.stats()["pacing"] == {"signal": 1.0, "best": 1.0, "counter": 3}  # the view that ended stage 1
    for i in range(8):  # always improving: the cap of 8 ends stage 2
        sampler.observe(1.0 / (i + 2))
        if i < 7:
            assert sampler.stats()["pacing"] == {"signal": 1.0 / (i + 2), "best": 1.0 / (i + 2), "counter": 0}
    assert sampler.transitions == [(4, 2, "patience"), (12, 3, "cap")]
    sampler.observe(1.0)
    assert sampler.finished and sampler.stats()["pacing"] is None  # nothing is watched any more
    assert CurriculumSampler(_uniform(100, 3), order="none").stats()["pacing"] is None


def test_state_round_trip_restores_causes_and_the_pacing_view():
    a = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2, ema=0.5), seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(9):
        t = a.sample(8)
        a.observe(_losses_for(t) * (1 + torch.rand(8, generator=g, dtype=torch.float64)), t)
    assert a.transitions and all(c == "patience" for _, _, c in a.transitions)
    b = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2, ema=0.5), seed=1)
    b.load_state_dict(a.state_dict())
    assert b.transitions == a.transitions
    sa, sb = a.stats(), b.stats()
    assert sa.pop("cluster_loss") == pytest.approx(sb.pop("cluster_loss"), nan_ok=True)
    assert sa == sb and sa["pacing"] is not None


def test_a_format_1_state_loads_with_unknown_causes():
    """A sampler state saved before stage changes had causes (format 1: two-element transitions, the
    pacing state of the EMA seeded with the first loss) still loads."""
    a = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2, ema=0.5), seed=1)
    old = a.state_dict() | {
        "format": 1,
        "stage": 3,
        "step": 20,
        "transitions": [[6, 2], [13, 3]],
        "pacing": {"best": 0.4, "smoothed": 0.45, "bad_steps": 1, "steps_in_stage": 7},
    }
    del old["pacing_snapshot"]
    b = CurriculumSampler(_uniform(100, 4), AdaptivePacing(2, ema=0.5), seed=1)
    b.load_state_dict(old)
    assert b.transitions == [(6, 2, None), (13, 3, None)]
    assert (b.stage, b.step, b.pacing.best, b.pacing.bad_steps) == (3, 20, 0.4, 1)
    assert b.stats()["pacing"] is None
    b.observe(0.45)  # continues: not an improvement on 0.4, so patience 2 ends stage 3
    assert b.transitions[-1] == (21, 4, "patience")
