"""Every timestep sampler through the trainer (the CLI's `train`, with exact resume) and through the
diffusers recipe (examples/diffusers_unconditional.py), a few steps each."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from diffusion_curriculum import SAMPLERS
from diffusion_curriculum.cli import main
from diffusion_curriculum.runs.checkpoints import load_state

OTHERS = [s for s in SAMPLERS if s != "curriculum"]
PARAMS = {  # what each needs beyond its defaults to do something within a dozen steps
    "learning_progress": "{min_horizon: 1, slow_multiple: 2, anneal_start: 0.7, anneal_end: 0.9}",
    "matched_marginal": "{shares: [0.5, 0.3, 0.2]}",
    "loss_importance": "{history: 1}",
}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diffusers_unconditional.py"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _train(out: Path, sampler: str, *extra: str) -> int:
    args = [
        "train",
        "--dataset",
        "gmm",
        "--model",
        "mlp",
        "--set",
        "data.n_samples=400",
        "--max-steps",
        "12",
        "--batch-size",
        "32",
        "--clusters",
        "3",
        "--sampler",
        sampler,
        "--set",
        "train.sample_every=null",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.keep_checkpoints=5",
        "--out",
        str(out),
    ]
    if sampler in PARAMS:
        args += ["--set", f"curriculum.sampler_params={PARAMS[sampler]}"]
    return main([*args, *extra])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sampler", OTHERS)
def test_each_sampler_trains_logs_its_draws_and_resumes_exactly(tmp_path, sampler):
    """A 12-step run logs the draws per cluster of every step; the same run cut back to its step-4
    checkpoint and resumed ends with identical weights and log."""
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert _train(full, sampler) == 0
    records = _records(full)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(sum(r["cluster_draws"]) == 32 and len(r["cluster_draws"]) == 3 for r in records)
    assert all(r["stage"] == 1 and r["n_stages"] == 1 and r["stage_changes"] == [] for r in records)
    draws = torch.tensor([r["cluster_draws"] for r in records]).sum(0)
    if sampler in ("speed", "logit_normal", "matched_marginal"):
        assert not torch.equal(draws.max() - draws.min(), torch.tensor(0)), draws  # not the uniform shares

    assert _train(broken, sampler) == 0
    for step in (8, 12):
        shutil.rmtree(broken / "checkpoints" / f"step_{step:08d}")
    assert _train(broken, sampler, "--resume", "latest") == 0
    a = load_state(full / "checkpoints" / "step_00000012")
    b = load_state(broken / "checkpoints" / "step_00000012")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = ("images_per_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in _records(full)] == [
        {k: v for k, v in r.items() if k not in strip} for r in _records(broken)
    ]


def test_matched_marginal_trains_from_a_finished_runs_shares(tmp_path):
    source, matched = tmp_path / "curriculum", tmp_path / "matched"
    assert _train(source, "curriculum", "--pacing", "fixed", "--set", "curriculum.steps_per_stage=3") == 0
    shares = torch.tensor([r["cluster_draws"] for r in _records(source)], dtype=torch.float64).sum(0)
    assert (
        main(
            [
                "train",
                "--dataset",
                "gmm",
                "--model",
                "mlp",
                "--set",
                "data.n_samples=400",
                "--max-steps",
                "12",
                "--batch-size",
                "32",
                "--clusters",
                "3",
                "--sampler",
                "matched_marginal",
                "--set",
                f"curriculum.sampler_params={{from: {source}}}",
                "--set",
                "train.sample_every=null",
                "--out",
                str(matched),
            ]
        )
        == 0
    )
    draws = torch.tensor([r["cluster_draws"] for r in _records(matched)], dtype=torch.float64)
    expected = 32 * shares / shares.sum()
    assert ((draws - expected).abs() < 1).all()  # every batch: floor or ceil of the source's mean share


def _example():
    spec = importlib.util.spec_from_file_location("diffusers_unconditional", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sampler", OTHERS)
def test_each_sampler_runs_in_the_diffusers_recipe(tmp_path, sampler):
    out = tmp_path / sampler
    extra = ["--shares", "0.2,0.3,0.5"] if sampler == "matched_marginal" else []
    args = [
        "--max_train_steps",
        "4",
        "--n_clusters",
        "3",
        "--train_batch_size",
        "16",
        "--num_samples",
        "4",
        "--log_draws",
        "--output_dir",
        str(out),
    ]
    _example().main([*args, "--sampler", sampler, *extra])
    records = [json.loads(line) for line in (out / "draws_rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(min(r["losses"]) > 0 for r in records)
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_trainer_multiplies_the_loss_by_the_samplers_loss_weights(tmp_path):
    """SpeeD's change-aware weights with lam = 0.5 and tau at the end are 0.5 everywhere: the first logged
    loss (same initialisation and draws) is exactly half that of the same run without the weighting."""
    plain, halved = tmp_path / "plain", tmp_path / "halved"
    assert _train(plain, "speed", "--set", "curriculum.sampler_params={threshold: 1.0, change_aware: false}") == 0
    assert _train(halved, "speed", "--set", "curriculum.sampler_params={threshold: 1.0, lam: 0.5}") == 0
    a, b = _records(plain)[0], _records(halved)[0]
    assert a["cluster_draws"] == b["cluster_draws"] and b["loss"] == 0.5 * a["loss"]
