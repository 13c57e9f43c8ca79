"""Distributed consistency under faults, two CPU processes under torchrun: a NaN loss on one rank is
skipped by both; a rank killed with SIGKILL ends the job at once with torchrun naming it; a rank
that hangs makes the other give up after ``train.dist_timeout_s`` instead of waiting forever; and
after both, ``--resume latest`` ends exactly where an uninterrupted two-process run ends."""

import random
import signal
import subprocess
import time

import psutil
import pytest

from diffusion_curriculum.runs import checkpoints as ckpt

from ._run import (
    assert_same_run,
    cli_env,
    last_logged_step,
    output,
    records,
    run,
    start,
    torchrun_cmd,
    wait_until,
)

SEED = 11
MAX_STEPS = 16
ARGS = [
    "--max-steps",
    str(MAX_STEPS),
    "--batch-size",
    "8",
    "--clusters",
    "4",
    "--pacing",
    "fixed",
    "--set",
    "curriculum.steps_per_stage=3",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.sample_every=null",
]
HANG_TIMEOUT_S = 10


def _workers(job: subprocess.Popen) -> tuple[psutil.Process, psutil.Process]:
    """The torchrun worker processes of local ranks 0 and 1."""
    children = {p.environ().get("LOCAL_RANK"): p for p in psutil.Process(job.pid).children()}
    return children["0"], children["1"]


def _assert_gone(*workers: psutil.Process) -> None:
    """No worker of a failed job outlives it."""
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, alive


@pytest.mark.slow
def test_two_process_faults_end_cleanly_and_resume_exactly(tmp_path, cache):
    rng = random.Random(SEED)
    env = cli_env(cache, DIFFUSION_CURRICULUM_FAULT_NAN_STEPS="3@1")  # a bad loss on rank 1 only
    reference, out = tmp_path / "reference", tmp_path / "run"
    proc = run(torchrun_cmd(*ARGS, "--out", str(reference)), env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = records(reference)
    assert [r["skipped_steps"] for r in lines[:4]] == [0, 0, 1, 1]  # both ranks skipped step 3
    for rank in (0, 1):
        rank_state = ckpt.load_rank_state(reference / "checkpoints" / f"step_{MAX_STEPS:08d}", rank)
        assert rank_state["sampler"]["step"] == MAX_STEPS - 1, rank  # each rank observed the same 15 steps

    # SIGKILL rank 1 after the first checkpoint: torchrun stops the job at once and names the rank.
    job = start(torchrun_cmd(*ARGS, "--out", str(out)), env, tmp_path, tmp_path / "kill.log")
    target = rng.randint(5, 8)
    wait_until(lambda: last_logged_step(out) >= target, job, f"step {target}")
    rank0, rank1 = _workers(job)
    rank1.send_signal(signal.SIGKILL)
    assert job.wait(timeout=60) != 0
    _assert_gone(rank0, rank1)
    text = output(tmp_path / "kill.log")
    assert "Root Cause" in text and "local_rank: 1" in text and "SIGKILL" in text, text[-3000:]

    # Stop rank 1 without killing it (a hung peer torchrun cannot see): rank 0 gives up after the
    # collective timeout and the job ends, instead of waiting forever.
    resume = ["--out", str(out), "--resume", "latest"]
    stale = last_logged_step(out)
    hang_args = [*ARGS, *resume, "--set", f"train.dist_timeout_s={HANG_TIMEOUT_S}"]
    job = start(torchrun_cmd(*hang_args), env, tmp_path, tmp_path / "hang.log")
    target = stale + rng.randint(1, 3)
    wait_until(lambda: last_logged_step(out) >= target, job, f"step {target}")
    rank0, rank1 = _workers(job)
    rank1.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        rank0.wait(timeout=HANG_TIMEOUT_S + 30)
        waited = time.monotonic() - stopped
    finally:
        rank1.send_signal(signal.SIGCONT)  # lets the launcher's SIGTERM reach it
    assert job.wait(timeout=60) != 0
    _assert_gone(rank0, rank1)
    assert HANG_TIMEOUT_S - 1 <= waited < HANG_TIMEOUT_S + 30
    text = output(tmp_path / "hang.log")
    # gloo words its collective timeout in two ways, by where the stopped peer was in the exchange
    timed_out = (f"Timed out waiting {HANG_TIMEOUT_S * 1000}ms", "Application timeout caused pair closure")
    assert any(message in text for message in timed_out), text[-3000:]
    assert "During handling of the above exception" not in text  # no second wait after the failure

    proc = run(torchrun_cmd(*ARGS, *resume), env, cwd=tmp_path)
    # the ranks' own one-line errors first: torchrun's report of a failed rank fills the tail
    own = "\n".join(line for line in proc.stderr.splitlines() if "diffusion-curriculum:" in line)
    assert proc.returncode == 0, own + "\n" + proc.stderr[-3000:]
    assert_same_run(reference, out, world=2)
    lines = records(out)
    assert all(r["rank_stages"] == [r["stage"], r["stage"]] for r in lines)
    assert {r["stage"] for r in lines} == {1, 2, 3, 4}
