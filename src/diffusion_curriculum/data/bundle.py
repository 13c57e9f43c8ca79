"""The loaded dataset (:class:`DatasetBundle`) and the fixed, seeded train/held-out split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import DataError, UserError

if TYPE_CHECKING:
    from .gmm import GaussianMixture

__all__ = ["DatasetBundle", "RawData", "split_indices"]


@dataclass
class DatasetBundle:
    """A dataset split into training and held-out items, with optional labels and captions.

    Images are float32 ``(N, C, H, W)`` in [-1, 1]; vectors are float32 ``(N, D)``. ``gmm`` is the
    exact density as a Gaussian mixture, in the same space as ``train``: the ``gmm`` and ``8gaussians``
    mixtures exactly, ``moons`` and ``swiss_roll`` by quadrature along their curves; None otherwise. ``skipped``
    lists the unreadable files left out under ``on_bad_file="skip"``.
    """

    name: str
    kind: str
    train: Tensor
    heldout: Tensor
    train_labels: Tensor | None
    heldout_labels: Tensor | None
    class_names: list[str] | None
    train_captions: list[str] | None
    heldout_captions: list[str] | None
    gmm: GaussianMixture | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of classes: ``len(class_names)`` if named, else the largest label + 1; 0 if unlabelled."""
        if self.train_labels is None:
            return 0
        if self.class_names is not None:
            return len(self.class_names)
        labels = [t for t in (self.train_labels, self.heldout_labels) if t is not None and t.numel()]
        return int(max(int(t.max()) for t in labels)) + 1 if labels else 0

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item: ``(C, H, W)`` for images, ``(D,)`` for vectors."""
        return tuple(self.train.shape[1:])


@dataclass
class RawData:
    """A loader's unsplit output: all items in a fixed order, before :func:`split_indices`."""

    data: Tensor
    labels: Tensor | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    gmm: GaussianMixture | None = None
    skipped: list[str] = field(default_factory=list)
    digit_captions: bool = False


def split_indices(n: int, heldout_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split item indices 0..n-1 into (train, heldout) by a seeded ``torch.randperm``.

    The held-out part is the first ``round(n * heldout_fraction)`` entries of the permutation, at
    least one and at most n - 1, so both parts are non-empty; the same seed gives the same split
    on every run and machine (a CPU generator).
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise UserError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    if n < 2:
        raise DataError(f"need at least 2 items to split into train and held-out, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_heldout = min(max(round(n * heldout_fraction), 1), n - 1)
    return perm[n_heldout:], perm[:n_heldout]
