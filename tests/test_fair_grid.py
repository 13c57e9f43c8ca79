"""What a fair verdict grid can express (issue 31): the paired A/A arm (another timestep stream, nothing
else), a method's own curriculum keys, and a matched control matched up to the target step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion_curriculum.assembly import matched_shares
from diffusion_curriculum.config import ConfigError, load_config
from diffusion_curriculum.experiments.grid import load_grid
from diffusion_curriculum.pacing import FunctionPacing, pacing_span
from diffusion_curriculum.samplers import stream_seed


def test_stream_zero_is_the_runs_seed_and_other_streams_are_no_other_runs_stream_zero():
    assert stream_seed(7, 0) == 7
    others = {stream_seed(seed, stream) for seed in range(50) for stream in (1, 2, 3)}
    assert len(others) == 150 and not others & set(range(10_000))
    assert stream_seed(7, 1) == stream_seed(7, 1) != stream_seed(8, 1)


def test_the_paired_aa_arm_shares_initialisation_data_order_and_noise_and_draws_other_timesteps(tmp_path, monkeypatch):
    """Two trainers, the uniform baseline and the same config with curriculum.sampler_stream 1: identical
    initial weights and data, noise and dropout streams (so the same first batch gives the same loss at
    the same timesteps); only the timestep sampler's draws differ."""
    from diffusion_curriculum.training.trainer import Trainer

    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path / "cache"))
    common = {
        "data.dataset": "gmm",
        "data.n_samples": 400,
        "model.arch": "mlp",
        "curriculum.order": "none",
        "train.max_steps": 4,
        "train.batch_size": 16,
        "train.sample_every": None,
        "seed": 3,
    }
    trainers = []
    for stream in (0, 1):
        config = load_config(
            overrides={**common, "curriculum.sampler_stream": stream, "out": str(tmp_path / f"s{stream}")}
        )
        trainers.append(Trainer(config))
    try:
        base, aa = trainers
        for (name, a), (_, b) in zip(base.model.state_dict().items(), aa.model.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
        for gen in ("data_gen", "noise_gen", "drop_gen"):
            assert torch.equal(getattr(base, gen).get_state(), getattr(aa, gen).get_state()), gen
        x = base.train_x[:16]
        t = torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(base.model(x, t), aa.model(x, t))  # same first-step loss on the same batch
        assert not torch.equal(base.sampler.sample(64), aa.sampler.sample(64))
    finally:
        for trainer in trainers:
            trainer.close()


def _grid(tmp_path: Path, methods: str, extra: str = "") -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: g\nbase:\n  data: {dataset: gmm, n_samples: 400}\n  model: {arch: mlp}\n"
        "  curriculum: {n_clusters: 4, patience: 5}\n  train: {max_steps: 40, batch_size: 16, sample_every: null}\n"
        f"methods: {methods}\nseeds: [0]\neval: {{every: 10, n: 50, steps: 3}}\n{extra}"
    )
    return path


def test_a_methods_own_curriculum_keys_reach_its_runs_config_and_no_other(tmp_path):
    methods = (
        "[none, {name: none, label: uniform_aa, curriculum: {sampler_stream: 1}}, "
        "{name: easy_to_hard, label: e2h_fixed, curriculum: {pacing: fixed, steps_per_stage: 3}}, "
        "{name: easy_to_hard, label: e2h_linear, curriculum: {pacing: linear, pacing_steps: 8, n_clusters: 5}}]"
    )
    grid = load_grid(_grid(tmp_path, methods))
    configs = {s.method: grid.run_config(s, tmp_path / "runs" / s.name) for s in grid.runs()}
    cur = {label: c.curriculum for label, c in configs.items()}
    assert cur["none"].sampler_stream == 0 and cur["none"].pacing == "adaptive" and cur["none"].n_clusters == 4
    assert cur["uniform_aa"].sampler_stream == 1 and cur["uniform_aa"].order == "none"
    assert (cur["e2h_fixed"].pacing, cur["e2h_fixed"].steps_per_stage, cur["e2h_fixed"].n_clusters) == ("fixed", 3, 4)
    assert (cur["e2h_linear"].pacing, cur["e2h_linear"].pacing_steps, cur["e2h_linear"].n_clusters) == ("linear", 8, 5)
    assert grid.method_specs["uniform_aa"].is_paired_aa and not grid.method_specs["e2h_fixed"].is_paired_aa


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("{name: easy_to_hard, label: x, curriculum: {order: hard_to_easy}}", "methods.x.curriculum.order"),
        ("{name: easy_to_hard, label: x, curriculum: {bogus: 1}}", "methods.x.curriculum.bogus"),
        ("{name: easy_to_hard, label: x, curriculum: [pacing]}", "methods.x.curriculum"),
        ("{name: matched_marginal, label: x, from: none, until: soon}", "methods.x.until"),
    ],
)
def test_bad_per_method_keys_are_refused_naming_them(tmp_path, entry, needle):
    with pytest.raises(ConfigError) as info:
        load_grid(_grid(tmp_path, f"[none, {entry}]"))
    assert str(info.value).startswith(needle) and "\n" not in str(info.value)


