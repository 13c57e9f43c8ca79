"""A run and sampler states written by the layout before the samplers package (commit 8a230ae, when the
curriculum sampler lived in ``diffusion_curriculum/sampler.py``) load and continue exactly with today's
code. The files were written by that commit's code (tests/fixtures/previous_layout/README.md says how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffusion_curriculum import SAMPLERS, AdaptivePacing, DiscreteSchedule
from diffusion_curriculum.cli import main
from diffusion_curriculum.runs.checkpoints import load_rank_state

FIXTURES = Path(__file__).parent / "fixtures" / "previous_layout"
# The rows those states were made with (tests/contract/tables.py's first example of each sampler at 8a230ae).
ROWS = {
    "curriculum": {"order": "easy_to_hard", "pacing": AdaptivePacing(3, ema=0.5, max_steps_per_stage=9)},
    "learning_progress": {"total_steps": 400, "min_horizon": 5},
    "speed": {},
    "loss_importance": {"history": 2},
    "logit_normal": {},
    "matched_marginal": {"shares": [0.1, 0.2, 0.3, 0.2, 0.2]},
}
# The run's flags (the README's command, without --max-steps).
RUN = [
    *("--dataset", "gmm", "--model", "mlp", "--set", "data.n_samples=400", "--batch-size", "32", "--clusters", "4"),
    *("--set", "curriculum.patience=1", "--set", "curriculum.ema=0.5", "--set", "curriculum.max_steps_per_stage=4"),
    *("--set", "train.sample_every=null", "--set", "train.checkpoint_every=6", "--set", "train.keep_checkpoints=5"),
    *("--set", "train.probe_every=2", "--set", "train.probe_items=64"),
]


def _loss(t: torch.Tensor, step: int) -> torch.Tensor:
    """The synthetic per-sample loss the states were made with."""
    t = t.double()
    return ((1.0 / (1.0 + t)) * (1.0 + 0.3 * torch.cos(step * 0.7 + t * 0.01)) + 0.01 / (1 + step)).float()


def _records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in lines]


# The samplers the previous layout had (a sampler added since has no state of that layout to load); each must
# still be registered.
PREVIOUS_SAMPLERS = sorted(json.loads((FIXTURES / "sampler_states" / "expected.json").read_text()))


@pytest.mark.parametrize("name", PREVIOUS_SAMPLERS)
def test_a_sampler_state_of_the_previous_layout_continues_exactly(name):
    assert name in SAMPLERS, f"{name}, a sampler of the previous layout, is no longer registered"
    expected = json.loads((FIXTURES / "sampler_states" / "expected.json").read_text())[name]
    sampler = SAMPLERS[name].from_schedule(DiscreteSchedule.linear(100), 5, seed=11, rank=1, **ROWS[name])
    sampler.load_state_dict(load_rank_state(FIXTURES / "sampler_states" / name, 1)["sampler"])
    for step, want in enumerate(expected["continuation"], start=30):
        t = sampler.sample(16)
        assert t.tolist() == want["timesteps"], f"step {step}"
        assert sampler.loss_weights(t).double().tolist() == want["weights"], f"step {step}"
        sampler.observe(_loss(t, step), t)
    stats = sampler.stats()
    assert stats["stage"] == expected["stats_after"]["stage"]
    assert stats["cluster_probs"] == expected["stats_after"]["cluster_probs"]
    torch.testing.assert_close(
        torch.tensor(stats["cluster_loss"]), torch.tensor(expected["stats_after"]["cluster_loss"]), equal_nan=True
    )


def _agree(resumed, expected, path: str = "") -> None:
    """Every key, list length, int, string and None equal; floats equal to float32 rounding (a relative 1e-5)."""
    if isinstance(expected, float) and not isinstance(resumed, bool):
        assert isinstance(resumed, (int, float)) and resumed == pytest.approx(expected, rel=1e-5, abs=1e-12), path
    elif isinstance(expected, dict):
        assert isinstance(resumed, dict) and sorted(resumed) == sorted(expected), path
        for key in expected:
            _agree(resumed[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(resumed, list) and len(resumed) == len(expected), path
        for i, (r, e) in enumerate(zip(resumed, expected, strict=True)):
            _agree(r, e, f"{path}[{i}]")
    else:
        assert resumed == expected and type(resumed) is type(expected), path


def test_a_run_of_the_previous_layout_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Its step-6 checkpoint (mid-curriculum: stage 2 of 4, adaptive pacing's state inside) resumed to step
    12 gives the old code's uninterrupted log and probe curve: the same draws per cluster, stages and stage
    changes (steps 8 by the cap and 11 by patience), and losses equal to float32 rounding. Not bit for bit:
    the fixture was written on another CPU, and float32 matrix kernels sum in an order that depends on the
    CPU's vector width (on this project's machines the first difference is in the 8th digit, from step 7).
    A resume on one machine is bit for bit the run never stopped: tests/test_train.py and
    tests/reliability/test_kill_resume.py check that."""
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    assert main(["train", *RUN, "--max-steps", "12", "--out", str(run), "--resume", "latest"]) == 0
    metrics = _records(run / "metrics.jsonl")
    _agree(metrics, _records(FIXTURES / "expected_metrics.jsonl"), "metrics")
    assert [change for line in metrics for change in line["stage_changes"]] == [
        [4, 2, "cap"],
        [8, 3, "cap"],
        [11, 4, "patience"],
    ]
    _agree(_records(run / "probe.jsonl"), _records(FIXTURES / "expected_probe.jsonl"), "probe")
