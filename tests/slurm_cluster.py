"""A real single-node Slurm cluster on this machine for the end-to-end tests: Debian's munge, slurmctld and slurmd
started as root with every file (config, key, state, spool, logs, socket) in a temporary folder, no systemd needed.

`start_cluster` returns the environment (``SLURM_CONF``) that the Slurm client commands, and so ``compare
--launcher slurm``, need; `Cluster.stop` ends the three daemons it started (by their pid files)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "srun")
PARTITION = "debug"


def why_not() -> str | None:
    """Why this machine cannot start the test cluster, or None if it can."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"Slurm test cluster: {', '.join(missing)} not installed "
            "(apt-get install slurmctld slurmd slurm-client munge; .ci/run does)"
        )
    if os.geteuid() != 0:
        return "Slurm test cluster: slurmd must run as root to start jobs"
    return None


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]

    def stop(self) -> None:
        """SIGTERM the daemons this cluster started (from their pid files), then wait for them to go."""
        pids = []
        for name in ("slurmd", "slurmctld", "munged"):
            path = self.folder / f"{name}.pid"
            try:
                pids.append(int(path.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pids[-1], signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(folder: Path, timeout_s: float = 60) -> Cluster:
    """Start munged, slurmctld and slurmd for one node (``localhost``, every CPU of this machine) and one
    partition (``debug``), and wait until ``sinfo`` shows the node idle."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    sock = folder / "munge" / "munge.sock"
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=dctest",
                "SlurmctldHost=localhost",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={sock}",
                "CredType=cred/munge",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SchedulerType=sched/builtin",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "KillWait=5",  # seconds from a job's SIGTERM to its SIGKILL
                "MinJobAge=600",
                "InactiveLimit=0",
                f"NodeName=localhost NodeHostname={socket.gethostname()} CPUs={os.cpu_count()} RealMemory=1000 "
                "State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(folder, env)
    try:
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={folder / 'log' / 'munged.log'}",
                f"--pid-file={folder / 'munged.pid'}",
                f"--seed-file={folder / 'munge' / 'seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        subprocess.run(["slurmctld", "-i"], env=env, check=True, capture_output=True, timeout=30)
        subprocess.run(["slurmd", "-N", "localhost"], env=env, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout_s
        while True:
            state = subprocess.run(
                ["sinfo", "--noheader", "--format=%T", f"--partition={PARTITION}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            if state == "idle":
                return cluster
            if time.monotonic() > deadline:
                logs = (folder / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Slurm test node is {state or 'not listed'} after {timeout_s} s:\n{logs}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
