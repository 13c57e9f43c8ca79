"""Evaluation metrics: distribution metrics on features, and metrics against a known data density for vectors."""

from .distribution import FeatureStats, density_coverage, feature_metrics, frechet_distance, kid, precision_recall
from .synthetic import VectorScorer, excess_denoising_error, mmd, nll, sliced_wasserstein, vector_metrics

__all__ = [
    "FeatureStats",
    "VectorScorer",
    "density_coverage",
    "excess_denoising_error",
    "feature_metrics",
    "frechet_distance",
    "kid",
    "mmd",
    "nll",
    "precision_recall",
    "sliced_wasserstein",
    "vector_metrics",
]
