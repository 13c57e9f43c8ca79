"""The speed-up instrument's statistics against hand computations, closed forms and simulation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, ttest_1samp

from diffusion_curriculum.experiments import stats

# ----- steps to a target: interpolation and the running best -------------------------------------------


def test_steps_to_target_interpolates_on_a_log_scale():
    # best 0.6 at step 200, 0.2 at 400: the target 0.4 closes half the gap -> 200 * 2 ** 0.5
    curve = ([100, 200, 400, 800], [1.0, 0.6, 0.2, 0.1])
    assert stats.steps_to_target(curve, 0.4, True) == pytest.approx(200 * math.sqrt(2), abs=1e-9)
    # a quarter of the gap: 200 * 2 ** 0.25; higher is better mirrors it
    assert stats.steps_to_target(curve, 0.5, True) == pytest.approx(200 * 2**0.25, abs=1e-9)
    up = ([100, 200, 400], [0.0, 0.4, 0.8])
    assert stats.steps_to_target(up, 0.6, False) == pytest.approx(200 * math.sqrt(2), abs=1e-9)
    # reached at the first evaluation: that step; never reached: None
    assert stats.steps_to_target(curve, 2.0, True) == 100.0
    assert stats.steps_to_target(curve, 0.05, True) is None
    # the steps need not arrive sorted
    shuffled = ([400, 100, 800, 200], [0.2, 1.0, 0.1, 0.6])
    assert stats.steps_to_target(shuffled, 0.4, True) == pytest.approx(200 * math.sqrt(2), abs=1e-9)


def test_steps_to_target_uses_the_running_best():
    # the curve crosses at 300, bounces back above the target, and the later dip does not count
    noisy = ([100, 200, 300, 400, 500], [1.0, 0.8, 0.3, 0.9, 0.25])
    assert stats.steps_to_target(noisy, 0.5, True) == pytest.approx(200 * 1.5 ** ((0.8 - 0.5) / 0.5), abs=1e-9)
    assert stats.running_best([None, 3.0, 1.0, 2.0, float("nan")], True) == [None, 3.0, 1.0, 1.0, 1.0]
    assert stats.running_best([1.0, 3.0, 2.0, float("inf")], False) == [1.0, 3.0, 3.0, 3.0]


def test_value_at_is_linear_between_evaluations_and_none_outside():
    curve = ([100, 200, 400], [1.0, 0.6, None])
    assert stats.value_at(curve, 150) == pytest.approx(0.8, abs=1e-12)
    assert stats.value_at(curve, 200) == 0.6
    assert stats.value_at(curve, 100) == 1.0
    # outside the finite evaluations (400 has no value): None
    assert stats.value_at(curve, 300) is None
    assert stats.value_at(curve, 50) is None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    a=st.floats(0.01, 100.0),
    b=st.floats(0.05, 3.0),
    s0=st.integers(1, 5000),
    ratio=st.floats(1.01, 20.0),
    u=st.floats(0.0, 1.0),
)
def test_log_log_interpolation_is_exact_on_a_power_law(a, b, s0, ratio, u):
    """E1: v = a * s ** -b evaluated at s0 and s1; in between, value_at(log=True) gives v(s) and
    steps_to_target(log_values=True) gives the exact crossing s* = (a / target) ** (1 / b)."""
    s1 = max(s0 + 1, round(s0 * ratio))
    s = s0 * (s1 / s0) ** u
    power = lambda x: a * x**-b  # noqa: E731
    curve = ([s0, s1, 2 * s1], [power(s0), power(s1), power(2 * s1)])
    assert stats.value_at(curve, s, log=True) == pytest.approx(power(s), rel=1e-9)
    target = power(s)
    crossing = (a / target) ** (1 / b)  # the closed form, = s
    assert stats.steps_to_target(curve, target, True, log_values=True) == pytest.approx(crossing, rel=1e-9)


def test_log_log_interpolation_differs_from_linear_on_a_power_law():
    # v = 1 / s at 100 and 400: log-log gives 1 / 200 at 200 (exact); linear gives 0.01 - 0.0075 / 3
    curve = ([100, 400], [1 / 100, 1 / 400])
    assert stats.value_at(curve, 200, log=True) == pytest.approx(1 / 200, rel=1e-12)
    assert stats.value_at(curve, 200) == pytest.approx(0.01 - 0.0075 / 3, rel=1e-12)
    # the crossing of 1 / 200: log-log gives 200 exactly, linear values on a log step 100 * 4 ** (0.005 / 0.0075)
    assert stats.steps_to_target(curve, 1 / 200, True, log_values=True) == pytest.approx(200, rel=1e-12)
    assert stats.steps_to_target(curve, 1 / 200, True) == pytest.approx(100 * 4 ** (0.005 / 0.0075), rel=1e-12)


# ----- per-pair targets ----------------------------------------------------------------------------------


def test_pair_steps_uses_each_seeds_own_baseline_as_its_target():
    # seed 1's baseline sits twice as high as seed 0's: at step 200 the targets are 0.5 and 1.0
    baseline = {0: ([100, 200, 400], [1.0, 0.5, 0.25]), 1: ([100, 200, 400], [2.0, 1.0, 0.5])}
    method = {0: ([100, 200, 400], [1.0, 0.4, 0.2]), 1: ([100, 200, 400], [2.0, 2.0, 1.0])}
    rows = stats.pair_steps(baseline, method, 200, True)
    assert [(r["baseline_seed"], r["seed"]) for r in rows] == [(0, 0), (1, 1)]
    assert [r["target"] for r in rows] == [0.5, 1.0]
    # each baseline reaches its own target at the target step
    assert [r["baseline_steps"] for r in rows] == [pytest.approx(200.0, abs=1e-9)] * 2
    # seed 0: best 1.0 at 100, 0.4 at 200; 0.5 closes (1 - 0.5) / (1 - 0.4) of the gap -> 100 * 2 ** (5 / 6)
    assert rows[0]["steps"] == pytest.approx(100 * 2 ** (5 / 6), abs=1e-9)
    # seed 1: its own target 1.0 is reached at 400 (a pooled target of 0.75 would give 200 * 2 ** 0.25)
    assert rows[1]["steps"] == pytest.approx(400.0, abs=1e-9)


def test_pair_steps_with_explicit_pairs_and_a_censored_side():
    # an A/A arm: baseline seed 0 against seed 100; the target is baseline seed 0's level
    baseline = {0: ([100, 200], [1.0, 0.5])}
    method = {100: ([100, 200], [0.9, 0.8]), 101: ([100, 200], [0.5, 0.2])}
    rows = stats.pair_steps(baseline, method, 200, True, pairs=[(0, 100), (0, 101)])
    assert [r["target"] for r in rows] == [0.5, 0.5]
    assert rows[0]["steps"] is None and rows[0]["baseline_steps"] == pytest.approx(200.0)
    assert rows[1]["steps"] == 100.0  # reached at the first evaluation
    # the default pairs are the seeds both sides have; a target step outside the baseline: both None
    assert stats.pair_steps(baseline, {0: baseline[0], 5: baseline[0]}, 200, True)[0]["seed"] == 0
    (row,) = stats.pair_steps(baseline, {0: baseline[0]}, 300, True)
    assert row["target"] is None and row["baseline_steps"] is None and row["steps"] is None


def test_baseline_reaches_its_own_target_at_the_target_step_between_evaluations():
    baseline = {0: ([100, 200], [1.0, 0.5])}
    (row,) = stats.pair_steps(baseline, baseline, 150, True)
    # read on a log scale in the step, as crossings are: 1 - 0.5 * log2(1.5)
    assert row["target"] == pytest.approx(1 - 0.5 * math.log2(1.5))
    assert row["baseline_steps"] == pytest.approx(150.0, rel=1e-9)


_POWER_LAWS = {0: (1.0, 0.5), 1: (3.0, 1.0), 2: (0.2, 2.0), 3: (5.0, 0.3), 4: (1.5, 1.5)}


def _power_law_pairs():
    steps = list(range(100, 1001, 100))
    baseline = {s: (steps, [a * x**-b for x in steps]) for s, (a, b) in _POWER_LAWS.items()}
    method = {s: (steps, [a * (2 * x) ** -b for x in steps]) for s, (a, b) in _POWER_LAWS.items()}
    return stats.pair_steps(baseline, method, 700, True, log_values=True)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # the t-test on rounding noise
def test_pair_steps_on_power_laws_gives_the_exact_speedup():
    """Per seed v = a * s ** -b; the method follows the same law at twice the steps, v(s) = a * (2 s) ** -b.
    With log-log interpolation the target (baseline at 700, between evaluations) and both crossings are exact,
    so every pair's ratio is 700 / 350 = 2."""
    params = _POWER_LAWS
    rows = _power_law_pairs()
    for r in rows:
        a, b = params[r["seed"]]
        assert r["target"] == pytest.approx(a * 700**-b, rel=1e-12)
        assert r["baseline_steps"] == pytest.approx(700, rel=1e-9)
        assert r["steps"] == pytest.approx(350, rel=1e-9)
    out = stats.speedup_from_pairs(rows, budget=1000)
    assert out["kind"] == "estimate" and out["n"] == 5
    assert out["speedup"] == pytest.approx(2.0, rel=1e-9)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_ratios_equal_up_to_rounding_give_no_p_value():
    out = stats.speedup_from_pairs(_power_law_pairs(), budget=1000)
    assert out["p"] is None and out["p_reason"]


