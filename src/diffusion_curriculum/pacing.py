"""Pacing: when a curriculum moves on to its next stage.

A pacing object sees one training loss per step through :meth:`update` and answers whether the
stage should advance now; the sampler calls :meth:`reset` after each advance. Every pacing has
``state_dict``/``load_state_dict`` for exact resume.

:class:`AdaptivePacing` is the adaptive pacing rule of Kim, Go, Kwon & Kim, "Denoising Task
Difficulty-based Curriculum for Training Diffusion Models" (ICLR 2025, arXiv 2403.10348): the
curriculum moves to its next stage once the training loss of the current stage has stopped
improving for a maximum patience of tau iterations (``patience`` here). :class:`FixedPacing` and
:class:`FunctionPacing` are ablation baselines; the latter uses the competence functions of
Platanios et al. 2019, not the paper's rule.

:data:`PACINGS` registers every pacing class by name; the contract tests (tests/contract/) run
their shared checks on each registered class, so a new rule must be added there to be tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import UserError

__all__ = [
    "PACINGS",
    "PACING_FUNCTIONS",
    "AdaptivePacing",
    "FixedPacing",
    "FunctionPacing",
    "Pacing",
    "pacing_fraction",
]


class Pacing(Protocol):
    """What :class:`~diffusion_curriculum.CurriculumSampler` needs from a pacing rule."""

    def update(self, loss: float, stage: int, n_stages: int) -> bool:
        """Record one step's loss while in ``stage`` (1-based); True means advance now."""
        ...

    def reset(self) -> None:
        """Called after the stage advanced."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FixedPacing:
    """Advance after a fixed number of steps per stage (one number, or one per stage)."""

    def __init__(self, steps_per_stage: int | Sequence[int]) -> None:
        if isinstance(steps_per_stage, int) and not isinstance(steps_per_stage, bool):
            self.steps_per_stage: tuple[int, ...] = (_positive_int("steps_per_stage", steps_per_stage),)
        else:
            if not isinstance(steps_per_stage, Sequence) or isinstance(steps_per_stage, str):
                raise UserError(
                    f"steps_per_stage must be a positive integer or a sequence of them, got {steps_per_stage!r}"
                )
            self.steps_per_stage = tuple(_positive_int("steps_per_stage", s) for s in steps_per_stage)
            if not self.steps_per_stage:
                raise UserError("steps_per_stage must not be empty")
        self.steps_in_stage = 0

    def update(self, loss: float, stage: int, n_stages: int) -> bool:
        self.steps_in_stage += 1
        limit = self.steps_per_stage[min(stage - 1, len(self.steps_per_stage) - 1)]
        return self.steps_in_stage >= limit

    def reset(self) -> None:
        self.steps_in_stage = 0

    def state_dict(self) -> dict[str, Any]:
        return {"steps_in_stage": self.steps_in_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_in_stage = int(state["steps_in_stage"])

    def __repr__(self) -> str:
        return f"FixedPacing({list(self.steps_per_stage)})"


class AdaptivePacing:
    """The adaptive pacing of Kim et al. (arXiv 2403.10348): advance once the loss stops improving.

    The paper moves to the next curriculum stage when the training loss has not improved for a
    maximum patience of tau iterations, tau a fixed hyper-parameter; ``patience`` is that tau. The
    EMA smoothing, ``min_delta`` and the per-stage cap ``max_steps_per_stage`` are additions of
    this package, all off by default.

    Each observation (optionally EMA-smoothed with decay ``ema``) counts as an improvement when
    it is below the stage's best by more than ``min_delta``; the best is then updated and the
    counter cleared, otherwise the counter grows. The stage advances when the counter reaches
    ``patience`` or the stage has lasted ``max_steps_per_stage`` observations. Best, counter and
    EMA all restart at every stage change, since a new cluster changes the loss level.

    Minibatch losses are noisy: with ``ema=None`` and ``min_delta=0`` a noisy plateau still
    produces new minima by chance, so stages last longer than the true plateau. ``ema=0.99``
    with a small ``min_delta`` is a sensible start for minibatch training.
    """

    def __init__(
        self,
        patience: int,
        min_delta: float = 0.0,
        ema: float | None = None,
        max_steps_per_stage: int | None = None,
    ) -> None:
        self.patience = _positive_int("patience", patience)
        if not (_is_real(min_delta) and min_delta >= 0):
            raise UserError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if ema is not None and not (_is_real(ema) and 0.0 <= ema < 1.0):
            raise UserError(f"ema must be None or a decay in [0, 1), got {ema!r}")
        if max_steps_per_stage is not None:
            _positive_int("max_steps_per_stage", max_steps_per_stage)
        self.min_delta = float(min_delta)
        self.ema = ema
        self.max_steps_per_stage = max_steps_per_stage
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.smoothed: float | None = None
        self.bad_steps = 0
        self.steps_in_stage = 0

    def update(self, loss: float, stage: int, n_stages: int) -> bool:
        loss = float(loss)
        self.steps_in_stage += 1
        if not math.isfinite(loss):
            # A non-finite loss says nothing about convergence; it is neither progress nor a plateau.
            return self._over_budget()
        if self.ema is None or self.smoothed is None:
            self.smoothed = loss
        else:
            self.smoothed = self.ema * self.smoothed + (1.0 - self.ema) * loss
        if self.best is None or self.smoothed < self.best - self.min_delta:
            self.best = self.smoothed
            self.bad_steps = 0
        else:
            self.bad_steps += 1
        return self.bad_steps >= self.patience or self._over_budget()

    def _over_budget(self) -> bool:
        return self.max_steps_per_stage is not None and self.steps_in_stage >= self.max_steps_per_stage

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "smoothed": self.smoothed,
            "bad_steps": self.bad_steps,
            "steps_in_stage": self.steps_in_stage,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.smoothed = state["smoothed"]
        self.bad_steps = int(state["bad_steps"])
        self.steps_in_stage = int(state["steps_in_stage"])

    def __repr__(self) -> str:
        return (
            f"AdaptivePacing(patience={self.patience}, min_delta={self.min_delta}, "
            f"ema={self.ema}, max_steps_per_stage={self.max_steps_per_stage})"
        )


PACING_FUNCTIONS = ("linear", "root", "geometric")


def _check_kind(kind: Any) -> None:
    if kind not in PACING_FUNCTIONS:
        raise UserError(f"unknown pacing function kind {kind!r}; choose from {PACING_FUNCTIONS}")


def _check_start_fraction(start_fraction: Any, *, allow_none: bool) -> None:
    if start_fraction is None and allow_none:
        return
    if not (_is_real(start_fraction) and 0.0 < start_fraction <= 1.0):
        raise UserError(f"start_fraction must lie in (0, 1], got {start_fraction!r}")


def pacing_fraction(kind: str, step: int, total_steps: int, start_fraction: float) -> float:
    """Fraction of clusters unlocked at ``step`` for the competence-style pacing functions.

    With c0 = ``start_fraction`` and s = min(step / total_steps, 1) (Platanios et al. 2019):
      linear:    c0 + (1 - c0) s
      root:      sqrt(c0^2 + (1 - c0^2) s)
      geometric: c0^(1 - s)   (equal ratios between steps: 2^(s log2 1 + (1-s) log2 c0))
    All reach 1 at ``total_steps``.
    """
    _check_kind(kind)
    _positive_int("total_steps", total_steps)
    _check_start_fraction(start_fraction, allow_none=False)
    s = min(max(step, 0) / total_steps, 1.0)
    c0 = start_fraction
    if kind == "linear":
        return c0 + (1.0 - c0) * s
    if kind == "root":
        return math.sqrt(c0 * c0 + (1.0 - c0 * c0) * s)
    return c0 ** (1.0 - s)


class FunctionPacing:
    """Unlock clusters on a fixed schedule: stage = max(1, floor(fraction(step) * n_stages)).

    For ablations against adaptive pacing; the loss is ignored. ``start_fraction`` defaults to
    one stage's worth when ``None`` (so training starts on a single cluster).
    """

    def __init__(self, kind: str, total_steps: int, start_fraction: float | None = None) -> None:
        _check_kind(kind)
        self.kind = kind
        self.total_steps = _positive_int("total_steps", total_steps)
        _check_start_fraction(start_fraction, allow_none=True)
        self.start_fraction = start_fraction
        self.step = 0

    def update(self, loss: float, stage: int, n_stages: int) -> bool:
        self.step += 1
        c0 = self.start_fraction if self.start_fraction is not None else 1.0 / n_stages
        fraction = pacing_fraction(self.kind, self.step, self.total_steps, c0)
        return math.floor(fraction * n_stages + 1e-9) > stage

    def reset(self) -> None:
        """The step count runs on across stages: the function is of the global step."""

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def __repr__(self) -> str:
        return f"FunctionPacing({self.kind!r}, total_steps={self.total_steps})"


PACINGS: dict[str, type] = {
    "fixed": FixedPacing,
    "adaptive": AdaptivePacing,
    "function": FunctionPacing,
}
"""Every pacing class by name. The config's ``curriculum.pacing`` is ``adaptive``, ``fixed`` or one
of :data:`PACING_FUNCTIONS` (each a :class:`FunctionPacing`). The contract tests in tests/contract/
iterate over this registry and fail for a name that has no example arguments there."""
