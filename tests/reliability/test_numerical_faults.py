"""Numerical faults: a NaN or inf loss skips its step (no optimizer, EMA, LR or pacing update) and is
counted in metrics.jsonl; ``train.max_bad_steps`` consecutive ones stop the run with exit code 3 and
one line, leaving the last good checkpoint intact and writing none from the bad steps."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from diffusion_curriculum.cli import main
from diffusion_curriculum.objectives import DDPMObjective
from diffusion_curriculum.runs import checkpoints as ckpt

from ._run import assert_identical

COMMON = [
    "--batch-size",
    "8",
    "--clusters",
    "3",
    "--pacing",
    "fixed",
    "--set",
    "curriculum.steps_per_stage=2",
    "--set",
    "train.sample_every=null",
    "--set",
    "train.keep_checkpoints=10",
]
NAN_STEPS = "DIFFUSION_CURRICULUM_FAULT_NAN_STEPS"


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))


def _train(out: Path, max_steps: int, *extra: str) -> int:
    return main(["train", *COMMON, "--max-steps", str(max_steps), "--out", str(out), *extra])


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _load(out: Path, step: int, name: str = "state") -> dict:
    path = out / "checkpoints" / f"step_{step:08d}"
    return ckpt.load_state(path) if name == "state" else ckpt.load_rank_state(path, 0)


def _inf_loss_at(monkeypatch, steps: set[int]) -> None:
    """Make the objective's loss inf at these steps of the next run (one loss call per step)."""
    original, calls = DDPMObjective.loss, itertools.count(1)

    def loss(self, *args, **kwargs):
        raw = original(self, *args, **kwargs)
        return raw * math.inf if next(calls) in steps else raw

    monkeypatch.setattr(DDPMObjective, "loss", loss)


def test_nan_and_inf_steps_are_skipped_counted_and_change_nothing(tmp_path, monkeypatch, capsys):
    """A run whose steps 4 (NaN) and 5 (inf) are bad ends those two steps exactly where a clean run
    ends step 3: same weights, EMA, optimizer, LR schedule and curriculum pacing."""
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    assert _train(clean, 3, "--set", "train.checkpoint_every=3") == 0
    monkeypatch.setenv(NAN_STEPS, "4")
    _inf_loss_at(monkeypatch, {5})
    assert _train(faulty, 5, "--set", "train.checkpoint_every=5") == 0

    a, b = _load(clean, 3), _load(faulty, 5)
    for key in ("model", "ema", "optimizer", "lr_scheduler"):
        assert_identical(a[key], b[key], key)
    assert (b["skipped_steps"], b["bad_streak"]) == (2, 2)
    sa, sb = _load(clean, 3, "rank0")["sampler"], _load(faulty, 5, "rank0")["sampler"]
    for key in ("stage", "step", "transitions", "pacing", "loss_sum", "loss_count"):
        assert_identical(sa[key], sb[key], key)

    lines = _lines(faulty)
    assert [line["skipped_steps"] for line in lines] == [0, 0, 0, 1, 2]
    assert [line["loss"] is None for line in lines] == [False, False, False, True, True]
    assert lines[3]["lr"] == lines[4]["lr"] == _lines(clean)[2]["lr"]  # the LR schedule did not advance
    assert all(line["cluster_loss"] == [None] * 3 for line in lines[3:])


def test_consecutive_bad_steps_stop_the_run_with_its_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """NaN from step 5 on with max_bad_steps 3: steps 5 to 7 are skipped, the checkpoint due at step
    6 is not written from them, and the run stops at step 7 with exit code 3 naming step 4's."""
    out = tmp_path / "run"
    monkeypatch.setenv(NAN_STEPS, ",".join(str(s) for s in range(5, 13)))
    code = _train(out, 12, "--set", "train.checkpoint_every=2", "--set", "train.max_bad_steps=3")
    captured = capsys.readouterr()
    assert code == 3
    lines = [line for line in captured.err.splitlines() if line.startswith("diffusion-curriculum:")]
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "train.max_bad_steps: the loss was NaN or inf at 3 consecutive steps up to step 7" in lines[0]
    assert f"the last checkpoint is {out / 'checkpoints' / 'step_00000004'}" in lines[0]
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_00000002", "step_00000004"]
    for path in ckpt.list_checkpoints(out / "checkpoints"):
        ckpt.verify(path)
        assert all(torch.isfinite(t).all() for t in ckpt.load_state(path)["model"].values())
    assert not (out / "model").exists()
    assert [(line["step"], line["skipped_steps"]) for line in _lines(out)][-3:] == [(5, 1), (6, 2), (7, 3)]


def test_the_bad_step_count_survives_a_resume(tmp_path, monkeypatch, capsys):
    """Two bad steps at the end of one run and a third at the start of its continuation are three in a
    row: the streak and the skipped total are part of the checkpoint."""
    out = tmp_path / "run"
    guard = ["--set", "train.max_bad_steps=3", "--set", "train.checkpoint_every=3"]
    monkeypatch.setenv(NAN_STEPS, "5,6")
    assert _train(out, 6, *guard) == 0
    monkeypatch.setenv(NAN_STEPS, "7")
    assert _train(out, 12, *guard, "--resume", "latest") == 3
    assert "at 3 consecutive steps up to step 7" in capsys.readouterr().err
    assert [line["skipped_steps"] for line in _lines(out)] == [0, 0, 0, 0, 1, 2, 3]
