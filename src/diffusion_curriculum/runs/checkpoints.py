"""Checkpoints that are never half-written and whose corruption is detected.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding ``state.pt`` (model, EMA,
optimizer, LR schedule, step), one ``rank<r>.pt`` per process (sampler state and random
generators, which differ per rank) and ``manifest.json`` with the SHA-256 of every file. It is
assembled in a hidden temporary folder and renamed into place in one step, so a crash leaves
either the old set of checkpoints or the new one, never a partial folder under a real name;
folders being replaced or pruned are renamed out of the way before they are deleted, for the same
reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fault_injection import checkpoint_write_delay_s
from .atomic import write_atomic

__all__ = [
    "CheckpointError",
    "checkpoint_dir",
    "find_latest",
    "list_checkpoints",
    "load_rank_state",
    "load_state",
    "prune",
    "sha256_file",
    "verify",
]

_PREFIX = "step_"
MANIFEST = "manifest.json"
_SAVE_DELAY_S = checkpoint_write_delay_s()  # a testing hook: see fault_injection


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step:08d}"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def staging_dir(root: Path, step: int) -> Path:
    """The hidden folder a checkpoint is assembled in before :func:`publish`."""
    return root / f".tmp_{_PREFIX}{step:08d}"


def _trash_dir(root: Path, step: int) -> Path:
    """Where a published checkpoint goes just before it is deleted, so it never lies half-deleted."""
    return root / f".old_{_PREFIX}{step:08d}"


def _discard(path: Path) -> None:
    """Rename a checkpoint folder out of the published names in one step, then delete it."""
    trash = _trash_dir(path.parent, int(path.name[len(_PREFIX) :]))
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_file(obj: Any, path: Path) -> None:
    """torch.save with fsync, so a published checkpoint's bytes are on disk."""
    write_atomic(path, lambda f: torch.save(obj, f), fsync=True)
    if _SAVE_DELAY_S:
        time.sleep(_SAVE_DELAY_S)


def publish(root: Path, step: int, world_size: int) -> Path:
    """Write the manifest and rename the staging folder into place (rank 0, after a barrier)."""
    staging = staging_dir(root, step)
    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    expected = {"state.pt", *(f"rank{r}.pt" for r in range(world_size))}
    missing = expected - set(names)
    if missing:
        raise CheckpointError(f"checkpoint at step {step} is missing {sorted(missing)}")
    manifest = {
        "step": step,
        "world_size": world_size,
        "files": {name: sha256_file(staging / name) for name in names},
    }
    write_atomic(staging / MANIFEST, json.dumps(manifest, indent=1), fsync=True)
    final = checkpoint_dir(root, step)
    if final.exists():  # re-saving the same step (e.g. the end of a resumed, finished run)
        _discard(final)
    os.replace(staging, final)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoint folders, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=lambda p: p.name)


def verify(path: Path) -> dict[str, Any]:
    """Check a checkpoint's manifest and checksums; return the manifest or raise CheckpointError."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: missing or unreadable {MANIFEST}") from None
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_file(file) != digest:
            raise CheckpointError(f"{path}: {name} fails its SHA-256 check (truncated or corrupt)")
    return manifest


def find_latest(root: Path, warn: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint that passes :func:`verify`; each bad newer one is reported in one line."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify(path)
        except CheckpointError as exc:
            warn(f"skipping corrupt checkpoint: {exc}")
            continue
        return path
    return None


def load_state(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(path / "state.pt", map_location=map_location, weights_only=False)


def load_rank_state(path: Path, rank: int, map_location: Any = "cpu") -> dict[str, Any]:
    file = path / f"rank{rank}.pt"
    if not file.is_file():
        raise CheckpointError(f"{path} has no state for rank {rank}: resume with the same number of processes")
    return torch.load(file, map_location=map_location, weights_only=False)


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and stale staging and half-deleted folders."""
    for path in list_checkpoints(root)[:-keep]:
        _discard(path)
    for pattern in (f".tmp_{_PREFIX}*", f".old_{_PREFIX}*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
