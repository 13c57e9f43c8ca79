"""The verdict's pacing control: a curriculum order with fixed pacing at another method's mean realised
stage lengths (grid methods ``{name: ORDER, from: METHOD}``), and per-stage lengths for fixed pacing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum.config import ConfigError, load_config
from diffusion_curriculum.experiments import load_grid
from diffusion_curriculum.experiments.grid import mean_stage_lengths
from diffusion_curriculum.pacing import FixedPacing


def _fake_run(folder: Path, n_stages: int, transitions: dict[int, int], steps: int) -> Path:
    """A run folder whose metrics.jsonl logs one line per step with the given (stage -> step) changes."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        changes = [[t, s, "patience"] for s, t in transitions.items() if t == step]
        lines.append(json.dumps({"step": step, "n_stages": n_stages, "stage_changes": changes}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_mean_stage_lengths_average_the_transition_steps_and_censor_at_the_budget(tmp_path):
    # Stage 4 is reached by one run of three: the others count the budget (100), mean (90+100+100)/3 = 96.67.
    runs = [
        _fake_run(tmp_path / "a", 4, {2: 10, 3: 40, 4: 90}, 100),
        _fake_run(tmp_path / "b", 4, {2: 20, 3: 50}, 100),
        _fake_run(tmp_path / "c", 4, {2: 31, 3: 61}, 100),
    ]
    # Mean transition steps 20.33 -> 20, 50.33 -> 50, 96.67 -> 97: lengths 20, 30, 47.
    assert mean_stage_lengths(runs, budget=100) == [20, 30, 47]


def test_equal_mean_steps_still_give_every_stage_a_step(tmp_path):
    runs = [_fake_run(tmp_path / "a", 3, {2: 5, 3: 5}, 10)]  # an impossible log: two changes at one step
    assert mean_stage_lengths(runs, budget=10) == [5, 1]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fixed_pacing_at_the_mean_lengths_changes_stage_at_the_rounded_mean_steps(tmp_path_factory, data):
    """FixedPacing fed the lengths advances at the rounded mean transition steps (when they are distinct)."""
    n_stages = data.draw(st.integers(2, 6))
    budget = 200
    n_runs = data.draw(st.integers(1, 4))
    root = tmp_path_factory.mktemp("runs")
    per_run = []
    for i in range(n_runs):
        steps = sorted(data.draw(st.lists(st.integers(1, budget), min_size=n_stages - 1, max_size=n_stages - 1)))
        reached = data.draw(st.integers(0, n_stages - 1))  # the stages this run reached before the budget ran out
        transitions = {s: t for s, t in zip(range(2, n_stages + 1), steps, strict=True) if s - 2 < reached}
        per_run.append(transitions)
        _fake_run(root / f"r{i}", n_stages, transitions, budget)
    lengths = mean_stage_lengths([root / f"r{i}" for i in range(n_runs)], budget)
    assert len(lengths) == n_stages - 1 and all(x >= 1 for x in lengths)
    expected = [round(sum(t.get(s, budget) for t in per_run) / n_runs) for s in range(2, n_stages + 1)]
    # Simulate the pacing: the step at which each stage change happens.
    pacing, stage, changes = FixedPacing(lengths), 1, []
    for step in range(1, sum(lengths) + 1):
        if stage < n_stages and pacing.update(0.0, stage, n_stages):
            stage += 1
            changes.append(step)
            pacing.reset()
    assert len(changes) == n_stages - 1
    if len(set(expected)) == len(expected):
        assert changes == expected
    assert all(c >= e for c, e in zip(changes, expected, strict=True))  # ties pushed later by one step, never earlier


def test_a_source_without_stages_is_refused(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(ConfigError, match="logs no curriculum stages"):
        mean_stage_lengths([folder], budget=10)
    with pytest.raises(ConfigError, match="pacing source"):
        mean_stage_lengths([tmp_path / "missing"], budget=10)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0, 2], r"curriculum\.steps_per_stage\[0\]: must be >= 1"),
        ([], r"curriculum\.steps_per_stage: expected a non-empty list"),
        ([2, 1.5], r"curriculum\.steps_per_stage\[1\]: expected an integer"),
        ("many", r"curriculum\.steps_per_stage: expected an integer"),
    ],
)
def test_steps_per_stage_is_one_length_or_one_per_stage(value, message):
    config = load_config(overrides={"curriculum.pacing": "fixed", "curriculum.steps_per_stage": [3, 4]})
    assert config.curriculum.steps_per_stage == [3, 4]
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"curriculum.pacing": "fixed", "curriculum.steps_per_stage": value})


