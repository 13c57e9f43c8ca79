"""Budget-aware pacing (``curriculum.budget_fraction`` f): fixed pacing and pacing functions put every timestep in
play at exactly round(f x train.max_steps), adaptive pacing by then at the latest, with a patience derived from
its stage cap unless one is set; a resume in the middle of the phase continues exactly; `info` states the
phase's share of the budget for every pacing; a fraction that cannot hold the stages, or beside the length it
replaces, is refused in one line."""

import io
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diffusion_curriculum.assembly import build_objective, build_sampler
from diffusion_curriculum.cli import main
from diffusion_curriculum.config import ConfigError, load_config
from diffusion_curriculum.pacing import (
    AdaptivePacing,
    budget_stage_lengths,
    first_comparison_step,
    pacing_span,
    shortest_adaptive_stage,
)

BATCH = 16
EMA = load_config().curriculum.ema  # the default smoothing, which these configs keep


def _sampler(pacing: str, fraction: float, max_steps: int, n_clusters: int, **curriculum):
    overrides = {
        "curriculum.pacing": pacing,
        "curriculum.budget_fraction": fraction,
        "curriculum.n_clusters": n_clusters,
        "train.max_steps": max_steps,
        **{f"curriculum.{k}": v for k, v in curriculum.items()},
    }
    config = load_config(overrides=overrides)
    return build_sampler(config, build_objective(config), rank=0)


