"""The jobs of a comparison grid or a convergence study as Slurm jobs, one per unfinished run, through submitit.

Each run is already a resumable, self-contained folder (``OUT/runs/NAME``, finished when it holds its
``done.json``), so a cluster job is just the run's ordinary job function, called by submitit on a node. What is
added here is the bookkeeping that lets the parent command come and go:

- ``OUT/slurm/jobs.json`` records, per run, the id of the job last submitted for it (JSON, written atomically
  the moment sbatch answers). A restarted command re-attaches to a job that is still queued or running instead
  of submitting it twice, skips finished runs, and submits the others again (they resume from their newest
  checkpoint);
- ``OUT/slurm/<job id>/`` is submitit's folder for the job: its sbatch script, its pickles and its logs;
- a job whose time limit nears (or that a cluster preempts with submitit's signal, SIGUSR2 by default) stops at
  a safe point, a checkpoint being written being finished first, and is requeued by submitit's own checkpointing
  hook; the requeued job resumes the run exactly from its newest checkpoint. SIGTERM (``scancel``) stops it the
  same way, without a requeue: the next ``compare`` (or ``study``) submits it again.

The parent polls ``squeue``, not submitit's job watcher, because that one asks ``sacct``, which needs the
cluster's accounting database (many small clusters, and Debian's packages out of the box, have none); a job
that left the queue without its run being done has failed, and the error names its log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import ConfigError, RunError, UserError
from .interrupts import Interrupted, handle_stop_signals
from .progress import env_seconds

__all__ = ["LAUNCHERS", "POLL_ENV", "SLURM_DIR", "SlurmOptions", "check_cluster", "slurm_imap"]

LAUNCHERS = ("local", "slurm")
SLURM_DIR = "slurm"  # OUT/slurm: jobs.json and submitit's folders
JOBS_FILE = "jobs.json"
POLL_ENV = "DIFFUSION_CURRICULUM_SLURM_POLL_S"  # seconds between two looks at the queue (default 10)
DEFAULT_POLL_S = 10.0
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
_SQUEUE_TRIES = 3  # a controller that does not answer this many polls in a row is an error


@dataclass(frozen=True)
class SlurmOptions:
    """What each run's job asks Slurm for: the grid file's ``slurm:`` mapping, overridden by the CLI's flags.

    ``time`` is the time limit in minutes; ``gpus_per_run`` above 1 trains the run under torchrun with one
    process per GPU inside its job; ``sbatch`` holds any other sbatch option (``{constraint: a100}``, a value of
    ``true`` for a flag such as ``exclusive``)."""

    partition: str | None = None
    time: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    sbatch: Mapping[str, str | int | bool] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, raw: Any, key: str = "slurm") -> SlurmOptions:
        """The options of a grid file's ``slurm:`` mapping (``key`` names it in errors), validated in one line."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: expected a mapping of Slurm options (partition, time, gpus_per_run, ...)")
        known = sorted(f.name for f in cls.__dataclass_fields__.values())
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown Slurm option (known: {', '.join(known)})")
        return cls().updated(**raw, key=key)

    def updated(self, *, key: str = "slurm", **values: Any) -> SlurmOptions:
        """These options with ``values`` (those not None) in place, each checked; ``key`` prefixes error messages
        (a flag's name is given whole by passing ``key=""`` and dashed names)."""
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "partition": (_is_text, "a partition name"),
            "time": (lambda v: _is_int(v) and v >= 1, "a time limit in minutes (a positive integer)"),
            "gpus_per_run": (lambda v: _is_int(v) and v >= 0, "a number of GPUs (0 or more)"),
            "cpus_per_run": (lambda v: _is_int(v) and v >= 1, "a number of CPUs (1 or more)"),
            "mem_gb": (lambda v: _is_number(v) and v > 0, "memory in GB (a number above 0)"),
            "account": (_is_text, "an account name"),
            "qos": (_is_text, "a QoS name"),
            "sbatch": (_is_sbatch, "a mapping of sbatch options to values (text, numbers, or true for a flag)"),
        }
        new = {}
        for name, value in values.items():
            if value is None:
                continue
            check, expected = checks[name]
            if not check(value):
                where = f"{key}.{name}" if key else "--" + name.replace("_", "-")
                raise ConfigError(f"{where}: expected {expected}, got {value!r}")
            new[name] = dict(value) if name == "sbatch" else value
        if "sbatch" in new:
            new["sbatch"] = {**self.sbatch, **new["sbatch"]}
        return replace(self, **new)

    def executor_parameters(self, job_name: str) -> dict[str, Any]:
        """These options as submitit's SlurmExecutor parameters for one run's job."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time,
            "cpus_per_task": self.cpus_per_run,
            "partition": self.partition,
            "gpus_per_node": self.gpus_per_run or None,
            "mem": None if self.mem_gb is None else _mem(self.mem_gb),
            "account": self.account,
            "qos": self.qos,
            "additional_parameters": dict(self.sbatch) or None,
        }
        return {k: v for k, v in params.items() if v is not None}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_sbatch(value: Any) -> bool:
    return isinstance(value, dict) and all(
        _is_text(k) and (isinstance(v, str | int | float) and v is not False) for k, v in value.items()
    )


def _mem(mem_gb: float) -> str:
    """Memory as sbatch reads it (submitit's own converter is private)."""
    return f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{round(mem_gb * 1024)}M"


# ----- the parent's side --------------------------------------------------------------------------------------
def check_cluster(options: SlurmOptions) -> None:
    """Refuse, in one line and before anything is written, a machine that cannot submit to Slurm (no ``sbatch``
    on PATH) or a partition the cluster does not have; also that submitit (the [slurm] extra) is missing, as a
    ModuleNotFoundError the CLI turns into its one line."""
    import submitit  # noqa: F401  (the [slurm] extra: checked before anything is written)

    for command in ("sbatch", "squeue", "sinfo"):
        if shutil.which(command) is None:
            raise UserError(
                f"--launcher slurm: no {command} on PATH; run on a machine that submits to your Slurm cluster "
                "(a login node), or use --launcher local"
            )
    if options.partition is None:
        return
    listed = _slurm_command(["sinfo", "--noheader", "--format=%P"])
    partitions = sorted({line.strip().rstrip("*") for line in listed.splitlines() if line.strip()})
    if options.partition not in partitions:
        raise UserError(
            f"partition {options.partition!r} does not exist on this Slurm cluster "
            f"(its partitions: {', '.join(partitions) or 'none'})"
        )


def _slurm_command(args: list[str]) -> str:
    """A Slurm client command's output; its error as one line."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{args[0]}: {exc}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise UserError(f"{args[0]}: {detail}")
    return result.stdout


def _queue() -> dict[str, str]:
    """The state of every job of this user that Slurm still holds (queued, running, completing), by job id."""
    out = _slurm_command(["squeue", "--noheader", "--format=%i|%T", f"--user={os.getuid()}"])
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


class _JobBook:
    """OUT/slurm/jobs.json: the job last submitted for each run (its id and its log), rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, dict[str, str]] = {}
        if path.is_file():
            from .runs.records import read_json

            jobs = read_json(path, "the Slurm jobs of this folder's runs")
            if not isinstance(jobs, dict):
                raise RunError(f"{path}: expected a mapping of run names to Slurm jobs")
            self.jobs = jobs

    def get(self, name: str) -> dict[str, str] | None:
        return self.jobs.get(name)

    def record(self, name: str, job_id: str, log: Path) -> None:
        self.jobs[name] = {"job_id": job_id, "log": str(log)}
        write_atomic(self.path, json.dumps(self.jobs, indent=1, sort_keys=True))


