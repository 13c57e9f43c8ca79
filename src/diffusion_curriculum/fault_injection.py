"""Testing hooks, read from the environment in this one place (tests/reliability sets them).

- ``DIFFUSION_CURRICULUM_FAULT_NAN_STEPS``: comma-separated steps at which the training loss is made
  NaN, "5,6" on every rank, "7@1" on rank 1 only.
- ``DIFFUSION_CURRICULUM_TEST_SAVE_DELAY``: seconds to sleep after writing each checkpoint file, so
  that a kill can be made to land while a checkpoint is being written.
- ``DIFFUSION_CURRICULUM_TEST_STEP_DELAY``: seconds to sleep after each training step, so that a tiny
  grid runs long enough for its periodic progress lines to be checked.

Unset, they change nothing.
"""

from __future__ import annotations

import os

__all__ = [
    "CHECKPOINT_DELAY_ENV",
    "FAULT_NAN_STEPS_ENV",
    "STEP_DELAY_ENV",
    "checkpoint_write_delay_s",
    "nan_steps",
    "step_delay_s",
]

FAULT_NAN_STEPS_ENV = "DIFFUSION_CURRICULUM_FAULT_NAN_STEPS"
CHECKPOINT_DELAY_ENV = "DIFFUSION_CURRICULUM_TEST_SAVE_DELAY"
STEP_DELAY_ENV = "DIFFUSION_CURRICULUM_TEST_STEP_DELAY"


def nan_steps(rank: int) -> frozenset[int]:
    """The steps at which this rank's loss is made NaN."""
    steps = set()
    for item in os.environ.get(FAULT_NAN_STEPS_ENV, "").replace(" ", "").split(","):
        step, _, only_rank = item.partition("@")
        if step and (not only_rank or int(only_rank) == rank):
            steps.add(int(step))
    return frozenset(steps)


def checkpoint_write_delay_s() -> float:
    """Seconds to wait after each checkpoint file is written."""
    return float(os.environ.get(CHECKPOINT_DELAY_ENV, "0"))


def step_delay_s() -> float:
    """Seconds to wait after each training step."""
    return float(os.environ.get(STEP_DELAY_ENV, "0"))
