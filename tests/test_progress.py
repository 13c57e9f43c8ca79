"""Progress of grids and studies: the jobs' progress files, the ETA from steps across jobs, and the plain lines
printed when stderr is not a terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.fault_injection import STEP_DELAY_ENV
from diffusion_curriculum.progress import PERIOD_ENV, JobPlan, ProgressBoard, report, reporting

LINE = re.compile(r"^\[grid tiny\] .*elapsed (\d+):(\d\d):(\d\d)", re.MULTILINE)


def test_a_job_writes_its_progress_at_most_once_a_second_and_removes_it(tmp_path):
    path = tmp_path / "progress" / "job.json"
    report("train", 1, 10)  # outside reporting(): nothing happens
    assert not path.exists()
    with reporting(path):
        report("train", 1, 10)
        assert json.loads(path.read_text())["done"] == 1
        report("train", 2, 10)  # within a second of the last write: skipped
        assert json.loads(path.read_text())["done"] == 1
        report("evaluate", 0, 3)  # a new phase is written at once
        assert json.loads(path.read_text()) | {"seconds": 0} == {
            "phase": "evaluate",
            "done": 0,
            "total": 3,
            "units": 0,
            "seconds": 0,
        }
        time.sleep(1.1)
        report("evaluate", 2, 3)
        assert json.loads(path.read_text())["units"] == 2
        report("evaluate", 3, 3)  # the end of a phase is always written
        assert json.loads(path.read_text())["done"] == 3
    assert not path.exists()


def _progress(folder, name: str, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_eta_comes_from_the_steps_done_across_jobs_before_any_run_finishes(tmp_path):
    """Two jobs of 100 steps and 2 evaluations (assumed to cost 10 steps each until one is timed), two
    workers: job a has done 40 steps in 20 s, job b 10 in 5 s, so a step takes 0.5 s."""
    plans = [JobPlan(n, (("train", 100), ("evaluate", 2)), (("evaluate", 10.0),)) for n in ("a", "b", "c")]
    board = ProgressBoard("grid t", tmp_path / "progress", plans, {"c"}, workers=2)
    _progress(board.folder, "a", phase="train", done=40, total=100, units=40, seconds=20.0)
    _progress(board.folder, "b", phase="train", done=10, total=100, units=10, seconds=5.0)
    board._read()
    fraction, left = board.estimate()
    # left: a 60 steps + 2 evaluations, b 90 steps + 2 evaluations: (30 + 10 + 45 + 10) s over two workers
    assert left == pytest.approx(95.0 / 2)
    assert fraction == pytest.approx(1 - 95.0 / 180.0)  # c is done: (3 x 60) s of work in all
    assert board.job_line("a") == "a: train 40/100 steps, 2.0 steps/s"
    # once an evaluation has been timed, its measured cost replaces the assumed one
    _progress(board.folder, "a", phase="evaluate", done=1, total=2, units=1, seconds=2.0)
    board._read()
    assert board.estimate()[1] == pytest.approx((1 * 2.0 + 90 * 0.5 + 2 * 2.0) / 2)
    assert board.job_line("a") == "a: evaluate 1/2 checkpoints, 2.0 s per checkpoint"


def test_no_eta_before_a_step_is_timed_and_a_bad_period_is_one_line(tmp_path, monkeypatch):
    board = ProgressBoard("grid t", tmp_path / "p", [JobPlan("a", (("train", 10),))], set(), workers=1)
    assert board.estimate() == (None, None)
    monkeypatch.setenv(PERIOD_ENV, "soon")
    with pytest.raises(UserError, match=PERIOD_ENV):
        ProgressBoard("grid t", tmp_path / "p", [], set(), workers=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_grid_prints_a_plain_progress_line_every_period_when_not_on_a_terminal(tmp_path):
    """A tiny grid slowed down to several seconds, with stderr a pipe and a 1 s period: a plain line (no carriage
    returns) at least every few seconds, naming the running job's step, then the wall and CPU time. By default the
    period is 30 s, so a grid under CI or nohup says something at least twice a minute."""
    grid = {
        "name": "tiny",
        "base": {
            "data": {"dataset": "gmm", "n_samples": 400},
            "model": {"arch": "mlp"},
            "curriculum": {"n_clusters": 3, "pacing": "fixed", "steps_per_stage": 4},
            "train": {"max_steps": 12, "batch_size": 16, "warmup_steps": 2, "sample_every": None},
        },
        "methods": ["none", "easy_to_hard"],
        "seeds": [0],
        "eval": {"every": 6, "n": 40, "steps": 3, "dense_every": 4, "dense_items": 32},
        "workers": 1,
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    env = {
        **os.environ,
        PERIOD_ENV: "1",
        STEP_DELAY_ENV: "0.25",  # 12 steps of each run take at least 3 s
        "OMP_NUM_THREADS": "1",
        "DIFFUSION_CURRICULUM_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffusion_curriculum.cli",
            "compare",
            "--config",
            str(tmp_path / "grid.yaml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr  # no carriage-return bars in a log
    stamps = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in LINE.findall(proc.stderr)]
    assert len(stamps) >= 4, proc.stderr[-3000:]
    summary = re.search(r"grid tiny: 2/2 runs done; wall time (\d+):(\d\d):(\d\d), CPU time", proc.stderr)
    assert summary, proc.stderr[-3000:]
    wall = int(summary[1]) * 3600 + int(summary[2]) * 60 + int(summary[3])
    # a line at least every 10 periods, start to end (generous: the machine may be loaded)
    gaps = [b - a for a, b in zip([0, *stamps], [*stamps, wall], strict=True)]
    assert max(gaps) <= 10, (gaps, proc.stderr[-3000:])
    assert re.search(r"\| (none|easy_to_hard)-none-s0: train \d+/12 steps", proc.stderr)
    assert not (out / "progress").exists()  # the jobs' progress files are gone with the grid
    assert json.loads((out / "grid.json").read_text())["cpu_s"] > 0
