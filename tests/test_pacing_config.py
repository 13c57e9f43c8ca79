"""Adaptive pacing from a config: the per-stage cap, the warning when patience cannot fire, the refusal
unless asked for, and the warning on `train` and `info`'s stderr."""

import json

import pytest

from diffusion_curriculum.assembly import build_pacing, check_pacing
from diffusion_curriculum.cli import main
from diffusion_curriculum.config import ConfigError, load_config
from diffusion_curriculum.pacing import AdaptivePacing, pacing_span, shortest_adaptive_stage


def _config(**curriculum):
    return load_config(overrides={f"curriculum.{k}": v for k, v in curriculum.items()})


def _stage_cap(config):
    return build_pacing(config).max_steps_per_stage


def test_the_default_cap_is_a_multiple_of_the_shortest_stage_patience_allows():
    config = load_config()
    assert config.curriculum.patience is None  # the default patience, 10, as no budget fraction is set
    assert _stage_cap(config) == 8 * shortest_adaptive_stage(10, config.curriculum.ema) == 8 * (10 + 10)
    assert _stage_cap(_config(cap_multiple=2.5, patience=7, ema=None)) == 20  # ceil(2.5 * 8)
    assert _stage_cap(_config(cap_multiple=None)) is None
    assert _stage_cap(_config(max_steps_per_stage=33)) == 33  # an explicit cap wins
    # budget_fraction also bounds it: 0.5 * 2000 steps over 19 early stages
    assert _stage_cap(_config(budget_fraction=0.5)) == min(160, int(0.5 * 2000 / 19))


@pytest.mark.parametrize(
    ("patience", "cap"), [(p, c) for c in (1, 2, 5, 17) for p in (c - 3, c - 1, c, c + 1, c + 4) if p >= 1]
)
def test_the_warning_fires_for_patience_at_or_above_the_cap_and_not_otherwise(patience, cap):
    """Without smoothing, patience can end a stage at its step patience + 1 at the earliest."""
    config = _config(patience=patience, ema=None, max_steps_per_stage=cap, allow_cap_only=True)
    warning = check_pacing(config)
    if patience >= cap:
        assert warning is not None and f"patience {patience}" in warning and f"step {cap}" in warning
        assert "\n" not in warning and "max_steps_per_stage" in warning
    else:
        assert warning is None


@pytest.mark.parametrize(("patience", "fires"), [(5, False), (19, False), (20, False), (21, True), (30, True)])
def test_a_smoothed_rule_warns_when_its_warm_up_and_patience_outlast_the_cap(patience, fires):
    """With smoothing, the first comparison comes one EMA time constant (10 steps at ema 0.9) into
    the stage: a 30-step cap leaves patience 20 exactly enough room, patience 21 none."""
    config = _config(patience=patience, ema=0.9, max_steps_per_stage=30, allow_cap_only=True)
    assert (check_pacing(config) is not None) == fires


def test_the_budget_fraction_cap_is_named_in_the_warning():
    # the image presets' old combination: patience 100, 1,600 steps, 20 clusters, budget_fraction 0.5
    config = load_config(
        overrides={
            "curriculum.patience": 100,
            "curriculum.budget_fraction": 0.5,
            "train.max_steps": 1600,
            "curriculum.allow_cap_only": True,
        }
    )
    warning = check_pacing(config)
    assert "curriculum.budget_fraction=0.5" in warning and "fixed 42-step pacing" in warning


@pytest.mark.parametrize(
    "curriculum",
    [
        {"pacing": "fixed", "steps_per_stage": 3, "max_steps_per_stage": 1, "patience": 50},
        {"pacing": "linear", "max_steps_per_stage": 1, "patience": 50},
        {"order": "none", "max_steps_per_stage": 1, "patience": 50},
        {"only_cluster": 2, "max_steps_per_stage": 1, "patience": 50},
    ],
)
def test_no_warning_when_the_pacing_is_not_adaptive(curriculum):
    assert check_pacing(_config(**curriculum)) is None


def test_a_config_where_patience_cannot_fire_is_refused_unless_asked_for():
    config = _config(patience=100, max_steps_per_stage=42)
    with pytest.raises(ConfigError) as info:
        build_pacing(config)
    assert str(info.value).startswith("curriculum.patience") and "allow_cap_only" in str(info.value)
    with pytest.raises(ConfigError):
        check_pacing(config)
    allowed = _config(patience=100, max_steps_per_stage=42, allow_cap_only=True)
    assert check_pacing(allowed).startswith("curriculum.patience: adaptive pacing cannot fire")
    pacing = build_pacing(allowed)
    assert isinstance(pacing, AdaptivePacing) and pacing.max_steps_per_stage == 42
    assert check_pacing(load_config()) is None