# ----- E2: balanced denoising over clusters ----------------------------------------------------------------


def test_vector_at_interpolates_each_cluster():
    vectors = [(100, [4.0, 8.0]), (200, [2.0, 4.0]), (300, [1.0, float("nan")]), (400, [1.0, 2.0])]
    assert stats.vector_at(vectors, 150) == pytest.approx([3.0, 6.0], abs=1e-12)
    assert stats.vector_at(vectors, 200) == pytest.approx([2.0, 4.0], abs=1e-12)
    # 300 has a non-finite cluster: left out, so 300 lies between 200 and 400
    assert stats.vector_at(vectors, 300) == pytest.approx([1.5, 3.0], abs=1e-12)
    assert stats.vector_at(vectors, 400) == [1.0, 2.0]
    assert stats.vector_at(vectors, 50) is None and stats.vector_at(vectors, 500) is None


def test_balanced_curve_is_the_mean_log_ratio_over_clusters():
    reference = [2.0, 4.0, 0.5]
    vectors = [
        (100, [4.0, 4.0, 2.0]),  # (log 2 + 0 + log 4) / 3 = log 2
        (200, [1.0, 2.0, 0.5]),  # (log 1/2 + log 1/2 + 0) / 3 = -2/3 log 2
        (300, [1.0, None, 0.5]),  # a missing cluster
        (400, [1.0, 0.0, 0.5]),  # a non-positive cluster
        (500, [1.0, 2.0]),  # a cluster fewer than the reference
        (600, [1.0, float("inf"), 0.5]),  # not finite
    ]
    steps, values = stats.balanced_curve(vectors, reference)
    assert steps == [100, 200, 300, 400, 500, 600]
    assert values[0] == pytest.approx(math.log(2), abs=1e-12)
    assert values[1] == pytest.approx(-2 / 3 * math.log(2), abs=1e-12)
    assert values[2:] == [None, None, None, None]
    # a non-positive reference cluster: no value anywhere
    assert stats.balanced_curve(vectors[:2], [2.0, 0.0, 0.5])[1] == [None, None]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    ref=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=6),
    data=st.data(),
)
def test_balanced_curve_against_numpy(ref, data):
    """S = mean_k log(L_k / L*_k) in float64 numpy; S of the reference itself is 0."""
    vec = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=len(ref), max_size=len(ref)))
    _, values = stats.balanced_curve([(10, vec), (20, ref)], ref)
    expected = float(np.mean(np.log(np.asarray(vec, dtype=np.float64)) - np.log(np.asarray(ref, dtype=np.float64))))
    assert values[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert values[1] == pytest.approx(0.0, abs=1e-12)


def test_e2_steps_to_balance_on_hand_made_cluster_curves():
    """E2 for one pair: L* = the baseline's per-cluster vector at the target step, then steps to S <= 0."""
    baseline = [(100, [4.0, 8.0]), (200, [2.0, 4.0]), (400, [1.0, 2.0])]
    method = [(100, [3.0, 4.0]), (200, [1.0, 4.0]), (400, [0.5, 1.0])]
    reference = stats.vector_at(baseline, 200)
    assert reference == [2.0, 4.0]
    b_curve = stats.balanced_curve(baseline, reference)
    m_curve = stats.balanced_curve(method, reference)
    # baseline S: log 2, 0, -log 2 -> reaches 0 at 200 exactly
    assert stats.steps_to_target(b_curve, 0.0, True) == pytest.approx(200.0, rel=1e-12)
    # method S: (log 1.5 + 0) / 2 at 100, (log 0.5 + 0) / 2 at 200: 0 closes log 1.5 / log 3 of the gap
    expected = 100 * 2 ** (math.log(1.5) / math.log(3))
    assert stats.steps_to_target(m_curve, 0.0, True) == pytest.approx(expected, rel=1e-12)


def test_balanced_pair_steps_uses_each_seeds_own_reference():
    baseline = {0: [(100, [4.0, 8.0]), (200, [2.0, 4.0]), (400, [1.0, 2.0])]}
    baseline[1] = [(s, [2 * x for x in v]) for s, v in baseline[0]]  # seed 1: every cluster twice as high
    method = {0: [(100, [3.0, 4.0]), (200, [1.0, 4.0]), (400, [0.5, 1.0])]}
    method[1] = [(s, [2 * x for x in v]) for s, v in method[0]]
    rows = stats.balanced_pair_steps(baseline, method, 200)
    assert [(r["baseline_seed"], r["seed"]) for r in rows] == [(0, 0), (1, 1)]
    assert [r["target"] for r in rows] == [[2.0, 4.0], [4.0, 8.0]]
    # each seed against its own reference: the same relative curves, so the same steps on both seeds (seed 0's
    # reference on seed 1 would put its S log 2 higher, and neither side would cross at these steps)
    expected = 100 * 2 ** (math.log(1.5) / math.log(3))
    assert [r["baseline_steps"] for r in rows] == [pytest.approx(200.0, rel=1e-12)] * 2
    assert [r["steps"] for r in rows] == [pytest.approx(expected, rel=1e-12)] * 2
    # explicit pairs; a target step outside the baseline, or a reference with a non-positive cluster: both None
    (row,) = stats.balanced_pair_steps(baseline, {7: method[1]}, 200, pairs=[(1, 7)])
    assert row["target"] == [4.0, 8.0] and row["steps"] == pytest.approx(expected, rel=1e-12)
    (row,) = stats.balanced_pair_steps(baseline, method, 800, pairs=[(0, 0)])
    assert row["baseline_steps"] is None and row["steps"] is None
    zero = {0: [(100, [4.0, 8.0]), (200, [0.0, 4.0])]}
    (row,) = stats.balanced_pair_steps(zero, method, 200, pairs=[(0, 0)])
    assert row["baseline_steps"] is None and row["steps"] is None
    out = stats.speedup_from_pairs(rows, budget=400)
    assert out["speedup"] == pytest.approx(200 / expected, rel=1e-12)


# ----- speed-ups: estimates, bounds and censoring ------------------------------------------------------------


def _rows(pairs):
    return [{"baseline_seed": i, "seed": i, "baseline_steps": b, "steps": m} for i, (b, m) in enumerate(pairs)]


def test_speedup_estimate_is_the_geometric_mean_with_a_bootstrap_interval_and_a_t_test():
    # ratios 2, 1.5, 3, 1, 2.5, 1.2: product 27, geometric mean 27 ** (1 / 6) = sqrt(3)
    pairs = [(400, 200), (300, 200), (600, 200), (500, 500), (250, 100), (360, 300)]
    out = stats.speedup_from_pairs(_rows(pairs), budget=1000)
    logs = [math.log(b / m) for b, m in pairs]
    assert out["kind"] == "estimate" and out["n"] == 6 and out["dropped"] == 0
    assert out["speedup"] == pytest.approx(math.sqrt(3), rel=1e-12)
    assert out["test"] == "t" and out["p_reason"] is None
    assert out["p"] == pytest.approx(ttest_1samp(logs, 0.0).pvalue, rel=1e-12)
    assert out["sd_log"] == pytest.approx(float(np.std(logs, ddof=1)), rel=1e-12)
    lo, hi = stats.bootstrap_mean_ci(logs)
    assert out["ci"] == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-12)
    assert out["ci"][0] < out["speedup"] < out["ci"][1]
    assert out["range"] == pytest.approx((1.0, 3.0), rel=1e-12)
    assert (out["faster"], out["slower"], out["ties"]) == (5, 0, 1)
    assert out["censored_method"] == out["censored_baseline"] == 0
    assert [r["log_ratio"] for r in out["pairs"]] == pytest.approx(logs, rel=1e-12)