def _improving(step: int, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A loss that falls 5% a step at every timestep: more than the 2% margin, so patience never fires."""
    return (t.double() + 1) / 1000 * 0.95**step


def _noisy(step: int, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A loss with no trend: patience fires whenever it will."""
    return 0.5 + torch.rand(t.shape, generator=g, dtype=torch.float64)


def _train(sampler, steps: range, loss, seed: int = 0) -> list[torch.Tensor]:
    """Draw from the sampler's own stream and report ``loss`` for each of ``steps`` (its noise a function of the
    step, so that a resumed run sees the losses an unbroken one saw); the draws made."""
    draws = []
    for step in steps:
        t = sampler.sample(BATCH)
        sampler.observe(loss(step, t, torch.Generator().manual_seed(seed * 100_003 + step)), t)
        draws.append(t)
    return draws


def _all_in_play_at(sampler) -> int | None:
    """The step after which every timestep is in play (the step of the last stage change), None if not yet."""
    return sampler.transitions[-1][0] if sampler.finished else None


@settings(max_examples=25, deadline=None)
@given(
    pacing=st.sampled_from(["fixed", "linear"]),
    fraction=st.sampled_from([0.05, 0.1, 0.2, 0.35, 1.0]),
    max_steps=st.integers(200, 1200),
    n_clusters=st.integers(2, 10),
)
def test_fixed_and_linear_pacing_put_every_timestep_in_play_at_exactly_the_budget_fraction(
    pacing, fraction, max_steps, n_clusters
):
    phase = round(fraction * max_steps)
    sampler = _sampler(pacing, fraction, max_steps, n_clusters)
    assert pacing_span(sampler.pacing, n_clusters - 1) == (phase, phase)
    _train(sampler, range(phase - 1), _noisy)
    assert not sampler.finished
    _train(sampler, range(phase - 1, phase), _noisy)
    assert _all_in_play_at(sampler) == phase and len(sampler.transitions) == n_clusters - 1


@settings(max_examples=25, deadline=None)
@given(
    fraction=st.sampled_from([0.1, 0.2, 0.35, 1.0]),
    max_steps=st.integers(400, 1500),
    n_clusters=st.integers(2, 6),
    noisy=st.booleans(),
)
@example(fraction=0.1, max_steps=480, n_clusters=5, noisy=True)  # cap 12: a quarter (3) could not fire, 2 can
@example(fraction=0.1, max_steps=400, n_clusters=5, noisy=False)  # cap 10: under the EMA warm-up plus one step
def test_adaptive_pacing_puts_every_timestep_in_play_by_the_budget_fraction_at_the_latest(
    fraction, max_steps, n_clusters, noisy
):
    phase = round(fraction * max_steps)
    cap = math.floor(fraction * max_steps / (n_clusters - 1))
    warm_up = first_comparison_step(EMA)
    if cap < warm_up + 1:  # no patience can end a stage before the cap: refused, naming the fraction
        with pytest.raises(ConfigError, match=r"^curriculum\.budget_fraction: adaptive pacing cannot fire"):
            _sampler("adaptive", fraction, max_steps, n_clusters)
        return
    sampler = _sampler("adaptive", fraction, max_steps, n_clusters)
    assert isinstance(sampler.pacing, AdaptivePacing) and sampler.pacing.max_steps_per_stage == cap
    # derived (no patience was set): a quarter of the cap, or the most that can still fire before the cap
    assert sampler.pacing.patience == max(1, min(cap // 4, cap - warm_up))
    assert shortest_adaptive_stage(sampler.pacing.patience, EMA) <= cap
    assert pacing_span(sampler.pacing, n_clusters - 1)[1] <= phase
    _train(sampler, range(phase), _noisy if noisy else _improving)
    at = _all_in_play_at(sampler)
    assert at is not None and at <= phase
    if not noisy:  # a loss that keeps improving holds every stage to its cap
        assert at == (n_clusters - 1) * cap
        assert {cause for _, _, cause in sampler.transitions} == {"cap"}


def test_a_patience_that_is_set_is_kept_beside_the_budget_fraction():
    sampler = _sampler("adaptive", 0.2, 4000, 10, patience=20)
    assert (sampler.pacing.patience, sampler.pacing.max_steps_per_stage) == (20, 88)


@pytest.mark.parametrize(("pacing", "loss"), [("fixed", _noisy), ("linear", _noisy), ("adaptive", _noisy)])
def test_a_resume_in_the_middle_of_the_phase_continues_exactly(pacing, loss):
    """Stop a third of the way through the phase, save the sampler's state through torch.save with
    weights_only loading, restore it into a fresh sampler: its draws and stage changes equal the unbroken run's."""
    args = (pacing, 0.3, 600, 6)
    whole = _sampler(*args)
    draws = _train(whole, range(400), loss)
    first = _sampler(*args)
    _train(first, range(60), loss)
    assert 1 < first.stage < first.n_stages  # mid-phase
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = _sampler(*args)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rest = _train(resumed, range(60, 400), loss)
    assert all(torch.equal(a, b) for a, b in zip(draws[60:], rest, strict=True))
    assert resumed.transitions == whole.transitions and _all_in_play_at(whole) <= 180


@pytest.mark.parametrize(
    ("pacing", "fraction", "needle"),
    [
        ("fixed", 0.05, "at step 100 (5.0% of train.max_steps=2,000)"),
        ("linear", 0.1, "at step 200 (10.0% of train.max_steps=2,000)"),
        ("root", 0.2, "at step 400 (20.0% of train.max_steps=2,000)"),
        ("adaptive", 0.2, "no later than step 399 (20.0% of train.max_steps=2,000)"),
    ],
)
def test_info_states_the_phase_s_share_of_the_budget_for_every_pacing(capsys, pacing, fraction, needle):
    assert (
        main(["info", "--set", f"curriculum.pacing={pacing}", "--set", f"curriculum.budget_fraction={fraction}"]) == 0
    )
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("curriculum phase: ")]
    assert needle in line
    if pacing == "adaptive":  # 20 clusters: 19 stages of at most int(400 / 19) = 21 steps, patience 21 // 4
        assert line.endswith("; the per-stage cap and the patience from curriculum.budget_fraction=0.2")
        assert "no earlier than step 285 (14.2%)" in line  # 19 x (10 steps of EMA warm-up + patience 5)


@pytest.mark.parametrize(
    ("curriculum", "needle"),
    [
        ({"pacing": "fixed", "steps_per_stage": 5}, "curriculum.steps_per_stage: set it or curriculum.budget_fraction"),
        ({"pacing": "linear", "pacing_steps": 5}, "curriculum.pacing_steps: set it or curriculum.budget_fraction"),
        ({"max_steps_per_stage": 50}, "curriculum.max_steps_per_stage: set it or curriculum.budget_fraction"),
        ({"budget_fraction": 1.5}, "curriculum.budget_fraction"),
        ({"budget_fraction": 0}, "curriculum.budget_fraction"),
    ],
)
def test_a_budget_fraction_beside_the_length_it_replaces_or_out_of_range_is_refused(curriculum, needle):
    with pytest.raises(ConfigError) as info:
        load_config(
            overrides={"curriculum.budget_fraction": 0.1, **{f"curriculum.{k}": v for k, v in curriculum.items()}}
        )
    assert str(info.value).startswith(needle) and "\n" not in str(info.value)


def test_a_fraction_too_short_for_its_stages_is_refused_in_one_line(capsys):
    # 0.005 of 2,000 steps is 10 steps for 19 fixed stages of at least one step
    args = ["info", "--set", "curriculum.pacing=fixed", "--set", "curriculum.budget_fraction=0.005"]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "diffusion-curriculum: error: curriculum.budget_fraction: 0.005 of train.max_steps: 10 steps"
    )
    # adaptive pacing there: a 1-step cap leaves patience no room to fire, refused as cap-only pacing
    assert main(["info", "--set", "curriculum.budget_fraction=0.005"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "adaptive pacing cannot fire" in line and "curriculum.budget_fraction=0.005" in line


@pytest.mark.parametrize(("phase", "stages"), [(10, 3), (9, 3), (1, 1), (100, 7), (7, 7)])
def test_budget_stage_lengths_split_the_phase_as_evenly_as_whole_steps_allow(phase, stages):
    lengths = budget_stage_lengths(phase, stages)
    assert sum(lengths) == phase and len(lengths) == stages and max(lengths) - min(lengths) <= 1


def _arm_ends(name: str) -> tuple[object, dict[str, tuple[str, tuple[int, int | None]]]]:
    """A preset's grid and, per curriculum arm of its first seed, its order and pacing span."""
    from pathlib import Path

    from diffusion_curriculum.assembly import build_pacing
    from diffusion_curriculum.experiments import load_grid, preset_path

    grid = load_grid(preset_path(name))
    ends = {}
    for spec in grid.runs():
        config = grid.run_config(spec, Path("/tmp/unused"), resolve=False)
        pacing = build_pacing(config)
        if pacing is not None and spec.seed == grid.seeds[0]:
            cur = config.curriculum
            ends[spec.method] = (cur.order, pacing_span(pacing, cur.n_clusters - 1))
    return grid, ends


def _plan_of(name: str):
    import yaml

    from diffusion_curriculum.experiments import preset_path
    from diffusion_curriculum.experiments.grid import verdict_plan

    return verdict_plan(yaml.safe_load(preset_path(name).read_text())["verdict"])


def test_the_curriculum_gmm_preset_is_the_protocol_its_comment_fixes():
    """Grid A of issue 33: fresh seeds, the three budget fractions as fixed pacing ending at 200, 400 and 800 of
    4,000 steps, hard-to-easy at 10%, at least 40 evaluations, Holm over the four easy-to-hard arms per
    endpoint and the decision rule on E1."""
    from diffusion_curriculum.experiments import load_grid, preset_path

    grid, ends = _arm_ends("curriculum_gmm")
    assert set(grid.seeds) == set(range(6000, 6016))
    assert not set(grid.seeds) & (set(load_grid(preset_path("gmm")).seeds) | set(range(1000, 1016)))
    assert grid.budget // grid.eval_every >= 40
    assert ends["e2h_5"] == ("easy_to_hard", (200, 200)) and ends["e2h_10"] == ("easy_to_hard", (400, 400))
    assert ends["e2h_20"] == ("easy_to_hard", (800, 800)) and ends["h2e_10"] == ("hard_to_easy", (400, 400))
    assert ends["easy_to_hard"][0] == "easy_to_hard" and ends["easy_to_hard"][1][1] == 9 * 240  # the adaptive replica
    plan = _plan_of("curriculum_gmm")
    assert plan.family == ("e2h_5", "e2h_10", "e2h_20", "easy_to_hard") and plan.holm == "per_endpoint"
    assert (plan.decide, plan.margin, plan.primary) == ("e1", 0.1, ("e1", "e2"))


@pytest.mark.parametrize(
    ("name", "seeds", "clusters"), [("curriculum_digits", range(7000, 7010), 10), ("gpu", range(7100, 7110), 20)]
)
def test_grid_b_and_its_gpu_version_are_the_protocol_their_comments_fix(name, seeds, clusters):
    """Grid B (digits) and its class-conditional GPU version: 10 fresh seeds, easy-to-hard and hard-to-easy
    unlocked at exactly 10% of the budget, adaptive pacing done by 20% at the latest, at least 16 FID
    evaluations, Holm over the two easy-to-hard arms per endpoint, the decision rule on E1."""
    grid, ends = _arm_ends(name)
    assert list(grid.seeds) == list(seeds) and grid.budget // grid.eval_every >= 16
    tenth = round(0.1 * grid.budget)
    assert ends["e2h_10"] == ("easy_to_hard", (tenth, tenth)) and ends["h2e_10"] == ("hard_to_easy", (tenth, tenth))
    order, (_, latest) = ends["e2h_adaptive_20"]
    assert order == "easy_to_hard" and latest <= round(0.2 * grid.budget)
    plan = _plan_of(name)
    assert plan.family == ("e2h_10", "e2h_adaptive_20") and (plan.holm, plan.decide) == ("per_endpoint", "e1")
    assert grid.base["curriculum"]["n_clusters"] == clusters
