"""Evaluators fitted on the user's own image data: the feature space FID is measured in where no shipped one fits.

``diffusion-curriculum fit-evaluator --dataset PATH --out DIR`` trains, on the seed-0 training split of any
image data the trainer accepts, either a classifier (labelled data: class sub-folders or a ``labels`` array) or,
without labels, a small autoencoder whose bottleneck is the feature vector. Both share the shipped digit
classifiers' convolutional body (:class:`~.evaluator.DigitClassifier`), with the data's channel count and
resolution. DIR then holds ``evaluator.safetensors`` and ``manifest.json``: the weights' SHA-256, the data's
content hash (:func:`~..data.hashing.content_hash`) and resolution, the held-out accuracy (or reconstruction
error), and the real-vs-real Fréchet distance between two disjoint halves of the data: the FID a perfect model
would score with that many images, the noise floor every FID in these features should be read against.

An evaluation (``evaluate --evaluator DIR``, a grid's ``eval.evaluator: DIR``) refuses an evaluator whose data
hash or resolution differs from the run's data: features fitted on other data, or at another resolution, are not
the features of this data.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from ..atomic import write_atomic
from ..data import load_dataset
from ..data.hashing import content_hash
from ..errors import UserError
from .distribution import noise_floor
from .evaluator import _WIDTHS, _conv_bn_relu, _deterministic, _shift, fit_loop, verified_weights

__all__ = ["FITTED_KIND", "FeatureNet", "FittedEvaluator", "fit_user_evaluator", "load_fitted_evaluator"]

FITTED_KIND = "fitted"  # the manifest's "kind", and the prefix of the evaluator's identity in eval.jsonl
WEIGHTS_FILE = "evaluator.safetensors"
MANIFEST = "manifest.json"
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.1
_BATCH = 64
_LR = 3e-3
_WEIGHT_DECAY = 5e-4
_TARGET_STEPS = 1500  # default epochs: about this many optimizer steps, between 1 and _MAX_EPOCHS epochs
_MAX_EPOCHS = 30
_MIN_SIZE = 4  # two 2x2 poolings


def fit_hint(dataset: str, downsample: int = 1) -> str:
    """The command that fits an evaluator for ``dataset``, for error messages."""
    extra = f" --downsample {downsample}" if downsample != 1 else ""
    return f"diffusion-curriculum fit-evaluator --dataset {dataset}{extra} --out DIR"


class FeatureNet(nn.Module):
    """The shipped classifiers' convolutional body for C-channel H x W images in [-1, 1], with a class head
    (``n_classes`` > 0) or, without labels, a linear decoder back to the image (an autoencoder whose bottleneck,
    the pooled last convolution block, is the feature vector)."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, widths: tuple[int, int, int] = _WIDTHS) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        c1, c2, c3 = (int(v) for v in widths)
        self.shape, self.n_classes, self.widths = (c, h, w), int(n_classes), (c1, c2, c3)
        self.feature_dim = c3
        self.body = nn.Sequential(
            *_conv_bn_relu(c, c1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c2, c3),
            *_conv_bn_relu(c3, c3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(c3, self.n_classes) if self.n_classes > 0 else nn.Linear(c3, c * h * w)

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, as the manifest records them, so that loading rebuilds the same network."""
        shape, widths = list(self.shape), list(self.widths)
        return {"name": "FeatureNet", "shape": shape, "n_classes": self.n_classes, "widths": widths}

    def features(self, x: Tensor) -> Tensor:
        """The pooled last convolution block ``(N, feature_dim)``: the features FID and the rest are computed in."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, n_classes)``, or the reconstructed images ``(N, C, H, W)`` in [-1, 1]."""
        out = self.head(self.features(x))
        return out if self.n_classes > 0 else torch.tanh(out).view(-1, *self.shape)


@dataclass
class FittedEvaluator:
    """A loaded, verified fitted evaluator: its network, manifest and folder."""

    folder: Path
    model: FeatureNet
    sha256: str
    manifest: dict[str, Any]

    @property
    def identity(self) -> str:
        """A short string unique to these weights: eval.jsonl's ``extractor`` and part of cache keys."""
        return f"{FITTED_KIND}-{self.sha256[:16]}"

    @property
    def noise_floor(self) -> float:
        """The real-vs-real Fréchet distance of two disjoint halves of the data it was fitted on."""
        return float(self.manifest["fid_noise_floor"])

    def check_matches(self, dataset: str, shape: tuple[int, ...], downsample: int = 1) -> None:
        """Refuse (one line) data whose content hash or resolution is not the one this evaluator was fitted on."""
        digest = content_hash(dataset)
        fitted = tuple(self.manifest["resolution"])
        if digest != self.manifest["data_sha256"]:
            raise UserError(
                f"evaluator {self.folder} was fitted on other data ({self.manifest.get('data')}, content "
                f"{self.manifest['data_sha256'][:12]}) than {dataset} (content {digest[:12]}): "
                f"fit one with `{fit_hint(dataset, downsample)}`"
            )
        if fitted != tuple(shape):
            raise UserError(
                f"evaluator {self.folder} was fitted at resolution {'x'.join(map(str, fitted))} but the data is "
                f"{'x'.join(map(str, shape))}: fit one with `{fit_hint(dataset, downsample)}`"
            )

    @torch.no_grad()
    def features_and_logits(self, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor | None]:
        """Features (and class logits, for a classifier) of ``images`` ``(N, C, H, W)`` in [-1, 1], on the CPU."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.model.shape:
            raise UserError(
                f"evaluator {self.folder} expects images (N, {', '.join(map(str, self.model.shape))}), "
                f"got {tuple(images.shape)}"
            )
        self.model.eval()
        device = next(self.model.parameters()).device
        feats, logits = [], []
        for start in range(0, images.shape[0], batch_size):
            f = self.model.features(images[start : start + batch_size].to(device=device, dtype=torch.float32))
            feats.append(f.float().cpu())
            if self.model.n_classes > 0:
                logits.append(self.model.head(f).float().cpu())
        feats_out = torch.cat(feats) if feats else torch.empty(0, self.model.feature_dim)
        return feats_out, (torch.cat(logits) if logits else None)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{folder} is not an evaluator folder (no {MANIFEST}): fit one with "
            "`diffusion-curriculum fit-evaluator --dataset DATA --out DIR`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"evaluator manifest {path} is unreadable: {' '.join(str(exc).split())}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != FITTED_KIND:
        raise UserError(f"{path} is not the manifest of a fitted evaluator (written by fit-evaluator --dataset PATH)")
    return manifest


def load_fitted_evaluator(folder: str | Path) -> FittedEvaluator:
    """Load the evaluator ``fit-evaluator`` wrote to ``folder``, after checking its weights' SHA-256 (safetensors
    and JSON only: nothing is unpickled)."""
    folder = Path(folder).expanduser()
    manifest = _read_manifest(folder)
    try:
        arch = manifest["architecture"]
        shape, n_classes, widths = tuple(arch["shape"]), int(arch["n_classes"]), tuple(arch["widths"])
        expected, _ = manifest["sha256"], float(manifest["fid_noise_floor"])
        _ = manifest["data_sha256"], manifest["resolution"]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"evaluator manifest {folder / MANIFEST} is incomplete") from None
    blob, digest = verified_weights(folder / WEIGHTS_FILE, expected)
    model = FeatureNet(shape, n_classes, widths)
    model.load_state_dict(load_safetensors(blob))
    model.eval().requires_grad_(False)
    return FittedEvaluator(folder, model, digest, manifest)


def fit_user_evaluator(
    dataset: str,
    *,
    out_dir: Path,
    seed: int = 0,
    epochs: int | None = None,
    downsample: int = 1,
    on_bad_file: str = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a classifier (labelled data) or autoencoder (unlabelled) on ``dataset``'s seed-0 training split at the
    resolution the runs train at (``downsample`` as ``data.downsample``), score it on the held-out split,
    measure the real-vs-real noise floor, and write ``evaluator.safetensors`` and ``manifest.json`` to
    ``out_dir`` (atomically). Returns the manifest.

    ``seed`` fixes initialisation, shuffling and augmentation; ``epochs`` defaults to about 1,500 optimizer steps
    (1 to 30 epochs). A folder that already holds an evaluator is refused unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise UserError(f"{out_dir} already holds an evaluator; choose another --out, or pass --overwrite")
    data = load_dataset(
        dataset, seed=SPLIT_SEED, heldout_fraction=HELDOUT_FRACTION, downsample=downsample, on_bad_file=on_bad_file
    )
    if data.kind != "image":
        raise UserError(f"{dataset} holds vectors, not images: vector data is scored exactly, without an evaluator")
    c, h, w = data.shape
    if min(h, w) < _MIN_SIZE:
        raise UserError(f"{dataset}: images of {w}x{h} are too small for an evaluator (at least {_MIN_SIZE} pixels)")
    labelled = data.train_labels is not None and data.n_classes >= 2
    x, y = data.train, data.train_labels
    steps_per_epoch = math.ceil(x.shape[0] / _BATCH)
    if epochs is None:
        epochs = min(_MAX_EPOCHS, max(1, math.ceil(_TARGET_STEPS / steps_per_epoch)))
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    max_shift = 1 if max(h, w) <= 16 else 2
    g = torch.Generator().manual_seed(int(seed))
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(int(seed))
        model = FeatureNet((c, h, w), data.n_classes if labelled else 0)

        def batch_loss(idx: Tensor) -> Tensor:
            if labelled:
                return F.cross_entropy(model(_shift_channels(x[idx], max_shift, g)), y[idx])
            return F.mse_loss(model(x[idx]), x[idx])

        what = "classifier" if labelled else "autoencoder"
        fit_loop(
            model, x.shape[0], batch_loss, epochs=epochs, g=g, desc=f"fit {what} on {data.name}", progress=progress
        )
    fit_s = time.perf_counter() - started
    blob = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    digest = hashlib.sha256(blob).hexdigest()
    with torch.no_grad():
        if labelled:
            quality = {"heldout_accuracy": float((model(data.heldout).argmax(1) == data.heldout_labels).float().mean())}
        else:
            quality = {"heldout_reconstruction_mse": float(F.mse_loss(model(data.heldout), data.heldout))}
        everything = torch.cat([data.train, data.heldout])
        feats = torch.cat([model.features(part) for part in everything.split(1000)])
    floor, half = noise_floor(feats, seed=SPLIT_SEED)
    manifest = {
        "kind": FITTED_KIND,
        "file": WEIGHTS_FILE,
        "sha256": digest,
        "data": str(dataset) if dataset == data.name else str(Path(dataset).expanduser().resolve()),
        "data_sha256": content_hash(dataset),
        "resolution": [c, h, w],
        "downsample": int(downsample),
        "labelled": labelled,
        "n_classes": data.n_classes if labelled else 0,
        **quality,
        "fid_noise_floor": floor,
        "noise_floor_n": half,
        "n_train": int(x.shape[0]),
        "n_heldout": int(data.heldout.shape[0]),
        "epochs": int(epochs),
        "seed": int(seed),
        "split_seed": SPLIT_SEED,
        "heldout_fraction": HELDOUT_FRACTION,
        "feature_dim": model.feature_dim,
        "architecture": model.architecture,
        "fit_s": round(fit_s, 2),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / WEIGHTS_FILE, blob)
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _shift_channels(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Random whole-pixel translations (:func:`~.evaluator._shift`) of C-channel images, the same per image."""
    if x.shape[1] == 1:
        return _shift(x, max_shift, g)
    c = x.shape[1]
    state = g.get_state()
    out = []
    for ch in range(c):  # the same draws for every channel: reset the generator before each
        g.set_state(state)
        out.append(_shift(x[:, ch : ch + 1], max_shift, g))
    return torch.cat(out, 1)
