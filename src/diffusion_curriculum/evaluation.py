"""Evaluate a run: generate a fixed set of samples per checkpoint and score them.

Images are scored in a feature space (the shipped digit classifiers for ``digits`` and
``mnist5k``, an evaluator fitted on the user's data by ``fit-evaluator``, or standard Inception-v3
from a weights file the user gives); vector data against the true distribution. Reference features
are computed once per (data content, split, resolution, extractor) and cached: keyed by the data's
content hash, not its path, so a data file overwritten in place is never scored against the old
file's features. Every setting that changes a number (sample count, seed, solver, steps, guidance,
extractor) is written next to the number.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .assembly import build_dataset, cache_dir, clusters_for
from .atomic import write_atomic
from .config import Config
from .data import DatasetBundle
from .errors import UserError
from .metrics.directions import LOWER_IS_BETTER
from .metrics.synthetic import VectorScorer, excess_denoising_error
from .progress import report
from .resources import check_fits
from .runs import checkpoints as ckpt
from .runs.layout import load_run_config
from .runs.lock import folder_lock
from .sampling import SamplingSettings, sample_decoded
from .trained import TrainedRun, load_trained

__all__ = ["EvalSettings", "HeldoutProbe", "evaluate_run", "feature_space", "heldout_cluster_losses"]


@dataclass(frozen=True)
class EvalSettings:
    """What is held fixed across every evaluated checkpoint of a run."""

    n: int = 2000
    seed: int = 0
    solver: str | None = None  # None: the run's sample.solver
    steps: int | None = None  # None: the run's sample.steps
    guidance_scale: float | None = None  # None: the run's sample.guidance_scale
    inception_weights: str | None = None
    evaluator: str | None = None  # a folder written by fit-evaluator (metrics/fitted.py)
    progress: bool = True


def feature_space(extractor: str | None, *, short: bool = False) -> str:
    """The feature space an evaluation's FID, KID and precision/recall were computed in, in words, from the
    ``extractor`` its eval.jsonl record names (``digits-<sha>``, ``mnist5k-<sha>``, ``fitted-<sha>``,
    ``inception-<sha>`` or ``exact``). A FID in a shipped digit classifier's features is not one in
    Inception-v3's, so every FID shown says which it is; ``short`` leaves out the weights' hash (for figure labels)."""
    if not extractor:
        return "an unrecorded feature space"
    if extractor == "exact":
        return "no feature space (exact metrics of vector data)"
    if extractor.startswith("inception-"):
        return "Inception-v3 features" if short else f"Inception-v3 pool3 features (weights {extractor})"
    name = extractor.rsplit("-", 1)[0]
    if name == "fitted":
        if short:
            return "fitted-evaluator features"
        return f"the features of an evaluator fitted on this data ({extractor})"
    return f"{name}-classifier features" if short else f"the shipped {name} classifier's features ({extractor})"


class _Extractor:
    """Features (and logits where the extractor is a classifier) for images in [-1, 1]."""

    def __init__(
        self, dataset: str, inception_weights: str | None, device: torch.device, evaluator: str | None = None
    ) -> None:
        from .metrics.evaluator import EVALUATOR_DATASETS, load_evaluator

        self.classifier = None
        self.inception = None
        self.fitted = None
        self.noise_floor: float | None = None  # real-vs-real FID: a fitted evaluator's, else measured on the reference
        if inception_weights is not None and evaluator is not None:
            raise UserError("give --inception-weights or --evaluator, not both")
        if evaluator is not None:
            from .metrics.fitted import load_fitted_evaluator

            self.fitted = load_fitted_evaluator(evaluator)
            self.identity = self.fitted.identity
            self.noise_floor = self.fitted.noise_floor
        elif inception_weights is not None:
            from .metrics.inception import load_inception

            self.inception = load_inception(inception_weights, device=device)
            digest = ckpt.sha256_file(Path(inception_weights))
            self.identity = f"inception-{digest[:16]}"
        elif dataset in EVALUATOR_DATASETS:
            self.classifier = load_evaluator(dataset)
            self.identity = self.classifier.identity
        else:
            from .metrics.fitted import fit_hint
            from .metrics.inception import INCEPTION_HELP

            raise UserError(
                f"no shipped feature extractor for data set {dataset!r} (only {', '.join(EVALUATOR_DATASETS)}): "
                f"fit one on it with `{fit_hint(dataset)}` and pass --evaluator DIR, or " + INCEPTION_HELP
            )

    def check(self, config: Config, data: DatasetBundle) -> None:
        """Refuse a fitted evaluator whose data content or resolution is not the run's (one line)."""
        if self.fitted is not None:
            self.fitted.check_matches(config.data.dataset, data.shape, config.data.downsample)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.fitted is not None:
            return self.fitted.features_and_logits(images)
        if self.inception is not None:
            from .metrics.inception import inception_features

            return inception_features(self.inception, images).float(), None
        size = self.classifier.model.image_size
        if images.dim() == 4 and images.shape[-1] < size and size % images.shape[-1] == 0:
            # Downsampled data (data.downsample): pixel replication back to the evaluator's size, so
            # every k x k block is constant, the same for generated and reference images.
            images = torch.nn.functional.interpolate(images, scale_factor=size // images.shape[-1], mode="nearest")
        feats, logits = self.classifier.features_and_logits(images)
        return feats, logits


def _reference_features(config: Config, data: DatasetBundle, extractor: _Extractor) -> torch.Tensor:
    """Features of the training split, cached under a key of the data's content hash (not its path: a file
    overwritten in place gets new features), split, resolution and extractor."""
    from .data.hashing import content_hash

    key = hashlib.sha256(
        json.dumps(
            [
                content_hash(config.data.dataset),
                config.seed,
                config.data.heldout_fraction,
                "train",
                extractor.identity,
                list(data.shape),
                config.data.on_bad_file,
                *([f"downsample={config.data.downsample}"] if config.data.downsample != 1 else []),
            ]
        ).encode()
    ).hexdigest()[:32]
    folder = cache_dir() / "reference"
    file = folder / f"{key}.pt"
    if file.is_file():
        try:
            return torch.load(file, weights_only=True)
        except (OSError, RuntimeError, EOFError):
            pass  # a torn cache file is recomputed
    feats, _ = extractor(data.train)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(file, lambda f: torch.save(feats, f))
    return feats


def _conditions(trained: TrainedRun, data: DatasetBundle, n: int, device: torch.device):
    """Fixed conditions: labels 0..K-1 in turn (text: their captions in the held-out templates)."""
    if trained.config.model.conditioning == "none":
        return None, None, None
    labels = torch.arange(n) % data.n_classes
    cond, uncond = trained.conditioner.for_labels(labels, device)
    return cond, uncond, labels


def _targets(run: Path, all_checkpoints: bool) -> list[str | None]:
    """What to evaluate: None for the final model, or checkpoint paths oldest first."""
    if not all_checkpoints:
        return [None]
    found = []
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        try:
            ckpt.verify(path)
        except ckpt.LegacyCheckpoint:
            raise  # not corrupt: it needs converting, and is never loaded as it is
        except ckpt.CheckpointError as exc:
            tqdm.write(f"skipping corrupt checkpoint: {exc}")
            continue
        found.append(str(path))
    if not found:
        raise FileNotFoundError(f"{run}: no intact checkpoint to evaluate under {run / 'checkpoints'}")
    return found


@torch.no_grad()
def evaluate_run(run: Path, *, all_checkpoints: bool = False, settings: EvalSettings | None = None) -> list[dict]:
    """Score the final model (or every checkpoint) of a run; write eval.jsonl and eval.png. The run
    folder is locked meanwhile (:mod:`.runs.lock`): no other process trains or evaluates it."""
    run = Path(run)
    settings = settings or EvalSettings()
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no config.yaml)")
    with folder_lock(run):
        return _evaluate_run(run, all_checkpoints, settings)