def test_no_interval_and_no_p_below_five_pairs_only_the_range():
    # ratios 2, 0.5, 4, 1.25: geometric mean 5 ** (1 / 4)
    out = stats.speedup_from_pairs(_rows([(400, 200), (100, 200), (800, 200), (250, 200)]), budget=1000)
    assert out["kind"] == "estimate" and out["n"] == 4
    assert out["speedup"] == pytest.approx(5**0.25, rel=1e-12)
    assert out["ci"] is None and out["p"] is None and isinstance(out["p_reason"], str)
    assert out["range"] == pytest.approx((0.5, 4.0), rel=1e-12)
    assert stats.bootstrap_mean_ci([0.1, 0.2]) is None


def test_all_ratios_equal_gives_no_p_value_and_a_reason():
    out = stats.speedup_from_pairs(_rows([(400, 200)] * 3 + [(300, 150)] * 3), budget=1000)
    assert out["speedup"] == pytest.approx(2.0, rel=1e-12) and out["n"] == 6
    assert out["p"] is None and isinstance(out["p_reason"], str) and out["p_reason"]
    assert out["ci"] is None and out["range"] == pytest.approx((2.0, 2.0))


def test_paired_t_against_scipy_and_its_refusals():
    d = [0.1, 0.25, -0.05, 0.3, 0.2]
    p, why = stats.paired_t(d)
    assert why is None and p == pytest.approx(ttest_1samp(d, 0.0).pvalue, rel=1e-12)
    p, why = stats.paired_t([0.3] * 6)
    assert p is None and isinstance(why, str) and why
    p, why = stats.paired_t([0.1, 0.2, 0.3, 0.4])
    assert p is None and isinstance(why, str) and why


