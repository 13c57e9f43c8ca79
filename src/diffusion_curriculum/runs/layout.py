"""What a run folder holds, and the rules for starting, replacing and resuming one.

A run folder ``runs/NAME/`` holds ``config.yaml`` (the resolved config, every key),
``metrics.jsonl`` (one line per logged step), ``probe.jsonl`` (the held-out probe every
``train.probe_every`` steps), ``checkpoints/step_XXXXXXXX/``, ``samples/``,
``model/`` (the EMA weights and ``run.json``), ``pipeline/`` (a diffusers pipeline, where one
fits), ``tensorboard/``, after ``evaluate`` ``eval.jsonl`` and ``eval.png``, in a grid ``done.json``,
and ``.lock`` (:mod:`.lock`: who is writing it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..atomic import write_atomic
from ..config import Config, dotted_overrides, load_config
from ..errors import ConfigError, RunError
from ..pacing import PACING_FUNCTIONS
from ..safe_yaml import short
from . import lock
from .lock import check_not_file
from .records import JsonLines, read_jsonl

__all__ = [
    "CONFIG",
    "LOGS",
    "METRICS",
    "MODEL",
    "PROBE",
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "check_folder",
    "check_not_file",
    "check_same_run",
    "config_difference",
    "foreign_entries",
    "load_run_config",
    "log_gap",
    "read_logs",
    "remove_run_files",
    "truncate_logs",
]

CONFIG, METRICS, PROBE = "config.yaml", "metrics.jsonl", "probe.jsonl"
CHECKPOINTS, SAMPLES, MODEL = "checkpoints", "samples", "model"
LOGS = (METRICS, PROBE)  # appended line by line while training; cut back to the checkpoint on resume
# Artefacts a run writes into its folder (evaluate and a grid add theirs); --overwrite removes
# exactly these, and refuses a folder that holds anything else.
RUN_FILES = (
    CONFIG,
    METRICS,
    PROBE,
    CHECKPOINTS,
    SAMPLES,
    MODEL,
    "pipeline",
    "tensorboard",
    "eval.jsonl",
    "eval.png",
    "done.json",
)
_TEMPORARY = re.compile(r"^\..+\.tmp$")  # hidden temporary files of atomic writes, left by a kill

# Config keys a resume may change: where the run folder lives (it may have been moved or copied), and
# what bounds or guards the run without changing what it computes.
RESUMABLE_KEYS = ("out", "train.max_steps", "train.max_bad_steps", "train.dist_timeout_s")


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds a run (its config or its checkpoints)."""
    return (out / CONFIG).exists() or (out / CHECKPOINTS).exists()


def foreign_entries(folder: Path, known: tuple[str, ...]) -> list[str]:
    """The names in ``folder`` that the package did not write: not in ``known``, not its lock and not
    a temporary file of an interrupted write."""
    if not folder.is_dir():
        return []
    ours = {*known, lock.LOCK_FILE}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and not _TEMPORARY.match(p.name))


def refuse_foreign(folder: Path, known: tuple[str, ...], what: str) -> None:
    """``--overwrite`` deletes only what the package wrote: refuse a folder that holds anything else."""
    foreign = foreign_entries(folder, known)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunError(
            f"--overwrite: {folder} holds {shown}, which no {what} writes; --overwrite deletes only a {what}'s "
            "own files, so move those away or choose another --out"
        )


