"""Kill anywhere, resume exactly: a curriculum run SIGKILLed at seeded random points (before its
first checkpoint, mid-step, while a checkpoint is being written, during start-up) and restarted
with ``--resume latest`` each time ends identical to the uninterrupted run."""

import random
import time
from pathlib import Path

import pytest

from ._run import assert_same_run, cli_env, kill, last_logged_step, output, records, run, start, train_cmd, wait_until

SEED = 7
SLOW_SAVE = {"DIFFUSION_CURRICULUM_TEST_SAVE_DELAY": "0.5"}  # each checkpoint file then takes 0.5 s more


def _staging_with_a_file(out: Path) -> bool:
    root = out / "checkpoints"
    return root.is_dir() and any(any(p.iterdir()) for p in root.glob(".tmp_step_*") if p.is_dir())


@pytest.mark.slow
def test_a_run_killed_at_random_points_resumes_to_the_uninterrupted_result(tmp_path, cache, reference_run):
    rng = random.Random(SEED)
    out = tmp_path / "run"
    env = cli_env(cache)
    kills = []

    def segment(kind: str) -> str:
        """Start the run (fresh the first time, else --resume latest), kill it as ``kind`` says."""
        resume = ["--resume", "latest"] if (out / "config.yaml").exists() else []
        log = tmp_path / f"segment{len(kills)}.log"
        stale = last_logged_step(out)  # lines up to here may be left from the previous segment
        proc = start(train_cmd(out, *resume), {**env, **SLOW_SAVE} if kind != "step" else env, tmp_path, log)
        if kind == "startup":  # while importing and building, before anything is written
            time.sleep(rng.uniform(0.2, 2.0))
        elif kind == "before_first_checkpoint":  # after step 2's line, inside step 3 or its (slowed) checkpoint
            wait_until(lambda: last_logged_step(out) >= 2, proc, "the first log line")
            time.sleep(rng.uniform(0.0, 0.3))
        elif kind == "in_checkpoint":  # a staging folder holds a file: the checkpoint is half-written
            target = stale + rng.randint(1, 4)
            wait_until(lambda: last_logged_step(out) >= target, proc, f"step {target}")
            wait_until(lambda: _staging_with_a_file(out), proc, "a checkpoint being written")
        else:  # somewhere in the steps after a random later one
            target = stale + rng.randint(1, 5)
            wait_until(lambda: last_logged_step(out) >= target, proc, f"step {target}")
            time.sleep(rng.uniform(0.0, 0.08))
        kill(proc)
        kills.append((kind, last_logged_step(out)))
        return output(log)

    segment("before_first_checkpoint")
    assert not any((out / "checkpoints").glob("step_*")), "the first kill was meant to land before any checkpoint"
    text = segment("step")
    assert "holds no checkpoint yet; starting it again from step 0" in text
    segment("in_checkpoint")
    assert any((out / "checkpoints").glob(".tmp_step_*")), "the kill was meant to leave a half-written checkpoint"
    segment("step")
    segment("startup")
    segment("step")
    assert len(kills) == 6

    proc = run(train_cmd(out, "--resume", "latest"), env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout
    assert_same_run(reference_run, out)
    assert {r["stage"] for r in records(out)} == {1, 2, 3, 4}  # the run crossed every stage boundary
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"staging or half-deleted folders left behind: {leftovers}"