def test_a_matched_control_until_the_target_counts_the_sources_draws_up_to_that_step(tmp_path):
    grid = load_grid(
        _grid(tmp_path, "[none, easy_to_hard, {name: matched_marginal, from: easy_to_hard, until: target}]")
    )
    spec = next(s for s in grid.runs() if s.method == "matched_marginal")
    assert spec.overrides["curriculum.sampler_params"]["until"] == 20  # half of the 40-step budget
    run = tmp_path / "source"
    run.mkdir()
    lines = [{"step": 10, "cluster_draws": [0, 0, 0, 16]}, {"step": 20, "cluster_draws": [0, 0, 8, 8]}]
    lines += [{"step": 30, "cluster_draws": [16, 0, 0, 0]}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert matched_shares(run, 4, until=20) == pytest.approx([0, 0, 0.25, 0.75])
    assert matched_shares(run, 4) == pytest.approx([1 / 3, 0, 1 / 6, 1 / 2])
    with pytest.raises(ConfigError, match="until"):
        matched_shares(run, 4, until=0)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 5 tiny runs: about half a minute on an idle 2-core machine, minutes under load
def test_a_tiny_grid_with_three_pacings_and_the_paired_aa_arm_reports_each_arm_under_its_own_label(
    tmp_path, monkeypatch, capsys
):
    """Three curriculum arms of different pacing (fixed, linear, adaptive) and the paired A/A arm in one grid,
    through `compare`: each is trained with its own keys and reported under its own label, the A/A arm marked
    as such, and the arm whose fixed stages outlast the budget is shown never to have unlocked every cluster."""
    from diffusion_curriculum.cli import main

    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path / "cache"))
    methods = (
        "[none, {name: none, label: uniform_aa, curriculum: {sampler_stream: 1}}, "
        "{name: easy_to_hard, label: e2h_never, curriculum: {pacing: fixed, steps_per_stage: 1000}}, "
        "{name: easy_to_hard, label: e2h_linear, curriculum: {pacing: linear, budget_fraction: 0.2}}, "
        "{name: easy_to_hard, label: e2h_adaptive, curriculum: {patience: 2, ema: null}}]"
    )
    plan = (
        "{primary: [e2], per_cluster: excess_error, family: [e2h_linear, e2h_adaptive], holm: per_endpoint, decide: e2}"
    )
    grid = _grid(tmp_path, methods, f"verdict: {plan}\nworkers: 1\n")
    text = grid.read_text().replace("every: 10, n: 50, steps: 3", "every: 20, n: 50, steps: 3, dense_every: 10")
    grid.write_text(text)
    assert main(["compare", "--config", str(grid), "--out", str(tmp_path / "out")]) == 0
    # one line each for the arm that cannot have every timestep in play by the target (step 20 of 40) and the
    # one that may not (adaptive, each of 3 stages capped at 8 x 3 steps); none for linear pacing ending at 8
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("diffusion-curriculum: warning:")]
    assert any("methods.e2h_never: its curriculum cannot" in x and "(step 3,000 at the earliest)" in x for x in warned)
    assert any("methods.e2h_adaptive: its curriculum may still" in x and "bounded by step 72" in x for x in warned)
    assert not any("e2h_linear" in x for x in warned)
    record = json.loads((tmp_path / "out" / "verdict.json").read_text())
    rows = {c["method"]: c for c in record["comparisons"]}
    assert set(rows) == {"uniform_aa", "e2h_never", "e2h_linear", "e2h_adaptive"}
    assert rows["uniform_aa"]["paired_aa"] and not any(rows[m]["paired_aa"] for m in rows if m != "uniform_aa")
    assert record["primary"] == ["e2"] and (record["family"], record["decide"]) == (
        ["e2h_linear", "e2h_adaptive"],
        "e2",
    )
    # Holm's family and the decision rule cover the arms the plan names; the others are secondary (one seed: no p)
    family = {m for m, c in rows.items() if c["endpoints"]["e2"]["primary"]}
    assert family == {m for m, c in rows.items() if c["rule"] is not None} == {"e2h_linear", "e2h_adaptive"}
    assert rows["e2h_linear"]["rule"]["decision"] == "undecided"
    runs = tmp_path / "out" / "runs"
    stages = {
        label: [json.loads(line)["stage"] for line in (runs / f"{label}-none-s0" / "metrics.jsonl").open()]
        for label in ("e2h_never", "e2h_linear", "e2h_adaptive")
    }
    assert set(stages["e2h_never"]) == {1} and stages["e2h_linear"][-1] == stages["e2h_adaptive"][-1] == 4
    # linear pacing over 0.2 of 40 steps unlocks the last cluster after step 8 (pacing_span): step 9 trains on all
    assert pacing_span(FunctionPacing("linear", 8), 3) == (8, 8) and stages["e2h_linear"].index(4) + 1 == 9
    md = (tmp_path / "out" / "report.md").read_text()
    for label in ("e2h_never", "e2h_linear", "e2h_adaptive"):
        assert f"| `{label}` |" in md
    assert "| `uniform_aa` (paired A/A) |" in md and "s0: never" in md
    # the curriculum table states when each arm's pacing, as configured, has every timestep in play
    # and when it did, in the same convention (the step after which, as the pacing recorded it): 8, not 9
    assert "| `e2h_linear` | 4 | step 8 (20%) | 8 |" in md and "| `e2h_never` | 4 | step 3,000 (7500%) |" in md
    assert (
        "Decision rule on E2, balanced denoising, fixed in the preset" in md
        and "(unadjusted: outside the family)" in md
    )


def test_a_partial_reports_warning_names_a_few_unfinished_runs_and_counts_the_rest():
    from diffusion_curriculum.experiments.runner import listed

    assert listed(["a", "b"]) == "a, b"
    names = [f"run{i}" for i in range(144)]
    assert listed(names) == "run0, run1, run2, run3, run4 and 139 more"