def test_sign_test_against_hand_binomials_and_scipy():
    # 5 of 5: 2 / 2 ** 5; 7 of 9: 2 (1 + 9 + 36) / 2 ** 9; 6 of 8: 2 (1 + 8 + 28) / 2 ** 8
    for wins, losses, hand in [(5, 0, 2 / 32), (7, 2, 92 / 512), (2, 6, 74 / 256), (0, 5, 2 / 32)]:
        p, why = stats.sign_test(wins, losses)
        assert why is None and p == pytest.approx(hand, rel=1e-12)
        assert p == pytest.approx(binomtest(wins, wins + losses, 0.5).pvalue, rel=1e-12)
    p, why = stats.sign_test(3, 1)
    assert p is None and isinstance(why, str)


def test_method_censored_on_some_seeds_is_an_upper_bound_with_a_sign_test():
    budget = 1000
    won = [(400, 200), (500, 250), (300, 200), (600, 300), (450, 150), (700, 350), (200, 100)]
    pairs = [*won, (800, None), (900, None)]  # two method seeds never reach the target: counted at the budget
    out = stats.speedup_from_pairs(_rows(pairs), budget=budget)
    assert out["kind"] == "upper_bound" and out["censored_method"] == 2 and out["censored_baseline"] == 0
    assert out["n"] == 9 and out["dropped"] == 0
    ratios = [b / m for b, m in won] + [800 / budget, 900 / budget]
    assert out["speedup"] == pytest.approx(math.prod(ratios) ** (1 / 9), rel=1e-12)
    assert out["ci"] is None and out["sd_log"] is None
    assert out["range"] == pytest.approx((0.8, 3.0), rel=1e-12)
    # 7 pairs where the method reached the target first, 2 where the baseline did
    assert (out["faster"], out["slower"], out["ties"]) == (7, 2, 0)
    assert out["test"] == "sign"
    assert out["p"] == pytest.approx(binomtest(7, 9, 0.5).pvalue, rel=1e-12)
    assert out["p"] == pytest.approx(92 / 512, rel=1e-12)
    assert [r["censored"] for r in out["pairs"]] == [None] * 7 + ["method"] * 2


