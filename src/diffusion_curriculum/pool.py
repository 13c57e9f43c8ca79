"""Independent jobs in parallel worker processes: the comparison grid's runs and the study's intervals.

Workers are spawned (not forked) so that each starts with fresh torch threads and no inherited
process group; with one worker the jobs run in this process, which keeps tracebacks simple.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["imap_jobs"]


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


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the process that started it dies, so that a killed grid
    or study leaves no workers behind (``prctl(PR_SET_PDEATHSIG)``; elsewhere kill the process group)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
