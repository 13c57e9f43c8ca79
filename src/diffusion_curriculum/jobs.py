"""Independent jobs in parallel worker processes: the comparison grid's runs and the study's intervals.

Workers are spawned (not forked) so that each starts with fresh torch threads and no inherited
process group; with one worker the jobs run in this process, which keeps tracebacks simple.
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

from .errors import UserError
from .runs.atomic import write_atomic

__all__ = ["claim_folder", "imap_jobs", "mark_done"]


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
    finally:
        pool.close()
        pool.join()


def claim_folder(out: Path, spec_file: str, text: str, what: str, overwrite: bool) -> None:
    """Make ``out`` the folder of the job set described by ``text`` (kept as ``out/spec_file``).

    A folder that holds a different set is refused (a UserError naming ``what``) unless
    ``overwrite``, which empties it first; the same set is left as it is, so a restart resumes it.
    """
    saved = out / spec_file
    if saved.is_file() and saved.read_text() != text and not overwrite:
        raise UserError(f"{out} holds a different {what}; pass --overwrite to replace it or choose another --out")
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, text)  # rewritten on every start: a kill must not leave it torn


def mark_done(path: Path, record: dict[str, Any]) -> None:
    """Write a finished job's record as JSON, atomically: a restart skips the job only if this file is whole."""
    write_atomic(path, json.dumps(record))


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the process that started it dies, so that a killed grid
    or study leaves no workers behind (``prctl(PR_SET_PDEATHSIG)``; elsewhere kill the process group)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
