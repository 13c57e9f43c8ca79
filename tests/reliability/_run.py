"""Helpers of the fault-injection suite: CLI subprocesses that are bitwise reproducible, polling a
running job, and exact comparison of two runs' final state."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from diffusion_curriculum.runs import checkpoints

# The curriculum run the exactness tests repeat: adaptive pacing (patience 3 on an EMA of decay 0.5,
# so stages of at least 2 + 3 steps) whose per-stage cap (1 times that shortest stage, 5 steps) makes
# it cross every stage boundary, LR warm-up throughout, and log lines (every 2 steps) that do not
# line up with checkpoints (every 3), so a resume lands in the middle of a logging window.
RUN_ARGS = [
    "--max-steps",
    "24",
    "--batch-size",
    "8",
    "--clusters",
    "4",
    "--patience",
    "3",
    "--set",
    "curriculum.ema=0.5",
    "--set",
    "curriculum.cap_multiple=1",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "train.log_every=2",
    "--set",
    "train.keep_checkpoints=4",
    "--set",
    "train.sample_every=null",
]
# A run small enough to train in-process in a fraction of a second: vector data, an MLP, checkpoints at
# steps 2, 4 and 6, the held-out probe at the same steps, a line per step.
TINY_ARGS = [
    "--dataset",
    "gmm",
    "--model",
    "mlp-tiny",
    "--max-steps",
    "6",
    "--batch-size",
    "8",
    "--clusters",
    "2",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.sample_every=null",
    "--set",
    "train.probe_every=2",
    "--set",
    "train.probe_items=16",
    "--set",
    "train.keep_checkpoints=3",
]
TIMING_KEYS = ("images_per_s",)
FAULT_ENVS = ("DIFFUSION_CURRICULUM_FAULT_NAN_STEPS", "DIFFUSION_CURRICULUM_TEST_SAVE_DELAY")


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    """One intra-op thread everywhere (bitwise-reproducible CPU results), unbuffered output, no fault hooks
    unless asked for."""
    env = {k: v for k, v in os.environ.items() if k not in FAULT_ENVS}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        DIFFUSION_CURRICULUM_CACHE=str(cache),
        **extra,
    )
    return env


def train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffusion_curriculum.cli", "train", *RUN_ARGS, "--out", str(out), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(*args: str) -> list[str]:
    """Two CPU processes under torchrun, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "diffusion_curriculum.cli",
        "train",
        *args,
    ]


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start a job whose stdout and stderr go to ``log`` (read back with :func:`output`)."""
    with log.open("w") as f:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)


def output(log: Path) -> str:
    """A job's output with progress-bar redraws turned into lines."""
    return log.read_text(errors="replace").replace("\r", "\n")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL a job and reap it; it must not have ended on its own first."""
    assert proc.poll() is None, f"the job ended (code {proc.returncode}) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def last_logged_step(out: Path) -> int:
    """The step of metrics.jsonl's last complete line (0 when there is none)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    step = 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError):
            break  # a line being written
    return step


def wait_until(condition: Any, proc: subprocess.Popen, what: str, timeout: float = 120, poll: float = 0.002) -> None:
    """Poll ``condition()`` while ``proc`` runs; fail if the job ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the job ended (code {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def records(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without its timing fields."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested checkpoint contents: tensors bit for bit, containers key by key."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype} {a.shape} != {b.dtype} {b.shape}"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def final_checkpoint(out: Path) -> Path:
    return sorted(p for p in (out / "checkpoints").iterdir() if p.name.startswith("step_"))[-1]


def assert_same_run(reference: Path, out: Path, world: int = 1) -> None:
    """Weights, EMA, optimizer, LR schedule, counters, every rank's sampler and generator state, the
    final model files and metrics.jsonl (timing aside) all equal the reference run's."""
    ref_ckpt, ckpt = final_checkpoint(reference), final_checkpoint(out)
    assert ref_ckpt.name == ckpt.name
    for name in ["state", *range(world)]:
        a = checkpoints.load_state(ref_ckpt) if name == "state" else checkpoints.load_rank_state(ref_ckpt, name)
        b = checkpoints.load_state(ckpt) if name == "state" else checkpoints.load_rank_state(ckpt, name)
        if name == "state":  # the saved config names the run folder, which differs by design
            a["config"]["out"] = b["config"]["out"] = None
        assert_identical(a, b, str(name))
    files = sorted(p.relative_to(reference) for p in (reference / "model").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in (out / "model").rglob("*") if p.is_file())
    for rel in files:
        assert (reference / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert records(reference) == records(out)
    steps = [r["step"] for r in records(out)]
    assert steps == sorted(set(steps)), "duplicated or out-of-order log lines"
