"""`compare --launcher slurm` against a real single-node Slurm (Debian's munge, slurmctld and slurmd, started by the
fixture: tests/slurm_cluster.py). The smoke grid through Slurm, with one job cancelled by `scancel` mid-run, ends with
the same runs and report numbers as `--launcher local`; the cancelled run is submitted again by the next `compare`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import PARTITION, start_cluster, why_not

pytest.importorskip("submitit")
RUNS = ["none-none-s0", "none-none-s1", "easy_to_hard-none-s0", "easy_to_hard-none-s1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    started = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield started
    started.stop()


def _compare(out: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_curriculum.cli", "compare", "--preset", "smoke", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _results(out: Path) -> dict:
    """What the runs produced (their timings aside) and the report (its times, command and folder aside)."""
    results = {}
    for name in RUNS:
        run = out / "runs" / name
        evals = [{k: v for k, v in json.loads(line).items() if k != "checkpoint"} for line in open(run / "eval.jsonl")]
        metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
        metrics = [{k: v for k, v in m.items() if k != "images_per_s"} for m in metrics]
        results[name] = (evals, metrics, (run / "probe.jsonl").read_text())
    report = (out / "report.md").read_text().splitlines()
    timings = re.compile(r"\| `[a-z_]+-none-s\d` \||Grid wall time|diffusion-curriculum compare|out: ")
    results["report"] = [line for line in report if not timings.match(line)]  # times, the command, the folder
    return results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_smoke_grid_on_slurm_survives_a_scancel_and_ends_like_the_local_grid(cluster, tmp_path):
    env = {
        **cluster.env,
        "OMP_NUM_THREADS": "1",
        "DIFFUSION_CURRICULUM_SLURM_POLL_S": "0.5",
        "DIFFUSION_CURRICULUM_PROGRESS_EVERY": "1",
        "DIFFUSION_CURRICULUM_CACHE": str(tmp_path / "cache"),
    }
    local = _compare(tmp_path / "local", env, "--workers", "2")  # 1 torch thread per run, as in a 1-CPU Slurm job
    on_slurm = tmp_path / "slurm"
    first = _compare(on_slurm, env, "--launcher", "slurm", "--partition", PARTITION, "--time", "10")

    # cancel a job as soon as it runs: it has python and torch to import, 8 steps to train and 2 checkpoints to
    # evaluate before its done.json, seconds against this loop's tenth of a second
    book = on_slurm / "slurm" / "jobs.json"
    deadline, cancelled = time.monotonic() + 300, None
    while cancelled is None:
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read() if first.poll() else ""
        queue = subprocess.run(
            ["squeue", "--noheader", "--format=%i|%T"], env=env, capture_output=True, text=True
        ).stdout.split()
        running = {line.split("|")[0] for line in queue if line.endswith("|RUNNING")}
        jobs = json.loads(book.read_text()) if book.is_file() else {}
        for name, job in jobs.items():
            if job["job_id"] in running and not (on_slurm / "runs" / name / "done.json").exists():
                subprocess.run(["scancel", job["job_id"]], env=env, check=True)
                cancelled = (name, job["job_id"])
                break
        time.sleep(0.1)
    _, stderr = first.communicate(timeout=300)
    name, job_id = cancelled
    assert first.returncode == 2, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"diffusion-curriculum: error: run {name}: Slurm job {job_id} ended without finishing it")
    assert f"its log: {on_slurm / 'slurm' / job_id / f'{job_id}_0_log.err'}" in error
    assert not (on_slurm / "runs" / name / "done.json").exists()

    again = _compare(on_slurm, env, "--launcher", "slurm", "--partition", PARTITION, "--time", "10")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    assert "report:" in stdout
    resubmitted = json.loads(book.read_text())[name]["job_id"]
    assert resubmitted != job_id, "the cancelled run was not submitted again"
    assert re.search(rf"\b{name} \[job {resubmitted}\]", stderr), "the progress lines do not show the job id"
    assert re.search(r", jobs (\d+ queued, )?\d+ running", stderr), "the progress lines do not show the jobs' states"

    stdout, stderr = local.communicate(timeout=300)
    assert local.returncode == 0, stderr[-3000:]
    assert _results(on_slurm) == _results(tmp_path / "local")

    cli = [sys.executable, "-m", "diffusion_curriculum.cli"]
    only = subprocess.run(
        [*cli, "compare", "--preset", "smoke", "--out", str(on_slurm), "--report-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert only.returncode == 0, only.stderr[-3000:]
    assert _results(on_slurm) == _results(tmp_path / "local")
    assert os.path.getsize(on_slurm / "report.html") > 0
