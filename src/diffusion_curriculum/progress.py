"""Live progress of the jobs a comparison grid or a study runs in worker processes.

A job reports where it is with :func:`report` (the trainer after every step, the evaluation before every
checkpoint); inside :func:`reporting` that writes a small JSON file, OUT/progress/NAME.json, atomically and at
most once a second. The main process's :class:`ProgressBoard` reads those files, so it needs no channel to the
workers and works the same with one worker (in-process) or many. It shows an overall bar with an ETA computed
from the steps done across all jobs in this session (not from finished runs, which come in bursts), one line per
running job (name, phase, step/total, rate) and, at the end, the wall and CPU time of the main process and its
workers. Runs submitted as cluster jobs (``--launcher slurm``) also show their job's state (queued, running, done,
failed) and id, set by the launcher with :meth:`ProgressBoard.job_status`. On a terminal these are tqdm bars;
elsewhere (CI, ``nohup``, a log file) carriage-return bars would be noise, so one plain line is printed every
:data:`PERIOD_ENV` seconds (default 30) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .atomic import write_atomic
from .errors import ConfigError

__all__ = [
    "PERIOD_ENV",
    "PROGRESS_DIR",
    "JobPlan",
    "ProgressBoard",
    "cpu_seconds",
    "report",
    "reporting",
]

PROGRESS_DIR = "progress"  # OUT/progress/NAME.json while a job runs
PERIOD_ENV = "DIFFUSION_CURRICULUM_PROGRESS_EVERY"  # seconds between plain progress lines (not a terminal)
DEFAULT_PERIOD_S = 30.0
_WRITE_EVERY_S = 1.0  # a job rewrites its file at most this often (and at every change of phase)
_UNITS = {"train": "steps", "evaluate": "checkpoints"}
_JOB_STATES = ("queued", "running", "done", "failed")  # a cluster job's states, in the order they are counted


# ----- the job's side ------------------------------------------------------------------------------------------
class _Reporter:
    """Writes one job's progress file: its phase, units done of the phase's total, and the units done and
    seconds spent in the phase since this process entered it (what the board's rates are made of)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.phase: str | None = None
        self.phase_start = self.last_write = 0.0
        self.start_done = 0

    def update(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self.phase_start, self.start_done = phase, now, done
        elif now - self.last_write < _WRITE_EVERY_S and done < total:
            return
        self.last_write = now
        record = {
            "phase": phase,
            "done": done,
            "total": total,
            "units": done - self.start_done,
            "seconds": round(now - self.phase_start, 3),
        }
        try:
            write_atomic(self.path, json.dumps(record))
        except OSError:
            pass  # progress is for show: a full disk or a removed folder must not stop the job


_reporter: _Reporter | None = None


@contextmanager
def reporting(path: Path) -> Iterator[None]:
    """Within, :func:`report` calls of this process write ``path``; the file is removed on the way out."""
    global _reporter
    path.parent.mkdir(parents=True, exist_ok=True)
    _reporter = _Reporter(path)
    try:
        yield
    finally:
        _reporter = None
        path.unlink(missing_ok=True)


def report(phase: str, done: int, total: int) -> None:
    """Say that this process's job is at ``done`` of ``total`` units of ``phase`` (``train``: steps,
    ``evaluate``: checkpoints). Costs one comparison outside :func:`reporting`, so the trainer calls it every step."""
    if _reporter is not None:
        _reporter.update(phase, done, total)


# ----- the main process's side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPlan:
    """One job and the work it will do: ``(phase, units)`` in order, e.g. ``(("train", 1000), ("evaluate", 9))``.

    ``cost`` is what one unit of each phase is assumed to cost relative to a training step until the board has
    timed that phase (the ETA then uses the measured cost); phases without one count as free until timed."""

    name: str
    phases: tuple[tuple[str, int], ...]
    cost: tuple[tuple[str, float], ...] = ()


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process and of its finished, waited-for children (the pool's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _duration(seconds: float | None) -> str:
    """Seconds as h:mm:ss ("?" when unknown)."""
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def env_seconds(name: str, default: float, between: str) -> float:
    """A positive number of seconds from environment variable ``name`` (``default`` when unset); anything else
    is a one-line error saying it is the seconds ``between`` (e.g. "progress lines")."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}: expected seconds > 0 between {between}, got {text!r}")
    return value


class ProgressBoard:
    """What the user sees while a grid or study runs; use as a context manager around the jobs.

    ``folder`` is OUT/progress (emptied on entry: a file in it then belongs to a job of this session). The main
    thread calls :meth:`finished` as jobs end and :meth:`note` for a line of its own; a background thread redraws
    every second on a terminal, else prints a plain line every ``PERIOD_ENV`` seconds. On exit the bars close and
    :attr:`summary` (printed) gives the wall and CPU time; :attr:`wall_s` and :attr:`cpu_s` hold the numbers.
    ``quiet`` shows and prints nothing but still times the jobs.
    """

    def __init__(
        self,
        title: str,
        folder: Path,
        plans: list[JobPlan],
        done: set[str],
        workers: int,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
    ) -> None:
        self.title, self.folder, self.workers, self.quiet = title, Path(folder), max(1, workers), quiet
        self.plans = {p.name: p for p in plans}
        self.done = set(done) & set(self.plans)
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        # plain lines every PERIOD_ENV seconds, else 30 (a line at least twice a minute)
        self.period = 1.0 if self.interactive else env_seconds(PERIOD_ENV, DEFAULT_PERIOD_S, "progress lines")
        self.state: dict[str, dict[str, Any]] = {}  # running job -> its last progress record
        self.cluster: dict[str, tuple[str, str]] = {}  # a run's cluster job -> (its state, its job id)
        self.timed: dict[tuple[str, str], tuple[int, float]] = {}  # (job, phase) -> (units, seconds) this session
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.bars: list[Any] = []  # on a terminal: the overall bar, then one line per worker
        self.slots: list[str | None] = []  # the job each worker's line shows
        self.wall_s = self.cpu_s = 0.0
        self.summary = ""

    # ----- context -------------------------------------------------------------------------------------------
    def __enter__(self) -> ProgressBoard:
        self._start_wall, self._start_cpu = time.perf_counter(), cpu_seconds()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.quiet:
            return self
        if self.interactive:
            from tqdm.auto import tqdm

            title = self.title.replace("{", "{{").replace("}", "}}")
            self.bars = [
                tqdm(
                    total=1000,
                    bar_format=title + ": {percentage:3.0f}%|{bar}| {desc}",
                    file=self.stream,
                    dynamic_ncols=True,
                )
            ] + [
                tqdm(total=1, bar_format="  {desc}", file=self.stream, dynamic_ncols=True, position=i + 1, leave=False)
                for i in range(min(self.workers, max(1, len(self.plans) - len(self.done))))
            ]
            self.slots = [None] * (len(self.bars) - 1)
            self._render()  # the bars at once; a plain line only after a period (a first one would say nothing)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        with self.lock:
            if self.bars:
                self._render_bars()
            for bar in reversed(self.bars):
                bar.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.wall_s = time.perf_counter() - self._start_wall
        self.cpu_s = cpu_seconds() - self._start_cpu
        cores = f", {self.cpu_s / self.wall_s:.1f} cores busy on average" if self.wall_s > 0 else ""
        self.summary = (
            f"{self.title}: {len(self.done)}/{len(self.plans)} runs done; wall time {_duration(self.wall_s)}, "
            f"CPU time {_duration(self.cpu_s)} (this process and its workers{cores})"
        )
        if not self.quiet:
            self._print(self.summary)

    # ----- called by the main thread -------------------------------------------------------------------------
    def finished(self, name: str, text: str) -> None:
        """Job ``name`` is done: count it and print ``text`` above the bars."""
        with self.lock:
            self.done.add(name)
            self.state.pop(name, None)
            if name in self.cluster:
                self.cluster[name] = ("done", self.cluster[name][1])
                text += f" [job {self.cluster[name][1]}]"
            self._print(text)
            if self.bars:
                self._render_bars()

    def job_status(self, name: str, status: str, job_id: str) -> None:
        """Run ``name``'s cluster job ``job_id`` is ``status`` (queued, running, done or failed): shown beside it."""
        with self.lock:
            self.cluster[name] = (status, job_id)

    def note(self, text: str) -> None:
        """Print one line above the bars."""
        with self.lock:
            self._print(text)

    # ----- drawing -------------------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self.bars:
            self.bars[0].write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.period):
            self._render()

    def _render(self) -> None:
        with self.lock:
            self._read()
            if self.interactive:
                self._render_bars()
            else:
                self._print(self.line())

    def _read(self) -> None:
        """The running jobs' progress files (a job done meanwhile is left out)."""
        for path in self.folder.glob("*.json"):
            name = path.stem
            if name in self.done or name not in self.plans:
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # removed as the job ended
            self.state[name] = record
            self.timed[(name, record["phase"])] = (int(record["units"]), float(record["seconds"]))

    def _seconds_per_unit(self) -> dict[str, float]:
        """Seconds one unit of each phase took a worker, from every job's time in it this session; a phase not
        yet timed costs its plan's ``cost`` times a training step's."""
        units: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for (_, phase), (n, s) in self.timed.items():
            units[phase] = units.get(phase, 0) + n
            seconds[phase] = seconds.get(phase, 0.0) + s
        spu = {phase: seconds[phase] / n for phase, n in units.items() if n > 0}
        if "train" in spu:
            for plan in self.plans.values():
                for phase, cost in plan.cost:
                    spu.setdefault(phase, spu["train"] * cost)
        return spu

    def estimate(self) -> tuple[float | None, float | None]:
        """The fraction of all the work done and the seconds left, from the rates of this session's jobs
        spread over the workers; (None, None) until a training step has been timed."""
        spu = self._seconds_per_unit()
        if "train" not in spu:
            return None, None
        total = left = 0.0
        running = 0
        for name, plan in self.plans.items():
            state = self.state.get(name) if name not in self.done else None
            phases = [phase for phase, _ in plan.phases]
            current = phases.index(state["phase"]) if state and state["phase"] in phases else -1
            for i, (phase, units) in enumerate(plan.phases):
                cost = spu.get(phase, 0.0)
                if i == current:
                    units = int(state["total"])
                total += units * cost
                if name in self.done or i < current:
                    continue
                left += (units - int(state["done"]) if i == current else units) * cost
            running += name not in self.done
        parallel = max(1, min(self.workers, running))
        return (1.0 - left / total if total > 0 else 1.0), left / parallel

    def job_line(self, name: str) -> str:
        """One running job: name, phase, units done of its total and its rate in this phase."""
        r = self.state[name]
        unit = _UNITS.get(r["phase"], "units")
        job = f" [job {self.cluster[name][1]}]" if name in self.cluster else ""
        text = f"{name}{job}: {r['phase']} {r['done']}/{r['total']} {unit}"
        units, seconds = int(r["units"]), float(r["seconds"])
        if units > 0 and seconds > 0:
            rate = units / seconds
            per = 1 / rate
            text += f", {rate:.1f} {unit}/s" if rate >= 1 else f", {per:.{1 if per < 10 else 0}f} s per {unit[:-1]}"
        return text

    def _overall(self) -> tuple[float | None, str]:
        fraction, left = self.estimate()
        elapsed = time.perf_counter() - self._start_wall
        text = (
            f"{len(self.done)}/{len(self.plans)} runs done, elapsed {_duration(elapsed)}, "
            f"ETA {_duration(left) if left is not None else '? (timing the first steps)'}"
        )
        if self.cluster:
            counts = [s for s, _ in self.cluster.values()]
            text += ", jobs " + ", ".join(f"{counts.count(s)} {s}" for s in _JOB_STATES if s in counts)
        return fraction, text

    def line(self) -> str:
        """The plain progress line: elapsed time, work done, runs done, ETA, every running job, and the state and
        id of every unfinished run's cluster job."""
        fraction, text = self._overall()
        done = f"{fraction:.0%} of the work" if fraction is not None else "?% of the work"
        jobs = "; ".join(
            self.job_line(n) if n in self.state else f"{n} [job {self.cluster[n][1]}]: {self.cluster[n][0]}"
            for n in sorted(set(self.state) | (set(self.cluster) - self.done))
        )
        return f"[{self.title}] {done}, {text}" + (f" | {jobs}" if jobs else "")

    def _render_bars(self) -> None:
        fraction, text = self._overall()
        overall = self.bars[0]
        overall.n = round(1000 * (fraction or 0.0))
        overall.set_description_str(text, refresh=False)
        overall.refresh()
        # a job keeps its line while it runs
        self.slots = [name if name in self.state else None for name in self.slots]
        for name in sorted(set(self.state) - set(self.slots)):
            if None in self.slots:
                self.slots[self.slots.index(None)] = name
        for name, bar in zip(self.slots, self.bars[1:], strict=True):
            if name is not None:
                r = self.state[name]
                bar.bar_format = "  {desc} |{bar:20}|"
                bar.total, bar.n = max(1, int(r["total"])), int(r["done"])
                bar.set_description_str(self.job_line(name), refresh=False)
            else:
                bar.bar_format = "  {desc}"
                bar.set_description_str("(waiting for a job)", refresh=False)
            bar.refresh()
