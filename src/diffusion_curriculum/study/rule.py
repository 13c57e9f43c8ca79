"""The convergence rule: when a loss curve counts as converged, and the lag-free smoothing it uses.

Shared by the convergence study (:mod:`.convergence`), which trains the intervals, and the study's outputs
(:mod:`.report`), which apply the rule to every curve; neither imports the other for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

__all__ = ["ConvergenceRule", "convergence_step", "smooth"]


@dataclass(frozen=True)
class ConvergenceRule:
    """When a loss curve counts as converged.

    The curve is smoothed by a centred moving average of ``window`` logged points (None: 2% of the
    curve, at least 1). Its plateau is the mean raw loss over the last ``plateau_fraction`` of the
    curve, its drop ``|first raw loss - plateau|``. The convergence step is the first logged step at
    which the smoothed loss lies within ``tolerance`` x drop of the plateau: with the default 0.05,
    the step by which 95% of the run's total improvement was made.
    """

    tolerance: float = 0.05
    window: int | None = None
    plateau_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.tolerance < 1.0:
            raise UserError(f"tolerance must lie in (0, 1), got {self.tolerance}")
        if self.window is not None and self.window < 1:
            raise UserError(f"window must be a positive number of logged points, got {self.window}")
        if not 0.0 < self.plateau_fraction <= 1.0:
            raise UserError(f"plateau_fraction must lie in (0, 1], got {self.plateau_fraction}")

    def window_for(self, n: int) -> int:
        """The smoothing window used for a curve of n points."""
        return self.window if self.window is not None else max(1, round(0.02 * n))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points; the window shrinks symmetrically at the ends,
    so the result has no lag (an EMA would delay every convergence step by its time constant)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    half = (int(window) - 1) // 2
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(n)
    radius = np.minimum(half, np.minimum(idx, n - 1 - idx))
    return (csum[idx + radius + 1] - csum[idx - radius]) / (2 * radius + 1)


def convergence_step(steps: np.ndarray, losses: np.ndarray, rule: ConvergenceRule | None = None) -> dict[str, float]:
    """Apply ``rule`` to one loss curve: its convergence step, plateau, drop and first loss."""
    rule = rule or ConvergenceRule()
    steps, losses = np.asarray(steps), np.asarray(losses, dtype=np.float64)
    if steps.shape != losses.shape or steps.size == 0:
        raise UserError(f"need equally long, non-empty steps and losses, got {steps.shape} and {losses.shape}")
    if not np.isfinite(losses).all():
        raise UserError("the loss curve holds NaN or inf values")
    n_tail = max(1, math.ceil(rule.plateau_fraction * losses.size))
    plateau = float(losses[-n_tail:].mean())
    drop = abs(float(losses[0]) - plateau)
    smoothed = smooth(losses, rule.window_for(losses.size))
    within = np.abs(smoothed - plateau) <= rule.tolerance * drop
    first = int(np.argmax(within)) if within.any() else losses.size - 1
    return {"converged_step": int(steps[first]), "plateau": plateau, "drop": drop, "first_loss": float(losses[0])}
