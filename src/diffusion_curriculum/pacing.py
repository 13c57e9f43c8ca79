"""Pacing: when a curriculum moves on to its next stage.

A pacing object sees one training loss per step through :meth:`update` and answers whether the
stage should advance now, and its ``cause`` says why; the sampler calls :meth:`reset` after each
advance. Every pacing has ``state_dict``/``load_state_dict`` for exact resume.

:class:`AdaptivePacing` is the adaptive pacing rule of Kim, Go, Kwon & Kim, "Denoising Task
Difficulty-based Curriculum for Training Diffusion Models" (ICLR 2025, arXiv 2403.10348): the
curriculum moves to its next stage once the training loss of the current stage has stopped
improving for a maximum patience of tau iterations (``patience`` here). :class:`FixedPacing` and
:class:`FunctionPacing` are ablation baselines; the latter uses the competence functions of
Platanios et al. 2019, not the paper's rule.

What a pacing can do within a budget is decided here too, from the pacing's parameters and the
budget alone (no config): the per-stage cap of adaptive pacing (:func:`adaptive_stage_cap`, with
:func:`budget_stage_cap` for a share of the budget), when that cap leaves patience no room to fire
(:func:`cap_only_reason`), and the span of steps by which every timestep is in play
(:func:`pacing_span`). The config, ``info`` and the trainer call these.

:data:`PACINGS` registers every pacing class by name; the contract tests (tests/contract/) run
their shared checks on each registered class, so a new rule must be added there to be tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import UserError

__all__ = [
    "DEFAULT_PATIENCE",
    "MIN_DELTA_MODES",
    "PACINGS",
    "PACING_FUNCTIONS",
    "STAGE_CHANGE_CAUSES",
    "AdaptivePacing",
    "FixedPacing",
    "FunctionPacing",
    "Pacing",
    "adaptive_stage_cap",
    "budget_patience",
    "budget_stage_cap",
    "budget_stage_lengths",
    "budget_steps",
    "cap_only_reason",
    "first_comparison_step",
    "pacing_fraction",
    "pacing_span",
    "shortest_adaptive_stage",
    "stages_before_last",
]

MIN_DELTA_MODES = ("relative", "absolute")
STAGE_CHANGE_CAUSES = ("patience", "cap", "fixed", "schedule")
"""What can end a stage, as pacings report it in their ``cause``: adaptive pacing's patience or its
per-stage cap, a fixed stage length, a pacing function's schedule."""


class Pacing(Protocol):
    """What :class:`~diffusion_curriculum.CurriculumSampler` needs from a pacing rule.

    ``cause`` says why the last ``update`` that returned True did (one of
    :data:`STAGE_CHANGE_CAUSES` for the rules here); the sampler records it with the stage change.
    """

    cause: str | None

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

    cause = "fixed"

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


def first_comparison_step(ema: float | None) -> int:
    """The step of a stage at which adaptive pacing first compares the smoothed loss with a best.

    One EMA time constant, round(1 / (1 - ema)) observations (1 without smoothing): before it, the
    bias-corrected EMA is an average of only a few minibatches, and a best taken from it would be
    an early noisy minimum that the true, still falling loss needs many steps to beat.
    """
    return 1 if ema is None else max(1, round(1.0 / (1.0 - ema)))


def shortest_adaptive_stage(patience: int, ema: float | None) -> int:
    """The fewest steps after which patience can end a stage: the first comparison sets the best,
    then ``patience`` steps without improvement."""
    return first_comparison_step(ema) + patience