def test_baseline_censored_only_is_a_lower_bound():
    budget = 1000
    pairs = [(400, 200), (500, 250), (300, 150), (None, 500), (None, 250), (600, 700)]
    out = stats.speedup_from_pairs(_rows(pairs), budget=budget)
    assert out["kind"] == "lower_bound" and out["censored_baseline"] == 2 and out["censored_method"] == 0
    ratios = [2.0, 2.0, 2.0, budget / 500, budget / 250, 600 / 700]
    assert out["speedup"] == pytest.approx(math.prod(ratios) ** (1 / 6), rel=1e-12)
    assert out["ci"] is None and out["test"] == "sign"
    assert (out["faster"], out["slower"]) == (5, 1)
    assert out["p"] == pytest.approx(binomtest(5, 6, 0.5).pvalue, rel=1e-12)
    assert out["p"] == pytest.approx(2 * 7 / 64, rel=1e-12)


def test_both_kinds_of_censoring_is_undetermined():
    pairs = [(400, 200), (500, 250), (300, 150), (None, 500), (800, None), (600, 300)]
    out = stats.speedup_from_pairs(_rows(pairs), budget=1000)
    assert out["kind"] == "undetermined" and out["speedup"] is None and out["ci"] is None
    assert out["censored_method"] == 1 and out["censored_baseline"] == 1
    assert out["test"] == "sign" and (out["faster"], out["slower"]) == (5, 1)
    assert out["p"] == pytest.approx(binomtest(5, 6, 0.5).pvalue, rel=1e-12)


