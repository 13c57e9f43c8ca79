"""A convergence study SIGKILLed mid-way leaves no worker behind, and restarted with the same command
skips its finished runs, resumes the others from their checkpoints and ends with the numbers of an
uninterrupted study."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from ._run import cli_env, kill, run, start, wait_until

STUDY_ARGS = ["--dataset", "gmm", "--model", "mlp-tiny", "--intervals", "2", "--max-steps", "1000", "--seeds", "0"]
STUDY_ARGS += ["--set", "train.checkpoint_every=100", "--workers", "2"]


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "diffusion_curriculum.cli", "study", "convergence", *STUDY_ARGS, "--out", str(out)]


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _numbers(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s", "runs_wall_s")} for r in rows]


@pytest.mark.slow
def test_killed_study_leaves_no_workers_and_resumes_to_the_same_numbers(tmp_path, cache):
    env = cli_env(cache)
    reference = run(_cmd(tmp_path / "reference"), env, tmp_path, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    proc = start(_cmd(out), env, tmp_path, tmp_path / "killed.log")
    checkpoints = lambda: any(out.glob("runs/*/checkpoints/step_*"))  # noqa: E731
    wait_until(checkpoints, proc, "a worker's first checkpoint", timeout=300, poll=0.05)
    workers = _children(proc.pid)
    assert workers, "the study should run its jobs in worker processes"
    kill(proc)
    deadline = time.monotonic() + 3  # well inside the job each worker was running (~6 s)
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:  # clean up before failing
        os.kill(w, 9)
    assert not alive, f"workers {alive} outlived the killed study"
    assert not (out / "study.jsonl").exists()

    again = run(_cmd(out), env, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _numbers(out) == _numbers(tmp_path / "reference")