def _grid_file(tmp_path, methods, **base) -> Path:
    tree = {
        "base": {
            "data": {"dataset": "gmm", "n_samples": 400},
            "model": {"arch": "mlp"},
            "curriculum": {"n_clusters": 3, "pacing": "adaptive", "patience": 2, "ema": None},
            "train": {"max_steps": 40, "batch_size": 16, "warmup_steps": 2, "sample_every": None},
            **base,
        },
        "methods": methods,
        "weightings": ["none", "min_snr"],
        "seeds": [0, 1],
        "eval": {"every": 20, "n": 40, "steps": 3, "dense_every": 10, "dense_items": 32},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


FIXED = {"name": "easy_to_hard", "label": "fixed", "from": "easy_to_hard"}


def test_the_control_runs_after_every_seed_of_its_source_under_the_same_weighting(tmp_path):
    grid = load_grid(_grid_file(tmp_path, ["none", "easy_to_hard", FIXED]))
    specs = {s.name: s for s in grid.runs()}
    assert specs["fixed-min_snr-s0"].after == ("easy_to_hard-min_snr-s0", "easy_to_hard-min_snr-s1")
    assert specs["fixed-none-s1"].after == ("easy_to_hard-none-s0", "easy_to_hard-none-s1")
    out = tmp_path / "out" / "runs"
    unresolved = grid.run_config(specs["fixed-none-s0"], out / "fixed-none-s0", resolve=False).curriculum
    assert (unresolved.order, unresolved.pacing) == ("easy_to_hard", "adaptive")
    for name, steps in (("easy_to_hard-none-s0", {2: 7, 3: 20}), ("easy_to_hard-none-s1", {2: 9})):
        _fake_run(out / name, 3, steps, 40)
    resolved = grid.run_config(specs["fixed-none-s0"], out / "fixed-none-s0").curriculum
    assert (resolved.order, resolved.pacing, resolved.steps_per_stage) == ("easy_to_hard", "fixed", [8, 22])


@pytest.mark.parametrize(
    ("methods", "key"),
    [
        (["none", {"name": "easy_to_hard", "from": "none"}], "methods.easy_to_hard.from"),
        (["none", "speed", {"name": "easy_to_hard", "from": "speed"}], "methods.easy_to_hard.from"),
        (["none", {"name": "easy_to_hard", "from": "easy_to_hard"}], "methods.easy_to_hard.from"),
        (["none", "easy_to_hard", FIXED, {**FIXED, "label": "twice", "from": "fixed"}], "methods.twice.from"),
        (["none", "easy_to_hard", {**FIXED, "patience": 3}], "methods.fixed"),
        (["none", {**FIXED, "from": "nowhere"}], "methods.fixed.from"),
    ],
)
def test_a_bad_pacing_source_names_the_key(tmp_path, methods, key):
    with pytest.raises(ConfigError) as info:
        load_grid(_grid_file(tmp_path, methods))
    assert str(info.value).startswith(key), str(info.value)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_fixed_control_unlocks_at_its_sources_mean_steps_end_to_end(tmp_path):
    """A tiny gmm grid: the adaptive curriculum's two seeds, then the control, whose stage changes fall
    at the rounded mean of theirs (per weighting), all caused by fixed pacing."""
    path = _grid_file(tmp_path, ["none", "easy_to_hard", FIXED])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_curriculum.cli", "compare", "--config", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def changes(name: str) -> list[list]:
        lines = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return [c for line in lines for c in json.loads(line)["stage_changes"]]

    for weighting in ("none", "min_snr"):
        sources = [{s: t for t, s, _ in changes(f"easy_to_hard-{weighting}-s{seed}")} for seed in (0, 1)]
        assert all(sources), "patience never fired in a source run: the control would test nothing"
        second, third = (round(sum(s.get(stage, 40) for s in sources) / 2) for stage in (2, 3))
        expected = [t for t in (second, max(third, second + 1)) if t <= 40]  # a stage left unreached: the budget
        for seed in (0, 1):
            control = changes(f"fixed-{weighting}-s{seed}")
            assert [t for t, _, _ in control] == expected
            assert {cause for _, _, cause in control} <= {"fixed"}
    assert "`fixed`" in (out / "report.md").read_text()