class AdaptivePacing:
    """The adaptive pacing of Kim et al. (arXiv 2403.10348): advance once the loss stops improving.

    The paper moves to the next curriculum stage when the training loss has not improved for a
    maximum patience of tau iterations, tau a fixed hyper-parameter; ``patience`` is that tau.
    Minibatch losses are noisy, so by default the loss watched is smoothed and an improvement must
    be a relative one (additions of this package; ``ema=None, min_delta=0`` is the paper's plain
    rule):

    - **Bias-corrected EMA.** ``m_k = ema * m_{k-1} + (1 - ema) * y_k`` from ``m_0 = 0``, and the
      smoothed value is ``m_k / (1 - ema**k)`` (the correction Adam applies to its moments), i.e.
      the average of the stage's observations with weights ``ema**(k - i)``. No single minibatch
      dominates it, unlike an EMA seeded with the stage's first loss (with ``ema`` 0.99 that first
      loss still weighs 0.99**40 = 2/3 forty steps later).
    - **Relative ``min_delta``** (``min_delta_mode="relative"``, the default): the smoothed loss
      improves when it is below ``best * (1 - min_delta)``, the same criterion at every loss scale;
      and since that is a criterion on log-loss, the EMA averages ``y = log(loss)`` (the smoothed
      loss is ``exp`` of it, a geometric average). A loss that falls by orders of magnitude early
      in a stage (a diffusion loss at high noise does) would otherwise keep a linear average
      falling by a factor ``ema`` per step long after the loss itself has levelled off, and with it
      the smoothed loss would "improve" for hundreds of steps. Losses that are not positive carry
      no information on this scale and are skipped. ``"absolute"`` averages the loss itself and
      compares with ``best - min_delta``, as other code bases do.
    - **Comparisons start after one EMA time constant** (:func:`first_comparison_step`), so the
      stage's best is not an early noisy minimum.

    Each step's smoothed loss counts as an improvement when it beats the stage's best by more than
    the margin; the best is then updated and the counter cleared, otherwise the counter grows. The
    stage advances when the counter reaches ``patience`` (:attr:`cause` ``"patience"``) or the stage
    has lasted ``max_steps_per_stage`` steps (``"cap"``). Best, counter and EMA restart at every
    stage change, since a new cluster changes the loss level. So a stage ends once the smoothed loss
    has improved by less than ``min_delta`` (a fraction) over ``patience`` steps.

    A cap shorter than :func:`shortest_adaptive_stage` ends every stage before patience can: that
    is fixed pacing under another name, and is refused unless ``allow_cap_only=True``.
    """

    def __init__(
        self,
        patience: int,
        min_delta: float = 0.02,
        ema: float | None = 0.9,
        max_steps_per_stage: int | None = None,
        *,
        min_delta_mode: str = "relative",
        allow_cap_only: bool = False,
    ) -> None:
        self.patience = _positive_int("patience", patience)
        if not (_is_real(min_delta) and min_delta >= 0):
            raise UserError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if min_delta_mode not in MIN_DELTA_MODES:
            raise UserError(f"min_delta_mode must be one of {MIN_DELTA_MODES}, got {min_delta_mode!r}")
        if min_delta_mode == "relative" and min_delta >= 1:
            raise UserError(f"a relative min_delta must be below 1 (a fraction of the loss), got {min_delta!r}")
        if ema is not None and not (_is_real(ema) and 0.0 <= ema < 1.0):
            raise UserError(f"ema must be None or a decay in [0, 1), got {ema!r}")
        if max_steps_per_stage is not None:
            _positive_int("max_steps_per_stage", max_steps_per_stage)
            reason = cap_only_reason(patience, ema, max_steps_per_stage)
            if reason is not None and not allow_cap_only:
                raise UserError(
                    f"max_steps_per_stage {max_steps_per_stage}: {reason}: raise max_steps_per_stage, lower "
                    f"patience, or pass allow_cap_only=True"
                )
        self.min_delta = float(min_delta)
        self.min_delta_mode = min_delta_mode
        self.ema = None if ema is None else float(ema)
        self.max_steps_per_stage = max_steps_per_stage
        self.first_comparison = first_comparison_step(self.ema)
        self.cause: str | None = None  # why the last advance happened: "patience" or "cap"
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.smoothed: float | None = None
        self.ema_sum = 0.0  # m_k, the uncorrected EMA (of log-loss in relative mode)
        self.observed = 0  # losses averaged in this stage (k of the bias correction)
        self.bad_steps = 0
        self.steps_in_stage = 0

    def update(self, loss: float, stage: int, n_stages: int) -> bool:
        loss = float(loss)
        self.steps_in_stage += 1
        # A non-finite loss (or, on the log scale, a non-positive one) says nothing about convergence;
        # it is neither progress nor a plateau.
        if self._informative(loss):
            self.observed += 1
            if self.ema is None:
                self.smoothed = loss
            else:
                y = math.log(loss) if self.min_delta_mode == "relative" else loss
                self.ema_sum = self.ema * self.ema_sum + (1.0 - self.ema) * y
                level = self.ema_sum / (1.0 - self.ema**self.observed)
                self.smoothed = math.exp(level) if self.min_delta_mode == "relative" else level
            if self.observed >= self.first_comparison:
                if self.best is None or self.smoothed < self.best - self._margin(self.best):
                    self.best = self.smoothed
                    self.bad_steps = 0
                else:
                    self.bad_steps += 1
        if self.bad_steps >= self.patience:
            self.cause = "patience"
            return True
        if self.max_steps_per_stage is not None and self.steps_in_stage >= self.max_steps_per_stage:
            self.cause = "cap"
            return True
        return False

    def _informative(self, loss: float) -> bool:
        return math.isfinite(loss) and (loss > 0 or self.min_delta_mode == "absolute")

    def _margin(self, best: float) -> float:
        return self.min_delta * best if self.min_delta_mode == "relative" else self.min_delta

    def signal_state(self) -> dict[str, Any]:
        """What the rule watches: the smoothed loss, the stage's best and the steps since it improved."""
        return {"signal": self.smoothed, "best": self.best, "counter": self.bad_steps}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "smoothed": self.smoothed,
            "ema_sum": self.ema_sum,
            "observed": self.observed,
            "bad_steps": self.bad_steps,
            "steps_in_stage": self.steps_in_stage,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state saved before the EMA was bias-corrected (no
        ``ema_sum``) continues from its smoothed value as if it had been corrected."""
        self.best = state["best"]
        self.smoothed = state["smoothed"]
        self.bad_steps = int(state["bad_steps"])
        self.steps_in_stage = int(state["steps_in_stage"])
        if "ema_sum" in state:
            self.ema_sum = float(state["ema_sum"])
            self.observed = int(state["observed"])
        else:
            self.observed = self.steps_in_stage if self.smoothed is not None else 0
            self.ema_sum = 0.0
            if self.smoothed is not None and self.ema is not None and self._informative(self.smoothed):
                level = math.log(self.smoothed) if self.min_delta_mode == "relative" else self.smoothed
                self.ema_sum = level * (1.0 - self.ema**self.observed)

    def __repr__(self) -> str:
        return (
            f"AdaptivePacing(patience={self.patience}, min_delta={self.min_delta}, ema={self.ema}, "
            f"max_steps_per_stage={self.max_steps_per_stage}, min_delta_mode={self.min_delta_mode!r})"
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

    cause = "schedule"

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


# ----- what a pacing can do within a budget ------------------------------------------------------
DEFAULT_PATIENCE = 10
"""Adaptive pacing's patience when neither the config nor a budget fraction sets it."""


