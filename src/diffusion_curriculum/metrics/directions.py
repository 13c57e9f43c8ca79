"""Which way is better for each scalar metric an evaluation writes: the one table the report, the
grid runner and the evaluation plot read."""

from __future__ import annotations

__all__ = ["LOWER_IS_BETTER", "lower_is_better"]

# Scalar metrics of eval.jsonl, in display order, with whether lower is better.
LOWER_IS_BETTER: dict[str, bool] = {
    "fid": True,
    "kid": True,
    "precision": False,
    "recall": False,
    "density": False,
    "coverage": False,
    "is_analogue": False,
    "class_accuracy": False,
    "nll": True,
    "sliced_wasserstein": True,
    "mmd": True,
    "excess_error_mean": True,
}


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (a metric this table does not know counts as a loss)."""
    return LOWER_IS_BETTER.get(metric, True)
