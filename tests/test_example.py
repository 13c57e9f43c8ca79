"""End to end: the diffusers-structured example (examples/diffusers_unconditional.py) trains through
every stage, and with two CPU processes a run killed and resumed with ``--resume_from_checkpoint
latest`` continues every rank's timesteps and losses bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diffusers_unconditional.py"
# stages of 1 + 1 steps (no smoothing), capped there: every stage within a few steps
FAST_STAGES = ["--n_clusters", "3", "--patience", "1", "--pacing_ema", "0", "--cap_multiple", "1"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_example_trains_through_every_stage_with_accumulation_and_sample_prediction(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(EXAMPLE),
        "--output_dir",
        str(out),
        "--max_train_steps",
        "8",
        "--gradient_accumulation_steps",
        "2",
        "--prediction_type",
        "sample",
        "--train_batch_size",
        "16",
        "--num_samples",
        "4",
        "--use_ema",
        "--log_draws",
        *FAST_STAGES,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = _records(out / "draws_rank0.jsonl")
    assert [r["step"] for r in records] == [s for s in range(1, 9) for _ in range(2)]  # 2 micro-batches a step
    assert "stage 3/3" in proc.stdout  # through every stage
    assert all(loss > 0 for r in records for loss in r["losses"])
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _torchrun(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(EXAMPLE),
        "--output_dir",
        str(out),
        "--max_train_steps",
        "24",
        "--checkpointing_steps",
        "4",
        "--train_batch_size",
        "8",
        "--num_samples",
        "0",
        "--log_draws",
        "--use_ema",
        *FAST_STAGES,
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc): torchrun starts its workers in sessions of their
    own, so killing its process group would leave them running."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task ended meanwhile
                pass
    return found


@pytest.mark.slow
def test_two_processes_killed_and_resumed_continue_every_rank_bit_for_bit(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    proc = subprocess.run(_torchrun(whole), capture_output=True, text=True, timeout=400, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = subprocess.Popen(_torchrun(cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 300
    while not (cut / "checkpoint-4").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _tree(run.pid):  # the whole run, both ranks, wherever they are
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait(timeout=60)
    assert (cut / "checkpoint-4").exists(), run.stderr.read()[-3000:]

    proc = subprocess.run(
        _torchrun(cut, "--resume_from_checkpoint", "latest"), capture_output=True, text=True, timeout=400, env=_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        records = _records(cut / f"draws_rank{rank}.jsonl")
        marker = max(i for i, r in enumerate(records) if "resumed_from" in r)
        start = records[marker]["resumed_from"]
        assert 4 <= start < 24, start  # killed after the first checkpoint, before the end
        after = records[marker + 1 :]
        expected = [r for r in _records(whole / f"draws_rank{rank}.jsonl") if r["step"] > start]
        assert [r["step"] for r in after] == list(range(start + 1, 25))
        assert after == expected, f"rank {rank} differs after resuming from step {start}"
    ranks = [_records(whole / f"draws_rank{rank}.jsonl") for rank in (0, 1)]
    assert ranks[0] != ranks[1]  # each rank drew its own timesteps and noise
    assert "stage 3/3" in proc.stdout