def test_a_pair_censored_on_both_sides_is_dropped_and_counted():
    pairs = [(400, 200), (300, 150), (500, 250), (600, 300), (200, 100), (None, None)]
    out = stats.speedup_from_pairs(_rows(pairs), budget=1000)
    assert out["dropped"] == 1 and out["n"] == 5
    assert out["kind"] == "estimate" and out["speedup"] == pytest.approx(2.0, rel=1e-12)
    assert out["pairs"][-1]["censored"] == "both" and out["pairs"][-1]["log_ratio"] is None
    assert out["censored_method"] == out["censored_baseline"] == 0
    # nothing but dropped pairs: no speed-up, no test
    none = stats.speedup_from_pairs(_rows([(None, None)] * 3), budget=1000)
    assert none["dropped"] == 3 and none["n"] == 0 and none["kind"] == "none"
    assert none["speedup"] is None and none["p"] is None and none["test"] is None and none["range"] is None


def test_ties_stay_out_of_the_sign_test():
    # a tie (equal steps), 5 method wins, 1 censored method seed: the sign test on 5 wins and 1 loss
    pairs = [(300, 300), (400, 200), (500, 250), (300, 150), (600, 300), (200, 100), (700, None)]
    out = stats.speedup_from_pairs(_rows(pairs), budget=1000)
    assert (out["faster"], out["slower"], out["ties"]) == (5, 1, 1)
    assert out["p"] == pytest.approx(2 * 7 / 64, rel=1e-12)


# ----- a metric at equal steps --------------------------------------------------------------------------


