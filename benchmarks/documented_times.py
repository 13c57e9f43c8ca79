"""Re-measure the times the README and docs state, as whole commands, and say on what machine.

Each job runs a documented command in a fresh process (``subprocess``), ``--repeats`` times, and
reports the median wall time and the median CPU time of the process and its children (from
``resource.getrusage(RUSAGE_CHILDREN)``), with the CPU model, the core count and the load average
before and after: a time measured while something else used the cores says so.

Jobs (``--only`` picks some; the default is the quick ones, ``startup`` and ``example``):

- ``startup``: ``diffusion-curriculum --help``, ``info`` and ``clusters`` (README: under 2 s each
  on an idle 2-core machine);
- ``example``: ``OMP_NUM_THREADS=1 python examples/diffusers_unconditional.py`` (the README's time);
- ``train``: ``diffusion-curriculum train`` with the default config (docs/training.md);
- ``quick``: ``diffusion-curriculum compare --preset quick`` (the README's main job; tens of minutes);
- ``tests``: ``python -m pytest -q`` (the README's test time; minutes).

Run::

    python benchmarks/documented_times.py                      # startup and example
    python benchmarks/documented_times.py --only quick tests --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ["diffusion-curriculum"]
JOBS: dict[str, list[tuple[str, list[str], dict[str, str]]]] = {
    "startup": [
        ("diffusion-curriculum --help", [*CLI, "--help"], {}),
        ("diffusion-curriculum info", [*CLI, "info"], {}),
        ("diffusion-curriculum clusters", [*CLI, "clusters"], {}),
    ],
    "example": [
        (
            "OMP_NUM_THREADS=1 python examples/diffusers_unconditional.py",
            [sys.executable, str(ROOT / "examples" / "diffusers_unconditional.py"), "--output_dir", "{tmp}/example"],
            {"OMP_NUM_THREADS": "1"},
        )
    ],
    "train": [("diffusion-curriculum train", [*CLI, "train", "--out", "{tmp}/train"], {})],
    "quick": [("diffusion-curriculum compare --preset quick", [*CLI, "compare", "--out", "{tmp}/quick"], {})],
    "tests": [("python -m pytest -q", [sys.executable, "-m", "pytest", "-q", str(ROOT / "tests")], {})],
}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_once(argv: list[str], env: dict[str, str], tmp: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, the process and its children) and exit code of one run."""
    argv = [a.replace("{tmp}", tmp) for a in argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=tmp, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(JOBS), default=["startup", "example"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (the median is quoted)")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    for job in args.only:
        for label, command, env in JOBS[job]:
            walls, cpus, codes = [], [], []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    wall, cpu, code = run_once(command, env, tmp)
                walls.append(wall)
                cpus.append(cpu)
                codes.append(code)
            status = "ok" if not any(codes) else f"exit codes {codes}"
            print(
                f"{label}: wall {statistics.median(walls):.1f} s, CPU {statistics.median(cpus):.1f} s "
                f"(median of {args.repeats}; {status})"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end (above 0.5: the cores were shared, times are long)")


if __name__ == "__main__":
    main()
