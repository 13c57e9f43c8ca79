"""SIGINT and SIGTERM as one exception, and writes that a signal does not cut in half.

Schedulers send SIGTERM before they kill a job, users press Ctrl-C: the CLI turns both into
:class:`Interrupted` (a ``KeyboardInterrupt``, so code that cleans up on Ctrl-C does so for SIGTERM
too), reports it in one line and exits with 128 + the signal number (130, 143). Inside
:func:`deferred_signals` (a checkpoint being written) a signal is held until the block ends, so the
write finishes and is published, and only then does the process stop.

This module imports only the standard library.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "deferred_signals", "handle_stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by ``signum``; the CLI exits with ``exit_code`` (128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def handle_stop_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT and SIGTERM within the block (main thread only); the
    previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (a write that must not stop half-way), then act
    on the first one that came, as the handler in place would have. An error inside the block
    propagates as it is; the process is ending anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        signal.raise_signal(received[0])  # delivered to the handler restored above