def _last_line(log: Path) -> str:
    """The last line of a job's log that says something (at most 200 characters), or why there is none."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "its log is empty"


def slurm_imap(
    func: Callable[[tuple], Any],
    jobs: Sequence[tuple],
    names: Sequence[str],
    out: Path,
    options: SlurmOptions,
    *,
    is_done: Callable[[str], bool],
    board: Any = None,
    train_config: Callable[[tuple], Any] | None = None,
    executor: Any = None,
    queue_states: Callable[[], dict[str, str]] = _queue,
) -> Iterator[Any]:
    """``func(job)`` for every job, in completion order, each unfinished one run as a Slurm job (what
    :func:`~.jobs.imap_jobs` does with local worker processes).

    ``names[i]`` names ``jobs[i]``'s run; ``is_done(name)`` says whether it is finished (its ``done.json``), and
    then ``func(job)``, called here, returns its record without training. A run whose recorded job is still in
    the queue is waited for, not submitted again. ``board`` (a :class:`~.progress.ProgressBoard`) shows each
    job's state and id. ``train_config(job)`` gives a run's training config, needed when ``options.gpus_per_run``
    is above 1 (the job trains it under torchrun). A job that leaves the queue without finishing its run stops
    this with a RunError naming the run, the job and its log; the other jobs go on, and the same command run
    again re-attaches to them and submits the failed run again.

    ``executor`` (default: submitit's SlurmExecutor writing into OUT/slurm/<job id>) and ``queue_states`` (the
    jobs still queued or running, by id; default: ``squeue``'s) let the tests drive the same bookkeeping with
    submitit's LocalExecutor."""
    import submitit

    pending = dict(zip(names, jobs, strict=True))
    for name in list(pending):
        if is_done(name):
            yield func(pending.pop(name))
    if not pending:
        return
    folder = out / SLURM_DIR
    book = _JobBook(folder / JOBS_FILE)
    queue = queue_states()
    executor = executor or submitit.SlurmExecutor(folder=folder / "%j")
    processes = options.gpus_per_run if options.gpus_per_run > 1 else 1
    if processes > 1 and train_config is None:
        raise ConfigError("gpus_per_run: more than one GPU per run is not supported for these jobs")
    for name, job in pending.items():
        known = book.get(name)
        if known is not None and known["job_id"] in queue:
            continue  # still queued or running: re-attach, never submit twice
        if isinstance(executor, submitit.SlurmExecutor):
            executor.update_parameters(**options.executor_parameters(name))
        try:
            submitted = executor.submit(SlurmRun(func, processes, train_config), job)
        except submitit.core.utils.FailedJobError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()] or ["no reason given"]
            raise UserError(f"sbatch refused run {name}: {lines[-1]}") from None
        book.record(name, submitted.job_id, submitted.paths.stderr)
        queue[submitted.job_id] = "PENDING"
    period, misses = env_seconds(POLL_ENV, DEFAULT_POLL_S, "looks at the Slurm queue"), 0
    while pending:
        for name in list(pending):
            job_id, log = book.jobs[name]["job_id"], Path(book.jobs[name]["log"])
            state = queue.get(job_id)
            if is_done(name):  # after the queue was read: a job that left it had written done.json before
                record = func(pending.pop(name))
                if board is not None:
                    board.job_status(name, "done", job_id)
                yield record
            elif state is None:
                if board is not None:
                    board.job_status(name, "failed", job_id)
                raise RunError(
                    f"run {name}: Slurm job {job_id} ended without finishing it ({_last_line(log)}); its log: {log}; "
                    "run the same command again to submit it again (the other jobs go on)"
                )
            elif board is not None:
                board.job_status(name, "queued" if state in _QUEUED else "running", job_id)
        if not pending:
            return
        time.sleep(period)
        try:
            queue, misses = queue_states(), 0
        except UserError:
            misses += 1
            if misses >= _SQUEUE_TRIES:
                raise