def _evaluate_run(run: Path, all_checkpoints: bool, settings: EvalSettings) -> list[dict]:
    config = load_run_config(run)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = build_dataset(config)
    extractor, reference = None, None
    if data.kind == "image":
        extractor = _Extractor(config.data.dataset, settings.inception_weights, device, settings.evaluator)
        extractor.check(config, data)
        reference = _reference_features(config, data, extractor)
        if extractor.noise_floor is None and reference.shape[0] >= 4:
            # The shipped classifiers and Inception record no floor: measure it on the FID's own reference
            # (two halves of at least 2 images each; a smaller reference has no floor to give).
            from .metrics.distribution import noise_floor

            extractor.noise_floor = noise_floor(reference)[0]
    records, scorer = [], None
    targets = _targets(run, all_checkpoints)
    for i, target in enumerate(tqdm(targets, desc="evaluate", disable=len(targets) < 2 or not settings.progress)):
        report("evaluate", i, len(targets))  # the grid's progress lines (:mod:`.progress`)
        trained = load_trained(run, target)
        check_fits("--n", settings.n, trained.data_shape, device, copies=3)
        model, objective = trained.model.to(device), trained.objective
        cond, uncond, labels = _conditions(trained, data, settings.n, device)
        sampling = SamplingSettings.resolve(
            objective,
            config,
            conditional=cond is not None,
            solver=settings.solver,
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
        )
        samples = sample_decoded(
            model,
            objective,
            config,
            trained.data_shape,
            settings.n,
            sampling,
            cond=cond,
            uncond=uncond,
            seed=settings.seed,
            device=device,
            progress=settings.progress,
        ).cpu()
        record: dict[str, Any] = {"step": trained.step, "checkpoint": target}
        bad = int((~torch.isfinite(samples.flatten(1))).any(1).sum())
        if bad:
            # A diverged model: no metric is meaningful, and saying so beats a crash or a made-up number.
            record["nonfinite_samples"] = bad
        elif data.kind == "image":
            record.update(_image_metrics(samples, reference, extractor, labels, settings))
        else:
            if scorer is None:  # the reference's share of the metrics, computed once per run
                scorer = VectorScorer(data.train, data.gmm, settings.n, torch.Generator().manual_seed(settings.seed))
            record.update(_vector_metrics(samples, scorer, data, model, objective, config, settings))
        clusters = clusters_for(config)
        record["heldout_cluster_loss"] = heldout_cluster_losses(trained, data, clusters, device, seed=settings.seed)
        record.update(
            n=settings.n,
            seed=settings.seed,
            solver=sampling.solver,
            steps=sampling.steps,
            guidance_scale=sampling.guidance_scale,
            extractor=extractor.identity if extractor is not None else "exact",
        )
        if extractor is not None and extractor.noise_floor is not None:
            record["fid_noise_floor"] = extractor.noise_floor
        records.append(record)
    report("evaluate", len(targets), len(targets))
    records.sort(key=lambda r: r["step"])
    _write_jsonl(run / "eval.jsonl", records)
    plot_eval(records, run / "eval.png", title=run.name)
    return records