def test_ratio_at_step_on_a_log_scale_for_positive_values():
    base_at = [2.0, 4.0, 1.0, 8.0, 10.0]
    method_at = [1.0, 4.0, 2.0, 2.0, 8.0]  # ratios 0.5, 1, 2, 0.25, 0.8: product 0.2
    base = {s: ([100, 200], [20.0, v]) for s, v in enumerate(base_at)}
    method = {s: ([100, 200], [20.0, v]) for s, v in enumerate(method_at)}
    out = stats.ratio_at_step(base, method, 200)
    logs = [math.log(m / b) for b, m in zip(base_at, method_at, strict=True)]
    assert out["scale"] == "log" and out["n"] == 5 and out["step"] == 200
    assert out["effect"] == pytest.approx(0.2**0.2, rel=1e-12)
    assert out["baseline_mean"] == pytest.approx(640**0.2, rel=1e-12)
    assert out["method_mean"] == pytest.approx(2**1.4, rel=1e-12)
    assert out["diffs"] == pytest.approx(logs, rel=1e-12)
    assert out["p"] == pytest.approx(ttest_1samp(logs, 0.0).pvalue, rel=1e-12) and out["p_reason"] is None
    assert out["range"] == pytest.approx((0.25, 2.0), rel=1e-12)
    assert out["ci"][0] < out["effect"] < out["ci"][1]


def test_ratio_at_step_with_tied_ratios_at_an_evaluated_step():
    base_at = [2.0, 4.0, 1.0, 5.0, 10.0]
    method_at = [1.0, 4.0, 2.0, 2.5, 5.0]  # ratios 0.5, 1, 2, 0.5, 0.5: product 1 / 4
    base = {s: ([100, 200], [20.0, v]) for s, v in enumerate(base_at)}
    method = {s: ([100, 200], [20.0, v]) for s, v in enumerate(method_at)}
    out = stats.ratio_at_step(base, method, 200)
    assert out["effect"] == pytest.approx(0.25**0.2, rel=1e-12)
    assert out["ci"][0] < out["effect"] < out["ci"][1] < 2


def test_value_at_an_evaluated_step_returns_the_evaluation_on_the_log_scale():
    assert stats.value_at(([100, 200], [20.0, 5.0]), 200, log=True) == 5.0
    assert stats.value_at(([100, 200, 400], [20.0, 5.0, 1.0]), 200, log=True) == 5.0


def test_bootstrap_interval_is_not_blown_up_by_ties_up_to_rounding():
    exact = stats.bootstrap_mean_ci([1.0, 1.0, 1.0, 1.0, 2.0])
    assert stats.bootstrap_mean_ci([1.0, 1.0, 1.0, 1.0 + 1e-15, 2.0]) == pytest.approx(exact, abs=1e-6)


def test_ratio_at_step_interpolates_log_log_between_evaluations():
    # baseline 1 / s, method 2 / s ** 2, evaluated at 100 and 400: at 200 exactly 1 / 200 and 1 / 20000
    base = {0: ([100, 400], [1 / 100, 1 / 400])}
    method = {0: ([100, 400], [2 / 100**2, 2 / 400**2])}
    out = stats.ratio_at_step(base, method, 200)
    assert out["scale"] == "log"
    assert out["effect"] == pytest.approx(0.01, rel=1e-9)
    assert out["baseline_mean"] == pytest.approx(1 / 200, rel=1e-9)
    assert out["p"] is None and out["ci"] is None


def test_ratio_at_step_takes_differences_when_a_value_is_not_positive():
    # a log-likelihood: negative values anywhere in the curves switch to differences, linear in the step
    base = {s: ([100, 300], [-2.0, 1.0 + s]) for s in range(5)}  # at 200: (-2 + 1 + s) / 2
    method = {s: ([100, 300], [-1.0, 2.0 + 2 * s]) for s in range(5)}  # at 200: (1 + 2 s) / 2
    out = stats.ratio_at_step(base, method, 200)
    diffs = [(1 + 2 * s) / 2 - (-1 + s) / 2 for s in range(5)]  # 1 + s / 2
    assert out["scale"] == "linear" and out["n"] == 5
    assert out["diffs"] == pytest.approx(diffs, abs=1e-12)
    assert out["effect"] == pytest.approx(2.0, abs=1e-12)
    assert out["baseline_mean"] == pytest.approx(0.5, abs=1e-12)
    assert out["method_mean"] == pytest.approx(2.5, abs=1e-12)
    assert out["range"] == pytest.approx((1.0, 3.0), abs=1e-12)
    assert out["p"] == pytest.approx(ttest_1samp(diffs, 0.0).pvalue, rel=1e-12)


# ----- intervals, Holm, power -----------------------------------------------------------------------------


