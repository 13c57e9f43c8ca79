"""The decision rule a preset fixes before its runs (verdict.decide, verdict.margin): helps / hurts on the Holm p
and the interval, no effect when the interval lies inside the equivalence margin, else undecided with the
pairs that would decide it; and the plan keys that name Holm's family, refused when wrong."""

import math

import pytest

from diffusion_curriculum.config import ConfigError
from diffusion_curriculum.experiments.grid import VerdictPlan, verdict_plan
from diffusion_curriculum.experiments.report.verdict import rule_cell, rule_decision, seeds_to_decide


def _estimate(speedup: float, ci: tuple[float, float], sd_log: float = 0.1, faster: int = 8, n: int = 16) -> dict:
    return {"kind": "estimate", "speedup": speedup, "ci": ci, "sd_log": sd_log, "faster": faster, "slower": n - faster}


@pytest.mark.parametrize(
    ("r", "p", "expected"),
    [
        (_estimate(1.3, (1.2, 1.5)), 0.01, "helps"),
        (_estimate(0.7, (0.6, 0.8)), 0.01, "hurts"),
        (_estimate(1.3, (1.2, 1.5)), 0.06, "undecided"),  # the interval alone is not enough: Holm p must pass
        (_estimate(1.0, (0.95, 1.05)), 0.9, "no effect within ±10%"),
        (_estimate(1.0, (0.92, 1.09)), 0.9, "no effect within ±10%"),
        (_estimate(1.0, (0.90, 1.05)), 0.9, "undecided"),  # 0.90 < 1/1.1 = 0.909
        (_estimate(1.05, (0.98, 1.11)), 0.2, "undecided"),  # 1.11 > 1.10
        ({"kind": "upper_bound", "speedup": 0.6, "ci": None, "faster": 1, "slower": 12}, 0.01, "hurts"),
        ({"kind": "upper_bound", "speedup": 0.6, "ci": None, "faster": 1, "slower": 12}, 0.2, "undecided"),
        ({"kind": "lower_bound", "speedup": 1.6, "ci": None, "faster": 12, "slower": 1}, 0.01, "helps"),
    ],
)
def test_the_rule_decides_as_written(r, p, expected):
    assert rule_decision(r, p, 0.10, 0.0125)["decision"] == expected


def test_an_undecided_estimate_says_how_many_seeds_would_decide_it_and_a_bound_does_not():
    undecided = rule_decision(_estimate(1.0, (0.9, 1.12), sd_log=0.1), 0.9, 0.10, 0.05)
    assert undecided == {"decision": "undecided", "seeds_needed": 7}
    assert rule_cell(undecided) == "undecided, about 7 seeds would decide it"
    bound = rule_decision({"kind": "upper_bound", "speedup": 0.9, "ci": None, "faster": 6, "slower": 7}, 0.8, 0.1, 0.05)
    assert bound == {"decision": "undecided", "seeds_needed": None} and rule_cell(bound) == "undecided"
    assert rule_cell(None) == "—"


def test_seeds_to_decide_matches_the_t_intervals_by_hand():
    """Hand values (t quantiles from tables): no effect with sd 0.1 needs t_{.975,n-1} 0.1 / sqrt(n) < log 1.1 =
    0.0953: n = 6 gives 2.571 x 0.0408 = 0.105, n = 7 gives 2.447 x 0.0378 = 0.0925. A mean log speed-up of 0.5
    at alpha 0.0125 needs the half-width below 0.5: n = 3 gives 8.86 x 0.0577 = 0.512, n = 4 gives 0.270."""
    assert seeds_to_decide(0.0, 0.1, 0.10, 0.05) == 7
    assert seeds_to_decide(0.5, 0.1, 0.10, 0.0125) == 4
    assert seeds_to_decide(math.log(1.1), 0.0, 0.10, 0.05) is None  # no spread: no planning
    assert seeds_to_decide(0.001, 10.0, 0.10, 0.05, most=50) is None  # beyond the bound asked for


def test_the_plan_reads_family_holm_decide_and_margin():
    plan = verdict_plan(
        {"primary": ["e1", "e2"], "per_cluster": "excess_error", "family": ["a", "b"], "holm": "per_endpoint",
         "decide": "e1", "margin": 0.1}
    )  # fmt: skip
    assert plan == VerdictPlan(("e1", "e2"), "t", "excess_error", ("a", "b"), "per_endpoint", "e1", 0.1)
    assert verdict_plan({"primary": ["e1"]}).family is None and verdict_plan(None).holm == "joint"
    assert verdict_plan({"contrasts": [["a", "b"], ["b", "a"]]}).contrasts == (("a", "b"), ("b", "a"))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"family": []}, "verdict.family"),
        ({"family": ["a", "a"]}, "verdict.family"),
        ({"family": "a"}, "verdict.family"),
        ({"holm": "bonferroni"}, "verdict.holm"),
        ({"decide": "loss"}, "verdict.decide"),  # not a primary endpoint
        ({"margin": 0}, "verdict.margin"),
        ({"margin": 1.5}, "verdict.margin"),
        ({"margins": 0.1}, "verdict: expected a mapping"),
        ({"contrasts": [["a", "a"]]}, "verdict.contrasts"),  # a method against itself
        ({"contrasts": [["a"]]}, "verdict.contrasts"),
        ({"contrasts": [["a", "b"], ["a", "b"]]}, "verdict.contrasts"),
        ({"contrasts": ["a", "b"]}, "verdict.contrasts"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_key(extra, needle):
    with pytest.raises(ConfigError) as info:
        verdict_plan({"primary": ["e1"], **extra})
    assert str(info.value).startswith(needle)
