"""One way to write a file that is never seen half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: str | bytes | Callable[[BinaryIO], None], *, fsync: bool = False) -> None:
    """Write ``data`` (text, bytes, or a function that writes to a binary file) to ``path`` through a
    hidden temporary file in the same folder, renamed into place in one step: a kill mid-write leaves
    the old file or the new one, never a torn one. The temporary name carries the pid, so concurrent
    writers of a shared cache never write into each other's file. ``fsync`` puts the bytes on disk
    before the rename (for checkpoints and markers a restart trusts)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