def _image_metrics(samples, reference, extractor, labels, settings) -> dict[str, Any]:
    from .metrics.distribution import feature_metrics
    from .metrics.evaluator import class_accuracy, inception_score_analogue

    feats, logits = extractor(samples.clamp(-1, 1))
    out = feature_metrics(reference, feats, generator=torch.Generator().manual_seed(settings.seed))
    if logits is not None:
        out["is_analogue"] = inception_score_analogue(logits)[0]
        if labels is not None:
            out["class_accuracy"] = class_accuracy(logits, labels)
    return out


def _vector_metrics(samples, scorer, data, model, objective, config, settings) -> dict[str, Any]:
    out = scorer.score(samples)
    if data.gmm is not None and config.model.conditioning == "none":
        clusters = clusters_for(config)
        errors = excess_denoising_error(
            model, objective, data.gmm, clusters, generator=torch.Generator().manual_seed(settings.seed)
        )
        out["excess_error"] = errors
        out["excess_error_mean"] = sum(errors) / len(errors)
    return out


def _levels_in(cluster: tuple, n: int, discrete: bool, g: torch.Generator) -> torch.Tensor:
    """n noise levels drawn uniformly within one cluster (integer timesteps, or the noise variable)."""
    lo, hi = cluster
    if discrete:
        return torch.randint(int(lo), int(hi), (n,), generator=g)
    return lo + (hi - lo) * (1.0 - torch.rand(n, generator=g, dtype=torch.float64))  # (lo, hi]: no t = 0


