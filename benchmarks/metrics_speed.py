"""Time the evaluation of 10,000 generated 28x28 images, excluding generation.

Stands in for generated images with MNIST images plus noise (the cost does not depend on what
the images show), and times what `diffusion-curriculum evaluate` does per checkpoint: evaluator
features and logits for the samples, then FID, KID, precision/recall, density/coverage against the
cached training-set features, the class accuracy and the Inception-Score analogue.

Run::

    python benchmarks/metrics_speed.py [--n 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion_curriculum.data import load_dataset
from diffusion_curriculum.metrics.distribution import feature_metrics
from diffusion_curriculum.metrics.evaluator import class_accuracy, inception_score_analogue, load_evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of 'generated' images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = load_dataset("mnist5k")
    evaluator = load_evaluator("mnist5k")
    reference = evaluator.features(data.train)  # cached on disk in real evaluations
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(data.train.shape[0], (args.n,), generator=g)
    fake = (data.train[idx] + 0.3 * torch.randn(args.n, 1, 28, 28, generator=g)).clamp(-1, 1)
    labels = data.train_labels[idx]

    times = {"features": [], "metrics": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        feats, logits = evaluator.features_and_logits(fake)
        mid = time.perf_counter()
        metrics = feature_metrics(reference, feats, generator=torch.Generator().manual_seed(0))
        metrics["class_accuracy"] = class_accuracy(logits, labels)
        metrics["is_analogue"] = inception_score_analogue(logits)[0]
        end = time.perf_counter()
        times["features"].append(mid - start)
        times["metrics"].append(end - mid)
    feat_s, metric_s = statistics.median(times["features"]), statistics.median(times["metrics"])
    print(f"{args.n} images of 28x28, {torch.get_num_threads()} threads, median of {args.repeats}:")
    print(f"  evaluator features + logits: {feat_s:6.2f} s")
    print(f"  FID, KID, P/R, D/C, accuracy, IS: {metric_s:6.2f} s")
    print(f"  total: {feat_s + metric_s:6.2f} s (target < 60 s)")
    print("  metrics:", {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
