"""Checkpoints that are never half-written, whose corruption is detected, and that hold only data.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding ``state.safetensors`` (model, EMA,
optimizer, LR schedule, step, config), one ``rank<r>.safetensors`` per process (sampler state and
random generators, which differ per rank) and ``manifest.json`` with the SHA-256 of every file.

**Only tensors and plain data.** Each file is a safetensors file: its tensors, and in its header
the rest of the state as JSON (numbers, strings, lists, mappings; tuples and mappings with
non-string keys tagged), with each tensor named by a placeholder. Loading one parses JSON and
copies tensors, so a checkpoint from anyone can be loaded without running anything from it;
anything the format does not describe is refused naming the file. Checkpoints of the earlier
format (``state.pt``, ``rank<r>.pt``: pickles, which can run code when loaded) are never loaded;
:func:`convert_legacy` (``diffusion-curriculum convert-checkpoint``) rewrites them, loading them
with torch's restricted unpickler, or with the full one only when the user says they trust the file.

**Never half-written.** A checkpoint is assembled in a hidden temporary folder and renamed into
place in one step, so a crash leaves either the old set of checkpoints or the new one, never a
partial folder under a real name; folders being replaced or pruned are renamed out of the way
before they are deleted, for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ..atomic import write_atomic
from ..errors import CheckpointError
from ..fault_injection import checkpoint_write_delay_s

__all__ = [
    "MANIFEST",
    "STATE",
    "CheckpointError",
    "LegacyCheckpoint",
    "checkpoint_dir",
    "convert_legacy",
    "decode_state",
    "encode_state",
    "find_latest",
    "list_checkpoints",
    "load_rank_state",
    "load_state",
    "prune",
    "rank_file",
    "roundtrip",
    "save_state",
    "sha256_file",
    "verify",
]

_PREFIX = "step_"
MANIFEST = "manifest.json"
STATE = "state.safetensors"
FORMAT = "diffusion-curriculum-checkpoint/2"
_LEGACY_STATE = "state.pt"
_SAVE_DELAY_S = checkpoint_write_delay_s()  # a testing hook: see fault_injection
_TENSOR, _TUPLE, _DICT = "$tensor", "$tuple", "$dict"
_MAX_DEPTH = 64


class LegacyCheckpoint(CheckpointError):
    """A checkpoint of the earlier pickle format: not loaded (it could run code), to be converted."""


def rank_file(rank: int) -> str:
    return f"rank{rank}.safetensors"


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


# ----- the format: tensors plus JSON ---------------------------------------------------------------
def encode_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a state (nested dicts, lists, tuples of tensors, numbers, strings, bools and None) into
    its tensors, each named by a placeholder, and a JSON-able tree. Anything else is a TypeError:
    a bug in whatever produced the state, caught when it is saved rather than when it is loaded."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, where: str) -> Any:
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, np.generic) and not isinstance(x, np.object_):
            return enc(x.item(), where)
        if isinstance(x, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = x
            return {_TENSOR: key}
        if isinstance(x, tuple):
            return {_TUPLE: [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            return {_DICT: [[enc(k, f"{where} key"), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        raise TypeError(f"checkpoint state{where}: a {type(x).__name__} is not a tensor or plain data")

    return tensors, enc(obj, "")


def decode_state(tree: Any, tensors: dict[str, torch.Tensor] | None, where: str) -> Any:
    """The state :func:`encode_state` split, put back together. ``tensors`` None leaves every tensor
    as None (to read the plain data alone). Anything the format does not describe raises a
    CheckpointError naming ``where`` (the file)."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: not a checkpoint of this package ({what})")

    def dec(x: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise bad("nested too deeply")
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, list):
            return [dec(v, depth + 1) for v in x]
        if not isinstance(x, dict):
            raise bad(f"a {type(x).__name__}")
        tags = [k for k in x if k.startswith("$")]
        if not tags:
            return {k: dec(v, depth + 1) for k, v in x.items()}
        if len(x) != 1 or tags[0] not in (_TENSOR, _TUPLE, _DICT):
            raise bad(f"unknown entry {tags[0]!r}")
        tag, value = tags[0], x[tags[0]]
        if tag == _TENSOR:
            if tensors is None:
                return None
            if not isinstance(value, str) or value not in tensors:
                raise bad(f"no tensor {value!r}")
            return tensors[value]
        if not isinstance(value, list):
            raise bad(f"{tag} is not a list")
        if tag == _TUPLE:
            return tuple(dec(v, depth + 1) for v in value)
        out = {}
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise bad("a mapping entry is not a pair")
            key = dec(pair[0], depth + 1)
            if not isinstance(key, str | int | float | bool | tuple | type(None)):
                raise bad("a mapping key is not a plain value")
            out[key] = dec(pair[1], depth + 1)
        return out

    return dec(tree, 0)


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no memory (safetensors stores each tensor's own bytes)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def save_state(obj: Any, path: Path) -> None:
    """Write a state as one safetensors file (tensors, and the rest as JSON in its header), atomically
    and with fsync, so a published checkpoint's bytes are on disk. The file is built in memory (a
    checkpoint of this package's models is at most a few hundred MB)."""
    tensors, tree = encode_state(obj)
    metadata = {"format": FORMAT, "state": json.dumps(tree)}
    write_atomic(path, safetensors_bytes(_storable(tensors), metadata), fsync=True)
    if _SAVE_DELAY_S:
        time.sleep(_SAVE_DELAY_S)


def roundtrip(obj: Any) -> Any:
    """``obj`` as saving and loading it in a checkpoint gives it back (in memory): what the contract
    tests check every sampler's and pacing's state against."""
    from safetensors.torch import load as safetensors_load

    tensors, tree = encode_state(obj)
    loaded = safetensors_load(safetensors_bytes(_storable(tensors)))
    return decode_state(json.loads(json.dumps(tree)), loaded, "state")


def _load_file(file: Path, with_tensors: bool = True) -> Any:
    """Read one state file; a CheckpointError naming it for anything but a state of this format."""
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or "state" not in metadata:
                raise CheckpointError(f"{file}: not a checkpoint file of this package (no {FORMAT} header)")
            tree = json.loads(metadata["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else None
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except (SafetensorError, OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file}: not a readable checkpoint file ({exc.__class__.__name__})") from None
    return decode_state(tree, tensors, str(file))


def load_state(path: Path, *, with_tensors: bool = True) -> dict[str, Any]:
    """The main state of a checkpoint folder (``with_tensors=False``: its plain data alone, tensors None)."""
    state = _load_file(_state_file(path), with_tensors)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE}: not a checkpoint of this package (not a mapping)")
    return state


def load_rank_state(path: Path, rank: int) -> dict[str, Any]:
    """One process's state (sampler, generators) of a checkpoint folder."""
    file = path / rank_file(rank)
    if not file.is_file():
        raise CheckpointError(f"{path} has no state for rank {rank}: resume with the same number of processes")
    state = _load_file(file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: not a checkpoint of this package (not a mapping)")
    return state


def _state_file(path: Path) -> Path:
    if not (path / STATE).is_file() and (path / _LEGACY_STATE).is_file():
        raise _legacy_error(path)
    return path / STATE


# ----- writing and finding checkpoints -----------------------------------------------------------
def publish(root: Path, step: int, world_size: int) -> Path:
    """Write the manifest and rename the staging folder into place (rank 0, after a barrier)."""
    staging = staging_dir(root, step)
    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    expected = {STATE, *(rank_file(r) for r in range(world_size))}
    missing = expected - set(names)
    if missing:
        raise CheckpointError(f"checkpoint at step {step} is missing {sorted(missing)}")
    manifest = {
        "format": FORMAT,
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


def _legacy_error(path: Path) -> LegacyCheckpoint:
    return LegacyCheckpoint(
        f"{path}: a checkpoint of the earlier pickle format ({_LEGACY_STATE}), which can run code when loaded, "
        f"so it is not loaded; convert it with `diffusion-curriculum convert-checkpoint {path}` "
        "(see docs/training.md, 'Checkpoints of earlier versions')"
    )


def _manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise CheckpointError(f"{path}: missing or unreadable {MANIFEST}") from None
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise CheckpointError(f"{path}: {MANIFEST} names {name!r}, which is not a file of the checkpoint")
    return manifest


def _check_files(path: Path, manifest: dict[str, Any]) -> None:
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_file(file) != digest:
            raise CheckpointError(f"{path}: {name} fails its SHA-256 check (truncated or corrupt)")


def verify(path: Path) -> dict[str, Any]:
    """Check a checkpoint's manifest and checksums; return the manifest or raise CheckpointError
    (:class:`LegacyCheckpoint` for one of the earlier pickle format, whatever its checksums)."""
    if not (path / STATE).is_file() and (path / _LEGACY_STATE).is_file():
        raise _legacy_error(path)
    manifest = _manifest(path)
    if STATE not in manifest["files"]:
        raise CheckpointError(f"{path}: {MANIFEST} does not list {STATE}")
    _check_files(path, manifest)
    return manifest


def find_latest(
    root: Path, warn: Callable[[str], None] = print, accept: Callable[[Path], str | None] | None = None
) -> Path | None:
    """The newest checkpoint that passes :func:`verify` (and ``accept``, which returns why not, or
    None); each newer one is reported in one line and skipped. A checkpoint of the earlier pickle
    format stops the search (:class:`LegacyCheckpoint`): it is not corrupt, it needs converting."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify(path)
        except LegacyCheckpoint:
            raise
        except CheckpointError as exc:
            warn(f"skipping corrupt checkpoint: {exc}")
            continue
        reason = accept(path) if accept is not None else None
        if reason is not None:
            warn(f"skipping checkpoint {path}: {reason}")
            continue
        return path
    return None


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and stale staging and half-deleted folders."""
    for path in list_checkpoints(root)[:-keep]:
        _discard(path)
    for pattern in (f".tmp_{_PREFIX}*", f".old_{_PREFIX}*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def discard_after(root: Path, step: int) -> list[Path]:
    """Delete the checkpoints after ``step`` (a resume from ``step`` replaces that future, as it
    replaces the log lines after it); returns what was deleted."""
    newer = [p for p in list_checkpoints(root) if int(p.name[len(_PREFIX) :]) > step]
    for path in newer:
        _discard(path)
    return newer


# ----- checkpoints of the earlier pickle format -----------------------------------------------------
def _restricted_unpickler_is_safe() -> bool:
    """torch.load(weights_only=True) before torch 2.6 could be made to run code (CVE-2025-32434)."""
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 6)


def _load_legacy_file(file: Path, trust: bool) -> Any:
    if not trust and not _restricted_unpickler_is_safe():
        raise CheckpointError(
            f"{file}: torch {torch.__version__} cannot load a pickle without the risk of running code from it "
            "(CVE-2025-32434); upgrade torch to 2.6 or later, or pass --trust for a file you trust"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=not trust)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ModuleNotFoundError, TypeError) as exc:
        if trust:
            raise CheckpointError(f"{file}: cannot be loaded ({exc.__class__.__name__})") from None
        raise CheckpointError(
            f"{file}: holds something other than tensors and plain data, which only a full unpickle could load, "
            "and that would run any code the file carries; only for a file you trust, add --trust"
        ) from None


def convert_legacy(path: Path, *, trust: bool = False) -> Path:
    """Rewrite a checkpoint folder of the earlier pickle format in this format, in place (atomically:
    assembled beside it and renamed over it). Its files are first checked against its manifest;
    they are read with torch's restricted unpickler, which refuses anything but tensors and plain
    data, unless ``trust``, which unpickles them fully (running whatever code they carry)."""
    path = Path(path)
    if (path / STATE).is_file():
        raise CheckpointError(f"{path}: already in the current format; nothing to convert")
    if not (path / _LEGACY_STATE).is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no {STATE} or {_LEGACY_STATE})")
    if not (path.name.startswith(_PREFIX) and path.name[len(_PREFIX) :].isdigit()):
        raise CheckpointError(f"{path}: a checkpoint folder is named {_PREFIX}NNNNNNNN")
    manifest = _manifest(path)
    _check_files(path, manifest)
    world = int(manifest.get("world_size", 1))
    step = int(path.name[len(_PREFIX) :])
    pieces = {STATE: path / _LEGACY_STATE, **{rank_file(r): path / f"rank{r}.pt" for r in range(world)}}
    states = {}
    for name, file in pieces.items():
        if not file.is_file():
            raise CheckpointError(f"{path}: {file.name} is missing")
        states[name] = _load_legacy_file(file, trust)
    root = path.parent
    staging = staging_dir(root, step)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name, state in states.items():
            try:
                save_state(state, staging / name)
            except TypeError as exc:
                raise CheckpointError(f"{pieces[name]}: cannot be converted: {exc}") from None
        return publish(root, step, world)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