def test_build_pacing_passes_every_key():
    config = _config(patience=7, min_delta=0.5, min_delta_mode="absolute", ema=0.5, max_steps_per_stage=40)
    pacing = build_pacing(config)
    assert (pacing.patience, pacing.min_delta, pacing.min_delta_mode, pacing.ema, pacing.max_steps_per_stage) == (
        7,
        0.5,
        "absolute",
        0.5,
        40,
    )


def test_info_refuses_or_warns_on_stderr(capsys):
    refused = ["info", "--set", "curriculum.patience=50", "--set", "curriculum.max_steps_per_stage=20"]
    assert main(refused) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffusion-curriculum: error: curriculum.patience")
    assert main([*refused, "--set", "curriculum.allow_cap_only=true"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffusion-curriculum: warning: curriculum.patience")
    assert "fixed 20-step pacing" in lines[0] and "pacing: AdaptivePacing" in captured.out
    assert main(["info"]) == 0 and "warning" not in capsys.readouterr().err


def test_train_warns_on_stderr_and_every_stage_ends_by_the_cap(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["--max-steps", "9", "--batch-size", "8", "--clusters", "4", "--patience", "5"]
    sets = ["curriculum.ema=null", "curriculum.max_steps_per_stage=3", "curriculum.allow_cap_only=true"]
    sets += ["train.sample_every=null", "train.checkpoint_every=null"]
    assert main(["train", *args, *[x for s in sets for x in ("--set", s)], "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("diffusion-curriculum:")]
    assert len(err) == 1 and "warning" in err[0] and "fixed 3-step pacing" in err[0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    changes = [c for r in records for c in r["stage_changes"]]
    assert changes == [[3, 2, "cap"], [6, 3, "cap"], [9, 4, "cap"]]


@pytest.mark.parametrize(
    "overrides",
    [
        {"curriculum.n_clusters": 5, "curriculum.patience": 4},
        {"curriculum.n_clusters": 5, "curriculum.patience": 4, "curriculum.cumulative": False},
        {"curriculum.n_clusters": 4, "curriculum.patience": 6, "curriculum.ema": None, "curriculum.cap_multiple": 3},
        {
            "curriculum.n_clusters": 6,
            "curriculum.patience": 3,
            "curriculum.budget_fraction": 0.5,
            "train.max_steps": 400,
        },
    ],
)
def test_the_curriculum_span_is_what_the_sampler_does_on_a_flat_and_on_an_ever_falling_loss(overrides):
    """A loss that never improves ends every stage as early as patience allows; one that falls 10% per step ends
    every stage at the cap: the sampler's own last stage change is the span's earliest and latest step."""
    import torch

    from diffusion_curriculum.assembly import build_objective, build_sampler

    config = load_config(overrides=overrides)
    built = build_sampler(config, build_objective(config), rank=0)
    earliest, latest = pacing_span(built.pacing, built.n_stages - 1)
    for loss_at, expected in ((lambda step: 1.0, earliest), (lambda step: 0.9**step, latest)):
        sampler = build_sampler(config, build_objective(config), rank=0)
        step = 0
        while not sampler.finished and step < 10 * latest:
            t = sampler.sample(8)
            sampler.observe(torch.full((8,), loss_at(step)), t)
            step += 1
        assert sampler.finished and step == expected == sampler.transitions[-1][0]


def test_no_latest_step_without_a_cap():
    assert pacing_span(build_pacing(_config(cap_multiple=None)), 19) == (19 * 20, None)


def test_info_says_when_the_curriculum_can_outlast_the_budget(capsys):
    base = ["info", "--clusters", "20", "--patience", "20", "--max-steps", "1600"]

    def phase_line() -> list[str]:
        return [x for x in capsys.readouterr().out.splitlines() if x.startswith("curriculum phase: ")]

    assert main(base) == 0
    (line,) = phase_line()
    assert "no earlier than step 570 (35.6%)" in line and "no later than step 4,560 (285.0% of" in line
    assert "budget_fraction bounds its share" in line
    assert main([*base, "--set", "curriculum.budget_fraction=0.5"]) == 0
    (line,) = phase_line()
    assert "no later than step 798 (49.9% of train.max_steps=1,600)" in line and "bounds its share" not in line
    assert line.endswith("; the per-stage cap from curriculum.budget_fraction=0.5")  # the patience was given
    assert main([*base, "--sampler", "loss_importance"]) == 0
    assert not phase_line()
