"""One writer per folder: an OS file lock on every run, grid and study folder while a process works in it.

The lock is ``fcntl.flock`` on ``DIR/.lock``, which also holds the pid (and host) of the process that
holds it, so that a second writer is told who: ``DIR is in use by pid N``. The kernel releases the
lock when its process ends, however it ends (SIGKILL included), so a lock left by a dead process is
never in the way: its pid is only overwritten by the next holder. Where ``flock`` is missing
(Windows) or refused by the filesystem, the pid in the file is the lock itself, and a pid that no
longer runs on this host is taken to be stale.

Own code rather than the ``filelock`` package: a waiting process must be able to read the holder's
pid from the locked file, and ``filelock`` truncates the file on open (3.x) or keeps the pid only for
its soft-lock fallback (4.x); ``fcntl`` is the standard library. A process may lock the same
folder again (nested ``with``): locks are counted per folder, because a second ``flock`` on a new
descriptor of the same file would conflict with the first.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RunError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "acquire", "check_not_file", "folder_lock", "holder", "in_use_error", "release"]

LOCK_FILE = ".lock"
_HELD: dict[str, list] = {}  # resolved folder -> [descriptor, depth]
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _key(folder: Path) -> str:
    return str(Path(folder).resolve())


def _me() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _parse(text: str) -> tuple[int | None, str | None]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, (parts[1] if len(parts) > 1 else None)


def _read(fd: int) -> tuple[int | None, str | None]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return _parse(os.read(fd, 256).decode("utf-8", "replace"))
    except OSError:
        return None, None


def _alive(pid: int, host: str | None) -> bool:
    if host is not None and host != socket.gethostname():
        return True  # another machine's process: we cannot tell, so it is in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_use_error(folder: Path, pid: int | None, host: str | None) -> RunError:
    who = f"pid {pid}" if pid is not None else "another process"
    if host is not None and host != socket.gethostname():
        who += f" on {host}"
    return RunError(f"{folder} is in use by {who}; wait for it to finish or stop it")


def _try_flock(fd: int) -> bool | None:
    """True when locked, False when another process holds it, None when the filesystem has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    return True


def holder(folder: Path) -> tuple[int | None, str | None] | None:
    """Who holds ``folder``'s lock now: (pid, host), or None when nobody does (this process does not
    count). Creates nothing."""
    if _key(folder) in _HELD:
        return None
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            locked = _try_flock(fd)
        except OSError:  # e.g. an NFS lock on a read-only descriptor: let acquiring the lock decide
            return None
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        pid, host = _read(fd)
        if locked is None and (pid is None or pid == os.getpid() or not _alive(pid, host)):
            return None  # no flock here: the pid file is the lock, and its process is gone
        return pid, host
    finally:
        os.close(fd)


def check_not_file(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is a file, or lies under one."""
    out = Path(out)
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RunError(f"{flag} {out}: {existing} is a file, not a folder")


def _acquire(folder: Path) -> None:
    key = _key(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    check_not_file(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _try_flock(fd)
        if locked is False:
            raise in_use_error(folder, *_read(fd))
        if locked is None:
            pid, host = _read(fd)
            if pid is not None and pid != os.getpid() and _alive(pid, host):
                raise in_use_error(folder, pid, host)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, _me().encode())
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = [fd, 1]


def _release(folder: Path) -> None:
    key = _key(folder)
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _HELD[key]
    fd = entry[0]
    try:
        if fcntl is None or _try_flock_unsupported(fd):
            os.ftruncate(fd, 0)  # the pid file was the lock
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _try_flock_unsupported(fd: int) -> bool:
    """Whether this descriptor's filesystem lacks flock (then its pid file is the lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: succeeds at once
    except OSError as exc:
        return exc.errno in _UNSUPPORTED
    return False


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the block; RunError "DIR is in use by pid N"
    if another process holds it."""
    folder = Path(folder)
    _acquire(folder)
    try:
        yield
    finally:
        _release(folder)


def acquire(folder: Path) -> None:
    """Lock ``folder`` (creating it) until :func:`release` or the end of the process."""
    _acquire(Path(folder))


def release(folder: Path) -> None:
    """Undo one :func:`acquire`."""
    _release(Path(folder))
