"""What a run folder holds, and the rules for starting, replacing and resuming one.

A run folder ``runs/NAME/`` holds ``config.yaml`` (the resolved config, every key),
``metrics.jsonl`` (one line per logged step), ``probe.jsonl`` (the held-out probe every
``train.probe_every`` steps), ``checkpoints/step_XXXXXXXX/``, ``samples/``,
``model/`` (the EMA weights and ``run.json``), ``pipeline/`` (a diffusers pipeline, where one
fits), ``tensorboard/``, and after ``evaluate`` ``eval.jsonl`` and ``eval.png``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import Config
from ..errors import RunError
from .atomic import write_atomic

__all__ = [
    "CONFIG",
    "METRICS",
    "MODEL",
    "PROBE",
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "check_folder",
    "check_same_run",
    "remove_run_files",
    "truncate_log",
]

CONFIG, METRICS, PROBE = "config.yaml", "metrics.jsonl", "probe.jsonl"
CHECKPOINTS, SAMPLES, MODEL = "checkpoints", "samples", "model"
# Artefacts a run writes into its folder; --overwrite removes exactly these.
RUN_FILES = (CONFIG, METRICS, PROBE, CHECKPOINTS, SAMPLES, MODEL, "pipeline", "tensorboard")

# Config keys a resume may change: where the run folder lives (it may have been moved or copied), and
# what bounds or guards the run without changing what it computes.
RESUMABLE_KEYS = ("out", "train.max_steps", "train.max_bad_steps", "train.dist_timeout_s")


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds a run (its config or its checkpoints)."""
    return (out / CONFIG).exists() or (out / CHECKPOINTS).exists()


def check_folder(out: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse a run folder that is a file or holds another run (unless asked to); writes nothing."""
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RunError(f"--out {out}: {existing} is a file, not a folder")
    if resume is not None and overwrite:
        raise RunError("--resume and --overwrite contradict each other; choose one")
    if holds_run(out) and resume is None and not overwrite:
        raise RunError(f"{out} already holds a run; pass --resume latest to continue it or --overwrite to replace it")
    if resume is not None and not holds_run(out):
        raise RunError(f"--resume: {out} holds no run to resume")


def remove_run_files(out: Path) -> None:
    """Delete the artefacts a run writes (:data:`RUN_FILES`) from ``out``, and nothing else."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def check_same_run(saved: Config, current: Config) -> None:
    """A resume must continue the same experiment; only the keys in RESUMABLE_KEYS may change."""
    a, b = saved.to_dict(), current.to_dict()
    for key in RESUMABLE_KEYS:
        section, _, name = key.rpartition(".")
        (a[section] if section else a)[name] = (b[section] if section else b)[name]
    for section, values in a.items():
        if values != b[section]:
            if isinstance(values, dict):
                key = next(k for k in values if values[k] != b[section][k])
                raise RunError(
                    f"--resume: {section}.{key} is {b[section][key]!r} here but the run used "
                    f"{values[key]!r}; start a new run (--out) to change it"
                )
            raise RunError(f"--resume: {section} differs from the run being resumed")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after the checkpoint's step, so a resumed run never logs a step twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a torn last line from a kill mid-write
    write_atomic(path, "".join(line + "\n" for line in kept))