def test_bootstrap_interval_covers_a_known_ratio_95_percent_of_the_time():
    """1,000 synthetic grids of 8 paired seeds with a true speed-up of 1.5 (log-normal ratios)."""
    rng = np.random.default_rng(12345)
    truth = math.log(1.5)
    covered = 0
    for i in range(1000):
        ci = stats.bootstrap_mean_ci(rng.normal(truth, 0.3, 8), resamples=2000, seed=i)
        covered += ci[0] <= truth <= ci[1]
    assert 930 <= covered <= 970, covered


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.6]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    ps=st.lists(st.integers(1, 1000).map(lambda k: k / 1000), min_size=1, max_size=10),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_holm_rejects_what_the_step_down_procedure_rejects(ps, alpha):
    """Holm's procedure itself: in increasing order, reject while p_(k) <= alpha / (m - k + 1), stop at the
    first that is not; an adjusted p <= alpha must mark exactly those."""
    m = len(ps)
    if any(abs((m - k) * p - alpha) < 1e-12 for k, p in enumerate(sorted(ps))):
        return  # on the boundary float rounding decides; not what this property is about
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        if ps[i] > alpha / (m - k):
            break
        rejected.add(i)
    adjusted = stats.holm(ps)
    assert {i for i, q in enumerate(adjusted) if q <= alpha} == rejected
    assert all(p <= q <= 1.0 for p, q in zip(ps, adjusted, strict=True))


def _power_at_detectable(n, alpha, sd=0.25, grids=20000, seed=2):
    """The rejection rate of a paired t-test at ``alpha`` on ``grids`` synthetic grids of ``n`` pairs whose
    log ratios are normal around the log of the detectable speed-up with sd ``sd``."""
    d = stats.detectable_speedup(sd, n, alpha)
    diffs = np.random.default_rng(seed).normal(math.log(d), sd, (grids, n))
    return float(np.mean(ttest_1samp(diffs, 0.0, axis=1).pvalue < alpha))


@pytest.mark.parametrize("n", [5, 8, 12])
def test_detectable_speedup_has_the_stated_power_at_alpha_5_percent(n):
    """20,000 grids: the standard error of the rate is 0.003, so 0.78-0.82 is a margin of about 7 of them."""
    power = _power_at_detectable(n, 0.05)
    assert 0.78 <= power <= 0.82, power


@pytest.mark.parametrize("n", [5, 8])
def test_detectable_speedup_has_the_stated_power_at_a_holm_alpha(n):
    power = _power_at_detectable(n, 0.05 / 20)
    assert 0.78 <= power <= 0.82, power


def test_detectable_speedup_refuses_without_pairs_or_spread():
    assert stats.detectable_speedup(None, 8, 0.05) is None
    assert stats.detectable_speedup(float("nan"), 8, 0.05) is None
    assert stats.detectable_speedup(0.25, 1, 0.05) is None
    # more pairs detect smaller speed-ups; a stricter alpha needs larger ones
    assert stats.detectable_speedup(0.25, 12, 0.05) < stats.detectable_speedup(0.25, 6, 0.05)
    assert stats.detectable_speedup(0.25, 8, 0.0025) > stats.detectable_speedup(0.25, 8, 0.05) > 1


# ----- small helpers ---------------------------------------------------------------------------------------


def test_mean_std_final_value_mean_curve_and_finite():
    assert stats.mean_std([1.0, 2.0, 4.0, None, float("nan")]) == pytest.approx((7 / 3, math.sqrt(7 / 3)))
    assert stats.mean_std([3.0]) == (3.0, None) and stats.mean_std([]) == (None, None)
    assert stats.final_value(([200, 100], [0.5, 1.0])) == 0.5
    assert stats.final_value(([100, 200], [1.0, None])) is None and stats.final_value(([], [])) is None
    steps, means = stats.mean_curve({0: ([100, 200], [1.0, 3.0]), 1: ([100, 300], [2.0, float("nan")])})
    assert steps == [100, 200] and means == pytest.approx([1.5, 3.0])
    assert [stats.finite(v) for v in (1, 1.5, True, None, float("inf"), "1")] == [True, True] + [False] * 4
