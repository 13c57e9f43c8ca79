"""Where a training run reports as it goes: ``metrics.jsonl`` (one JSON line per logged step) and
``probe.jsonl`` (one per held-out probe), each line flushed at once so a kill loses at most the line
being written, TensorBoard when it is installed, the
progress bar, and the progress a grid or study shows. Only the main process writes; the others get a silent log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..progress import report

__all__ = ["RunLog"]

_TENSORBOARD_KEYS = ("loss", "stage", "lr", "images_per_s", "skipped_steps")


class RunLog:
    """The run's log files and progress bar, from ``start`` of ``total`` steps; use as a context manager."""

    def __init__(self, out: Path, start: int, total: int, *, main: bool, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.file = (out / "metrics.jsonl").open("a") if main else None
        self.probe_file = (out / "probe.jsonl").open("a") if main else None
        self.writer = _tensorboard(out / "tensorboard") if main else None
        self.total = total
        self.bar = tqdm(total=total, initial=start, desc="train", disable=not (main and progress), dynamic_ncols=True)

    def advance(self, step: int) -> None:
        """One more step done: the bar, and the progress file of a grid's or study's job (:mod:`...progress`)."""
        self.bar.update(1)
        report("train", step, self.total)

    def write(self, record: dict[str, Any], n_stages: int) -> None:
        """One logged step: a metrics.jsonl line, TensorBoard scalars and the bar's loss and stage."""
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer is not None:
            for key in _TENSORBOARD_KEYS:
                if record[key] is not None:
                    self.writer.add_scalar(key, record[key], record["step"])
        shown = "nan" if record["loss"] is None else f"{record['loss']:.4f}"
        self.bar.set_postfix(loss=shown, stage=f"{record['stage']}/{n_stages}")

    def probe(self, step: int, record: dict[str, Any]) -> None:
        """One held-out probe evaluation: a probe.jsonl line and TensorBoard scalars."""
        if self.probe_file is not None:
            self.probe_file.write(json.dumps({"step": step, **record}) + "\n")
            self.probe_file.flush()
        if self.writer is not None:
            for key in ("heldout_loss", "excess_error_mean"):
                if key in record:
                    self.writer.add_scalar(f"probe/{key}", record[key], step)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        for file in (self.file, self.probe_file):
            if file is not None:
                file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(path: Path):
    """A SummaryWriter when TensorBoard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))