def check_folder(out: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse a run folder that is a file, is being written by another process, holds another run
    (unless asked to) or, to be overwritten, holds files that are not a run's; writes nothing."""
    check_not_file(out)
    if resume is not None and overwrite:
        raise RunError("--resume and --overwrite contradict each other; choose one")
    busy = lock.holder(out)
    if busy is not None:
        raise lock.in_use_error(out, *busy)
    if holds_run(out) and resume is None and not overwrite:
        raise RunError(f"{out} already holds a run; pass --resume latest to continue it or --overwrite to replace it")
    if resume is not None and not holds_run(out):
        raise RunError(f"--resume: {out} holds no run to resume")
    if overwrite:
        refuse_foreign(out, RUN_FILES, "run")


def remove_run_files(out: Path) -> None:
    """Delete the artefacts a run writes (:data:`RUN_FILES`) from ``out``, and nothing else."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def load_run_config(out: Path) -> Config:
    """A run folder's ``config.yaml``; any problem with it is reported naming the file."""
    path = out / CONFIG
    try:
        return load_config(path)
    except ConfigError as exc:
        message = str(exc)
        raise RunError(message if str(path) in message else f"{path}: {message}") from None


def config_difference(
    saved: Config | dict, current: Config, source: str | Path = "the run", ignore: tuple[str, ...] = ()
) -> str | None:
    """The first key whose value differs between ``saved`` (a config, or a saved config dict, completed with
    today's defaults) and ``current``, keys in ``ignore`` aside, as "KEY is NEW here but SOURCE has OLD"; None if
    they are the same experiment."""
    a, b = _as_config(saved, source).to_dict(), current.to_dict()
    for key in ignore:
        section, _, name = key.rpartition(".")
        (a[section] if section else a)[name] = (b[section] if section else b)[name]
    for section, values in a.items():
        if values != b[section]:
            if isinstance(values, dict):
                key = next(k for k in values if values[k] != b[section][k])
                return f"{section}.{key} is {short(b[section][key])} here but {source} has {short(values[key])}"
            return f"{section} is {short(b[section])} here but {source} has {short(values)}"
    return None


def check_same_run(saved: Config | dict, current: Config, source: str | Path = "the run") -> None:
    """A resume must continue the same experiment: only the keys in RESUMABLE_KEYS may change, and
    ``train.max_steps`` only while the curriculum does not derive from it. ``saved`` (a config, or a
    checkpoint's config dict) is named by ``source`` in the error."""
    saved = _as_config(saved, source)
    difference = config_difference(saved, current, source, ignore=RESUMABLE_KEYS)
    if difference is not None:
        raise RunError(f"--resume: {difference}; start a new run (--out) to change it")
    old_steps = saved.train.max_steps
    derived = _derived_from_max_steps(current)
    if old_steps != current.train.max_steps and derived is not None:
        raise RunError(
            f"--resume: train.max_steps is {current.train.max_steps} here but {source} has {old_steps}, and "
            f"{derived} derives from it: the curriculum would change mid-run; to train longer, start a new run "
            "that sets it explicitly"
        )


def _as_config(saved: Config | dict, source: str | Path) -> Config:
    """A saved config, or a saved config dict with today's defaults for keys added since (as config.yaml is read)."""
    if isinstance(saved, Config):
        return saved
    try:
        return load_config(overrides=dotted_overrides(saved))
    except ConfigError as exc:
        raise RunError(f"{source}: its saved config does not load ({exc})") from None


def _derived_from_max_steps(config: Config) -> str | None:
    """The curriculum setting that ``train.max_steps`` determines, if any (so a resume must not change it)."""
    cur = config.curriculum
    if cur.order == "none" or cur.only_cluster is not None:
        return None
    if cur.pacing in PACING_FUNCTIONS and cur.pacing_steps is None:
        return "curriculum.pacing_steps (null: half of train.max_steps)"
    if cur.pacing == "adaptive" and cur.max_steps_per_stage is None and cur.budget_fraction is not None:
        return "the per-stage cap of curriculum.budget_fraction"
    return None


def read_logs(out: Path, announce: bool = True) -> dict[str, JsonLines]:
    """The run's logs (:data:`LOGS`); a torn last line is left out with a notice (when ``announce``),
    any other bad line refused naming the file and line, and so is a line without an integer step."""
    logs = {}
    for name in LOGS:
        log = read_jsonl(out / name, announce=announce)
        for number, record in enumerate(log.records, start=1):
            if isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
                raise RunError(f"{out / name}: record {number} has no integer step; restore the file")
        logs[name] = log
    return logs


def log_gap(logs: dict[str, JsonLines], logged: dict[str, int]) -> str | None:
    """Why a checkpoint whose logs had reached ``logged`` (file name -> step of its last line, 0 for
    none) cannot continue these logs exactly: a line it was written after is missing. None if it can."""
    for name, step in logged.items():
        if name not in logs or not step:
            continue
        steps = [r["step"] for r in logs[name].records]
        if step not in steps:
            last = max(steps, default=0)
            return f"{name} ends at step {last}, but this checkpoint was written after its step-{step} line"
    return None


def truncate_logs(out: Path, logs: dict[str, JsonLines], step: int) -> None:
    """Rewrite each log without its lines after ``step`` (and any torn last line), so a resumed run
    never logs a step twice."""
    for name, log in logs.items():
        path = out / name
        if path.exists():
            kept = [line for record, line in zip(log.records, log.raw, strict=True) if record["step"] <= step]
            write_atomic(path, b"".join(line + b"\n" for line in kept))