@torch.no_grad()
def heldout_cluster_losses(
    trained: TrainedRun,
    data: DatasetBundle,
    clusters: list[tuple],
    device: torch.device,
    *,
    seed: int = 0,
    max_items: int = 512,
) -> list[float]:
    """Unweighted denoising loss on held-out data per cluster: what the model has learned at each
    noise level, independent of whether the clusters it has not trained yet spoil its samples."""
    x0 = data.heldout[:max_items]
    n = x0.shape[0]
    captions = None if data.heldout_captions is None else list(data.heldout_captions[:n])
    labels = None if data.heldout_labels is None else data.heldout_labels[:n]
    cond = trained.conditioner.for_items(labels, captions, device)
    if trained.config.data.vae:
        from .data.latents import LatentCodec

        x0 = LatentCodec(trained.config.data.vae, device).encode(x0)
    x0 = x0.to(device)
    discrete = isinstance(clusters[0][0], int)
    out = []
    for i, cluster in enumerate(clusters):
        g = torch.Generator().manual_seed(seed * 1000 + i)  # the same draws for every checkpoint
        levels = _levels_in(cluster, n, discrete, g)
        noise = torch.randn(x0.shape, generator=g).to(device)
        out.append(float(trained.objective.loss(trained.model, x0, levels.to(device), noise, cond).mean()))
    return out


class HeldoutProbe:
    """The dense, cheap learning curve that speed-ups are read from: the unweighted denoising loss on
    one fixed set of held-out (x0, noise, level) draws, the same at every evaluation, stratified over
    the clusters (``items // K`` draws in each, levels uniform within a cluster), so its mean weighs
    every noise level alike; for Gaussian-mixture data also the exact excess error over the optimal
    denoiser per cluster (fixed draws too). No sampling: one forward pass of ``items`` per call.

    Call it with the model to score (the trainer passes its EMA weights, the model a run exports).
    """

    def __init__(
        self,
        config: Config,
        data: DatasetBundle,
        objective: Any,
        conditioner: Any,
        device: torch.device | str,
        *,
        items: int = 256,
        codec: Any = None,
    ) -> None:
        self.objective, self.device = objective, device
        self.clusters = clusters_for(config, objective)
        per = max(1, items // len(self.clusters))
        g = torch.Generator().manual_seed(config.seed + 0x9E0B)  # apart from the training streams
        idx = torch.randint(data.heldout.shape[0], (per * len(self.clusters),), generator=g)
        x0 = data.heldout[idx]
        if codec is not None:
            x0 = codec.encode(x0.to(device)).cpu()
        discrete = isinstance(self.clusters[0][0], int)
        self.levels = torch.cat([_levels_in(c, per, discrete, g) for c in self.clusters]).to(device)
        self.noise = torch.randn(x0.shape, generator=g).to(device)
        self.x0 = x0.to(device)
        self.per = per
        labels = None if data.heldout_labels is None else data.heldout_labels[idx]
        captions = None if data.heldout_captions is None else [data.heldout_captions[int(i)] for i in idx]
        self.cond = conditioner.for_items(labels, captions, device)
        self.gmm = data.gmm if config.model.conditioning == "none" else None
        self.gmm_seed = config.seed + 0x9E0C

    @torch.no_grad()
    def __call__(self, model: Any) -> dict[str, Any]:
        """``heldout_loss`` (mean over all draws), ``heldout_cluster_loss`` (per cluster, least noise
        first) and, for mixture data, ``excess_error`` per cluster and ``excess_error_mean``."""
        was_training = getattr(model, "training", False)
        if was_training:
            model.eval()
        try:
            losses = self.objective.loss(model, self.x0, self.levels, self.noise, self.cond).float().cpu()
            per_cluster = losses.view(len(self.clusters), self.per).mean(1)
            out: dict[str, Any] = {
                "heldout_loss": float(losses.mean()),
                "heldout_cluster_loss": [float(v) for v in per_cluster],
            }
            if self.gmm is not None:
                from .metrics.synthetic import excess_denoising_error

                g = torch.Generator().manual_seed(self.gmm_seed)
                errors = excess_denoising_error(
                    model, self.objective, self.gmm, self.clusters, n_per_cluster=self.per, generator=g
                )
                out["excess_error"] = errors
                out["excess_error_mean"] = sum(errors) / len(errors)
            return out
        finally:
            if was_training:
                model.train()


def _write_jsonl(path: Path, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


_PLOTTED = tuple(m for m in LOWER_IS_BETTER if m not in ("density", "coverage", "is_analogue"))


def plot_eval(records: list[dict], path: Path, title: str = "") -> None:
    """One panel per scalar metric against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in _PLOTTED if any(isinstance(r.get(k), int | float) for r in records)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), dpi=100, squeeze=False)
    steps = [r["step"] for r in records]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r.get(key) for r in records], marker="o")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
