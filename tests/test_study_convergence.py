"""The convergence rule on scripted curves, the per-interval runs, and `study convergence` end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum import CurriculumSampler, FixedPacing
from diffusion_curriculum.assembly import build_objective, build_sampler, clusters_for
from diffusion_curriculum.config import ConfigError, load_config
from diffusion_curriculum.study.report import spearman
from diffusion_curriculum.study.rule import ConvergenceRule, convergence_step, smooth


# ----- the rule ---------------------------------------------------------------------------------
def test_exponential_decay_converges_where_the_closed_form_says():
    """L = 1 + 9 exp(-s / tau) from s = 1: the drop is 9 exp(-1/tau), so the curve is within 5% of it
    once exp(-s/tau) <= 0.05 exp(-1/tau), i.e. at the first integer s >= 1 + tau ln 20."""
    tau = 40.0
    steps = np.arange(1, 2001)
    losses = 1.0 + 9.0 * np.exp(-steps / tau)
    found = convergence_step(steps, losses, ConvergenceRule(tolerance=0.05, window=1, plateau_fraction=0.1))
    assert found["converged_step"] == math.ceil(1 + tau * math.log(20))
    assert found["plateau"] == pytest.approx(1.0, abs=1e-9)


def test_step_curve_and_tolerance():
    steps = np.arange(0, 100, 10)  # logged every 10 steps
    losses = np.array([5.0, 5.0, 5.0, 3.0, 2.0, 1.05, 1.0, 1.0, 1.0, 1.0])
    rule = ConvergenceRule(tolerance=0.05, window=1, plateau_fraction=0.4)
    assert convergence_step(steps, losses, rule)["converged_step"] == 50  # |1.05 - 1| <= 0.05 * 4
    assert convergence_step(steps, losses, ConvergenceRule(0.01, 1, 0.4))["converged_step"] == 60
    assert convergence_step(steps, losses, ConvergenceRule(0.3, 1, 0.4))["converged_step"] == 40


def test_smoothing_tames_noise_that_would_fool_the_raw_rule():
    rng = np.random.default_rng(0)
    steps = np.arange(1000)
    clean = 1.0 + np.exp(-steps / 100.0)
    noisy = clean + rng.normal(0, 0.05, 1000)
    raw = convergence_step(steps, noisy, ConvergenceRule(window=1))["converged_step"]
    smoothed = convergence_step(steps, noisy, ConvergenceRule(window=51))["converged_step"]
    truth = convergence_step(steps, clean, ConvergenceRule(window=1))["converged_step"]
    assert abs(smoothed - truth) < abs(raw - truth)
    assert abs(smoothed - truth) <= 40


def test_a_rising_curve_converges_too():
    steps = np.arange(100)
    losses = 2.0 - np.exp(-steps / 10.0)  # overfitting-like: the loss rises to its plateau
    assert 0 < convergence_step(steps, losses, ConvergenceRule(window=1))["converged_step"] < 50


@pytest.mark.parametrize(
    "kwargs",
    [{"tolerance": 0.0}, {"tolerance": 1.0}, {"window": 0}, {"plateau_fraction": 0.0}, {"plateau_fraction": 2}],
)
def test_bad_rules_are_refused(kwargs):
    with pytest.raises(ValueError):
        ConvergenceRule(**kwargs)


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        convergence_step(np.arange(3), np.array([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError):
        convergence_step(np.arange(3), np.arange(4.0))


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60), st.integers(1, 25))
@settings(max_examples=200, deadline=None)
def test_smooth_is_a_centred_moving_average(values, window):
    v = np.array(values)
    half = (window - 1) // 2
    brute = []
    for i in range(v.size):
        r = min(half, i, v.size - 1 - i)
        brute.append(v[i - r : i + r + 1].mean())
    np.testing.assert_allclose(smooth(v, window), brute, rtol=1e-9, atol=1e-6)


def test_spearman():
    assert spearman(np.arange(5), np.array([9, 7, 5, 3, 1])) == pytest.approx(-1.0)
    assert spearman(np.arange(4), np.array([1, 1, 2, 2])) == pytest.approx(0.894427191)
    assert math.isnan(spearman(np.arange(3), np.ones(3)))


# ----- one interval only ------------------------------------------------------------------------
def test_explicit_orders_must_be_permutations():
    clusters = [(0, 5), (5, 10), (10, 20)]
    sampler = CurriculumSampler(clusters, FixedPacing(1), order=[1, 2, 0], cumulative=True)
    assert sampler.unlocked == [1]
    sampler.observe(1.0)
    assert sampler.unlocked == [1, 2]
    for bad in ([0, 1], [0, 1, 1], [0, 1, 3]):
        with pytest.raises(ValueError, match="permutation"):
            CurriculumSampler(clusters, FixedPacing(1), order=bad)


@pytest.mark.parametrize("objective", ["eps", "edm"])
def test_only_cluster_trains_on_that_interval_for_the_whole_budget(objective):
    config = load_config(
        overrides={
            "curriculum.n_clusters": 5,
            "curriculum.only_cluster": 3,
            "train.max_steps": 50,
            "objective.name": objective,
        }
    )
    sampler = build_sampler(config, build_objective(config), rank=0)
    lo, hi = clusters_for(config)[3]
    assert sampler.clusters[3] == (lo, hi)
    for _ in range(50):
        t = sampler.sample(64)
        assert ((t >= lo) & (t <= hi if objective == "edm" else t < hi)).all()
        sampler.observe(torch.rand(64), t)
    assert sampler.transitions == [] and sampler.unlocked == [3]


def test_only_cluster_must_name_a_cluster():
    with pytest.raises(ConfigError, match=r"curriculum\.only_cluster"):
        load_config(overrides={"curriculum.n_clusters": 4, "curriculum.only_cluster": 4})


# ----- the command ------------------------------------------------------------------------------
def _study(out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "diffusion_curriculum.cli", "study", "convergence", "--dataset", "gmm"]
    argv += ["--model", "mlp-tiny", "--intervals", "4", "--max-steps", "40", "--seeds", "0,1", "--out", str(out)]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=600)


def _numbers(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s", "runs_wall_s", "workers")} for r in rows]


@pytest.mark.slow
def test_study_convergence_end_to_end_with_and_without_workers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    proc = _study(one, "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _study(two, "--workers", "2").returncode == 0
    for out in (one, two):
        for name in ("study.jsonl", "study.md", "convergence.png", "loss_curves.png"):
            assert (out / name).stat().st_size > 0, name
    assert _numbers(one) == _numbers(two)  # same numbers, whatever ran them
    rows = _numbers(one)
    runs = [r for r in rows if r["kind"] == "run"]
    intervals = [r for r in rows if r["kind"] == "interval"]
    assert len(runs) == 8 and len(intervals) == 4
    assert [r["range"] for r in intervals] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert all(r["measure"] == "excess_error" and r["heldout"] >= 0 for r in runs)
    assert all(len(r["loss"]) == 40 and 1 <= r["converged_step"] <= 40 for r in runs)
    text = (one / "study.md").read_text()
    assert "converged" in text and "cluster 3 (most noise" in text
    # each run's curve really came from a run on its own interval
    log = [json.loads(line) for line in (one / "runs" / "interval02_seed1" / "metrics.jsonl").read_text().splitlines()]
    assert {tuple(map(tuple, r["unlocked"])) for r in log} == {((500, 750),)}

    # a restart with the same command skips every finished run and rewrites identical numbers
    again = _study(one, "--workers", "1")
    assert again.returncode == 0 and _numbers(one) == _numbers(two)
    # a different study in the same folder is refused, and nothing is lost
    other = _study(one, "--set", "train.lr=1e-4")
    assert other.returncode == 2 and "different study" in other.stderr
    assert _numbers(one) == _numbers(two)


def test_study_convergence_bad_input_exits_2(tmp_path):
    for extra in (["--seeds", "a,b"], ["--tolerance", "2"], ["--set", "model.arch=cnn"]):
        proc = _study(tmp_path / "bad", *extra)
        assert proc.returncode == 2, extra
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("diffusion-curriculum")


def test_a_study_saved_before_a_config_key_existed_still_resumes(tmp_path):
    """study.yaml written without a key the package has since gained (its default) is the same study;
    a changed value is not."""
    import yaml

    from diffusion_curriculum.study.convergence import _prepare_out

    config = load_config(overrides={"data.dataset": "gmm"}).to_dict()
    config.pop("out")
    study = {"kind": "convergence", "config": config, "seeds": [0]}
    _prepare_out(tmp_path, study, overwrite=False)
    older = yaml.safe_load((tmp_path / "study.yaml").read_text())
    del older["config"]["train"]["compile"]  # as written before train.compile existed
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(older, sort_keys=True))
    _prepare_out(tmp_path, study, overwrite=False)  # accepted, and rewritten in today's form
    assert yaml.safe_load((tmp_path / "study.yaml").read_text()) == study
    changed = {**study, "config": {**config, "train": {**config["train"], "lr": 0.5}}}
    with pytest.raises(ValueError, match="different study"):
        _prepare_out(tmp_path, changed, overwrite=False)
    (tmp_path / "study.yaml").write_text("{not: [valid")  # damaged: named, and no advice to overwrite
    with pytest.raises(ValueError, match=r"study\.yaml: not valid YAML.*restore it") as info:
        _prepare_out(tmp_path, study, overwrite=False)
    assert "--overwrite" not in str(info.value)