def budget_steps(budget_fraction: float, total_steps: int) -> int:
    """The step by which a curriculum bounded by ``budget_fraction`` of ``total_steps`` has every timestep in
    play: round(fraction x total_steps), at least 1."""
    if not (_is_real(budget_fraction) and 0.0 < budget_fraction <= 1.0):
        raise UserError(f"budget_fraction must lie in (0, 1], got {budget_fraction!r}")
    return max(1, round(budget_fraction * _positive_int("total_steps", total_steps)))


def budget_stage_lengths(phase_steps: int, stages_before_last: int) -> list[int]:
    """Fixed pacing that unlocks the last stage at exactly step ``phase_steps``: the stages before the last
    split it as evenly as whole steps allow (the first ``phase_steps mod stages`` one step longer)."""
    _positive_int("stages_before_last", stages_before_last)
    if phase_steps < stages_before_last:
        raise UserError(
            f"{phase_steps} steps cannot hold {stages_before_last} stages of at least one step each: "
            f"raise the budget fraction or train.max_steps, or use fewer clusters"
        )
    base, extra = divmod(phase_steps, stages_before_last)
    return [base + 1] * extra + [base] * (stages_before_last - extra)


def budget_patience(stage_cap: int, ema: float | None) -> int:
    """Adaptive pacing's patience when a budget fraction sets the per-stage cap and nothing sets the patience:
    a quarter of the cap (at least 1). A stage whose smoothed loss has levelled off then ends on patience in
    about a quarter of its share of the budget plus one EMA time constant, and one still improving ends at
    its share; a quarter is our choice (the paper's tau is a fixed number of iterations, chosen for runs
    hundreds of times longer than ours), stated by ``info``. On a cap so short that a quarter of it cannot
    fire before the cap (:func:`shortest_adaptive_stage`), the largest patience that can (at least 1): a
    derived patience is never the reason a config is refused; a cap shorter than one EMA time constant
    plus one step still is (:func:`cap_only_reason`)."""
    cap = _positive_int("stage_cap", stage_cap)
    quarter = max(1, cap // 4)
    return max(1, min(quarter, cap - first_comparison_step(ema)))


def stages_before_last(n_clusters: int, cumulative: bool = True) -> int:
    """How many stages end before every timestep is in play: N - 1 when each stage adds a cluster
    (cumulative), N when each stage trains one cluster and a last one all of them."""
    return n_clusters - 1 if cumulative else n_clusters


def budget_stage_cap(budget_fraction: float, total_steps: int, stages_before_last: int) -> int | None:
    """Each stage before the last's equal share of ``budget_fraction`` of ``total_steps`` (at least 1
    step), so that every timestep is in play by that fraction of the budget at the latest; None when
    there is no stage before the last."""
    if stages_before_last < 1:
        return None
    return max(1, int(budget_fraction * total_steps / stages_before_last))


def adaptive_stage_cap(
    patience: int,
    ema: float | None,
    *,
    max_steps_per_stage: int | None = None,
    cap_multiple: float | None = None,
    budget_cap: int | None = None,
) -> int | None:
    """The longest a stage of adaptive pacing may last: ``max_steps_per_stage`` if given, else the
    smaller of ``cap_multiple`` times the shortest stage patience allows
    (:func:`shortest_adaptive_stage`) and ``budget_cap`` (:func:`budget_stage_cap`), those given;
    None (no cap) when neither is.

    A cap derived from the patience can never cut a stage short of its patience; it bounds the
    stages of a loss that keeps creeping down by more than ``min_delta``, which otherwise could hold
    one cluster for the whole run.
    """
    if max_steps_per_stage is not None:
        return max_steps_per_stage
    caps = [] if budget_cap is None else [budget_cap]
    if cap_multiple is not None:
        caps.append(math.ceil(cap_multiple * shortest_adaptive_stage(patience, ema)))
    return min(caps) if caps else None


def cap_only_reason(patience: int, ema: float | None, cap: int | None, cap_source: str | None = None) -> str | None:
    """Why adaptive pacing with this patience, smoothing and per-stage cap cannot fire, in one clause
    (``cap_source``, when given, says in brackets what set the cap); None when it can. Patience ends a
    stage no earlier than :func:`shortest_adaptive_stage` steps into it, so a cap below that ends every
    stage first: fixed pacing at the cap's length."""
    shortest = shortest_adaptive_stage(patience, ema)
    if cap is None or cap >= shortest:
        return None
    source = "" if cap_source is None else f" ({cap_source})"
    return (
        f"adaptive pacing cannot fire: patience {patience} (with ema {ema}) ends a stage no earlier than its "
        f"step {shortest}, but the cap{source} ends every stage at step {cap}: this is fixed {cap}-step pacing"
    )


def pacing_span(pacing: Pacing, stages_before_last: int) -> tuple[int, int | None]:
    """The earliest and the latest step by which ``pacing`` can have put every timestep in play, after
    ``stages_before_last`` stages (:func:`stages_before_last`); latest None when nothing bounds it.

    Adaptive pacing: each stage before the last lasts at least the shortest stage patience allows
    (:func:`shortest_adaptive_stage`, or the cap when that is shorter) and at most the cap. Fixed
    pacing and pacing functions ignore the loss, so both ends are the step at which their schedule
    unlocks the last stage. Adaptive pacing counts steps, not shares of the budget, so on a short
    budget its curriculum can take most of the run; ``info`` prints this span beside the budget.
    """
    if isinstance(pacing, AdaptivePacing):
        cap = pacing.max_steps_per_stage
        shortest = shortest_adaptive_stage(pacing.patience, pacing.ema)
        if cap is not None:
            shortest = min(shortest, cap)
        return stages_before_last * shortest, (stages_before_last * cap if cap is not None else None)
    if isinstance(pacing, FixedPacing):
        lengths = pacing.steps_per_stage
        step = sum(lengths[min(k, len(lengths) - 1)] for k in range(stages_before_last))
        return step, step
    if isinstance(pacing, FunctionPacing):
        step = _function_span(pacing, stages_before_last + 1)
        return step, step
    raise UserError(f"no span is known for the pacing {pacing!r}")


def _function_span(pacing: FunctionPacing, n_stages: int) -> int:
    """The step at which a fresh copy of ``pacing`` unlocks the last of ``n_stages``, the sampler advancing
    one stage per step at most: replayed (a pacing function is only defined step by step), at most
    ``total_steps + n_stages`` updates."""
    replay = FunctionPacing(pacing.kind, pacing.total_steps, pacing.start_fraction)
    stage, step = 1, 0
    while stage < n_stages:
        step += 1
        if replay.update(math.nan, stage, n_stages):
            stage += 1
    return step