# ----- the job's side -----------------------------------------------------------------------------------------
class SlurmRun:
    """What a run's Slurm job calls: the run's job function (``func(job)``), under the stop signals' rules.

    submitit calls it in the job; it has submitit's checkpointing hook (:meth:`checkpoint`, which is all
    ``submitit.helpers.Checkpointable`` provides: this class does not subclass it so that this module imports
    without submitit). The signals, as the CLI handles them: SIGTERM stops the run at a safe point (a checkpoint
    being written is finished first) with exit code 143; submitit's preemption/time-limit signal (SIGUSR2) stops
    it the same way and then calls submitit's own handler, which calls :meth:`checkpoint`, requeues the job and
    exits. The run resumes from its newest checkpoint when the job starts again."""

    def __init__(
        self, func: Callable[[tuple], Any], processes: int = 1, train_config: Callable[[tuple], Any] | None = None
    ) -> None:
        self.func, self.processes, self.train_config = func, processes, train_config

    def __call__(self, job: tuple) -> Any:
        import submitit

        preempt = signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]
        requeue = signal.getsignal(preempt)  # submitit's checkpoint-and-requeue handler, set before it called us
        caught: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            # held like SIGTERM while a checkpoint is written, then acted on (interrupts.deferred_signals)
            caught.append(signum)
            signal.raise_signal(signal.SIGTERM)

        with handle_stop_signals():
            signal.signal(preempt, stop)
            try:
                if self.processes > 1:
                    self._train_distributed(job)
                return self.func(job)
            except Interrupted as exc:
                if caught and callable(requeue):
                    print("diffusion-curriculum: preempted or near the time limit: requeued", file=sys.stderr)
                    signal.signal(preempt, requeue)
                    requeue(preempt, None)  # submitit's hook: checkpoint() below, `scontrol requeue`, exit
                print(f"diffusion-curriculum: stopped by {exc}; the next command submits it again", file=sys.stderr)
                raise SystemExit(exc.exit_code) from None
            finally:
                signal.signal(preempt, requeue)

    def checkpoint(self, job: tuple) -> Any:
        """submitit's hook: requeue the same call. The run's state is its own newest checkpoint, which the run's
        job function resumes from, so nothing needs to be carried in the resubmitted pickle."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)

    def _train_distributed(self, job: tuple) -> None:
        """Train the run under torchrun with one process per GPU of the job (the trainer's Accelerate then runs
        data-parallel), resuming it as ``train_or_resume`` would; the job function evaluates it afterwards in
        this process, finding it trained."""
        import submitit

        from .config import dump_config
        from .runs import checkpoints as ckpt
        from .runs import layout

        config = self.train_config(job)
        path = submitit.JobEnvironment().paths.folder / "train.yaml"  # beside the job's logs, not in the run
        dump_config(config, path)
        resume = bool(ckpt.list_checkpoints(config.out_dir / layout.CHECKPOINTS))
        command = torchrun_command(path, self.processes, resume)
        result = subprocess.run(command)
        if result.returncode != 0:
            raise RunError(f"run {config.out_dir.name}: training under torchrun exited with code {result.returncode}")


def torchrun_command(config_file: Path, processes: int, resume: bool) -> list[str]:
    """The command that trains one run (its resolved config in ``config_file``) with ``processes`` processes on
    this node: ``torchrun --standalone`` around the CLI's ``train``, resuming its newest checkpoint if it has one."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "diffusion_curriculum.cli",
        "train",
        "--config",
        str(config_file),
        *(["--resume", "latest"] if resume else ["--overwrite"]),
    ]
