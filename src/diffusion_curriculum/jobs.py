"""Independent jobs in parallel worker processes: the comparison grid's runs and the study's intervals.

Workers are spawned (not forked) so that each starts with fresh torch threads and no inherited
process group; with one worker the jobs run in this process, which keeps tracebacks simple.
Workers ignore SIGINT (a Ctrl-C reaches the whole process group): the main process handles it and
terminates them, as it does when it stops for any other reason.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import ConfigError, RunError
from .runs.layout import RUN_FILES, check_not_file, foreign_entries, refuse_foreign
from .safe_yaml import load_yaml

__all__ = ["DONE", "check_claim", "claim_folder", "imap_jobs", "launch_jobs", "mark_done"]

DONE = "done.json"  # in OUT/runs/NAME: the run is finished (its record, written by mark_done)


def launch_jobs(
    func: Callable[[tuple], Any],
    jobs: Sequence[tuple],
    names: Sequence[str],
    out: Path,
    *,
    workers: int,
    slurm: Any = None,
    board: Any = None,
    train_config: Callable[[tuple], Any] | None = None,
) -> Iterator[Any]:
    """``func(job)`` for every job of a grid or study in OUT, in completion order: in ``workers`` local processes
    (:func:`imap_jobs`), or, given ``slurm`` (:class:`~.slurm.SlurmOptions`), one Slurm job per unfinished run
    (:func:`~.slurm.slurm_imap`; ``names[i]`` names ``jobs[i]``'s run folder OUT/runs/NAME)."""
    if slurm is None:
        return imap_jobs(func, jobs, workers)
    from .slurm import slurm_imap

    return slurm_imap(
        func,
        jobs,
        names,
        out,
        slurm,
        is_done=lambda name: (out / "runs" / name / DONE).is_file(),
        board=board,
        train_config=train_config,
    )


def imap_jobs(func: Callable[[tuple], Any], jobs: Sequence[tuple], workers: int) -> Iterator[Any]:
    """``func(job)`` for every job, in completion order, over ``workers`` processes.

    ``func`` must be a module-level function (it is pickled). The pool is closed and joined when
    the iterator is exhausted or abandoned.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(func, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_die_with_parent)
    try:
        yield from pool.imap_unordered(func, jobs)
    except BaseException:
        pool.terminate()  # an error, Ctrl-C or SIGTERM: do not wait for the running jobs (they resume)
        raise
    finally:
        pool.close()
        pool.join()


def claim_folder(
    out: Path,
    spec_file: str,
    text: str,
    what: str,
    overwrite: bool,
    outputs: tuple[str, ...],
    validate: Callable[[Path], object] | None = None,
) -> None:
    """Make ``out`` the folder of the job set described by ``text`` (kept as ``out/spec_file``); the
    caller holds the folder's lock (:func:`~.runs.lock.folder_lock`).

    A folder that holds a different set is refused (a RunError naming ``what``) unless
    ``overwrite``, which deletes the set's files first: ``spec_file``, ``outputs`` and ``runs/``, whose
    folders must hold only run files; a folder holding anything else is refused, never emptied. A
    damaged ``spec_file`` (not YAML, or refused by ``validate``, which raises a ConfigError) is refused
    naming it, without the advice to overwrite (that would delete finished runs). The same set (the same
    YAML values: a comment, say a measured time added to a preset, does not make another set) is left as
    it is, so a restart resumes it.
    """
    check_not_file(out)
    saved = out / spec_file
    if saved.is_file() and not overwrite:
        try:
            old = saved.read_text(encoding="utf-8")
            load_yaml(old, str(saved))
            if old != text and validate is not None:
                validate(saved)
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            detail = str(exc) if isinstance(exc, ConfigError) else "unreadable"
            detail = detail if str(saved) in detail else f"{saved}: {detail}"
            raise RunError(
                f"{detail}; it records the {what} this folder holds, which cannot be resumed without it: "
                "restore it, or choose another --out"
            ) from None
        if load_yaml(old, str(saved)) != load_yaml(text, what):  # comments and layout do not make another set
            raise RunError(f"{out} holds a different {what}; pass --overwrite to replace it or choose another --out")
    if overwrite and out.exists():
        check_claim(out, spec_file, what, overwrite, outputs)
        for name in (spec_file, *outputs, "runs"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, text)  # rewritten on every start: a kill must not leave it torn


def check_claim(out: Path, spec_file: str, what: str, overwrite: bool, outputs: tuple[str, ...]) -> None:
    """What :func:`claim_folder` checks that needs no lock and writes nothing (run it before taking the
    lock, so that a refused folder is left untouched): ``out`` is not a file and, to be overwritten,
    holds only the set's own files, its ``runs/`` only run folders."""
    check_not_file(out)
    if not (overwrite and out.is_dir()):
        return
    refuse_foreign(out, (spec_file, *outputs, "runs"), what)
    runs = out / "runs"
    if runs.exists():
        for run in runs.iterdir() if runs.is_dir() else [runs]:
            if not run.is_dir() or foreign_entries(run, RUN_FILES):
                raise RunError(
                    f"--overwrite: {run} is not a run folder of a {what}; --overwrite deletes only what a "
                    f"{what} writes, so move it away or choose another --out"
                )


def mark_done(path: Path, record: dict[str, Any]) -> None:
    """Write a finished job's record as JSON, atomically: a restart skips the job only if this file is whole."""
    write_atomic(path, json.dumps(record))


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the process that started it dies, so that a killed grid
    or study leaves no workers behind (``prctl(PR_SET_PDEATHSIG)``; elsewhere kill the process group).
    SIGINT is the main process's to handle: it terminates the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
