"""``load_dataset``: one entry point for the built-in datasets and user folders or arrays."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError, UserError
from .builtin import BUILTIN_DATASETS, load_builtin
from .bundle import DatasetBundle, split_indices
from .captions import digit_captions
from .files import load_array_file, load_image_folder

__all__ = ["load_dataset"]


def load_dataset(
    name_or_path: str,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.1,
    captions: bool = False,
    on_bad_file: str = "error",
    n_samples: int | None = None,
    dim: int | None = None,
    downsample: int = 1,
) -> DatasetBundle:
    """Load a built-in dataset by name, or a folder of images / .npz / .npy file, split by ``seed``.

    Built-in names win over same-named paths (write ``./digits`` for a folder called digits).
    ``seed`` fixes the split and, for generated datasets, the samples; ``n_samples`` and ``dim``
    apply to generated datasets only. ``downsample`` k > 1 average-pools images over k x k blocks
    (mnist5k 28x28 -> 14x14 with k=2), for cheaper runs. ``captions=True`` asks for one caption per item and fails
    when the dataset has none; ``on_bad_file`` is ``"error"`` or ``"skip"`` (unreadable images).
    """
    if on_bad_file not in ("error", "skip"):
        raise UserError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    name_or_path = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if name_or_path in BUILTIN_DATASETS:
        raw = load_builtin(name_or_path, seed, n_samples, dim)
        name = name_or_path
        if captions and not raw.digit_captions:
            raise DataError(f"captions requested but built-in dataset {name!r} has none (digits and mnist5k do)")
    elif path.exists():
        if n_samples is not None or dim is not None:
            raise UserError("n_samples and dim apply to the generated built-in datasets, not to files")
        if path.is_dir():
            raw = load_image_folder(path, on_bad_file=on_bad_file, captions=captions)
        elif path.suffix.lower() in (".npz", ".npy"):
            raw = load_array_file(path, captions=captions)
        else:
            raise DataError(f"unsupported file {path}: expected a folder of images, a .npz or a .npy file")
        name = path.resolve().name if path.is_dir() else path.stem
    else:
        raise DataError(
            f"unknown dataset {name_or_path!r}: not a built-in ({', '.join(BUILTIN_DATASETS)}) "
            "and no such file or folder"
        )

    data = raw.data if downsample == 1 else _downsample(raw.data, downsample)
    train_idx, heldout_idx = split_indices(raw.data.shape[0], heldout_fraction, seed)
    labels = raw.labels
    train_captions = heldout_captions = None
    if captions and raw.digit_captions:
        train_captions, heldout_captions = digit_captions(labels[train_idx], labels[heldout_idx], seed)
    elif raw.captions is not None:
        train_captions = [raw.captions[i] for i in train_idx.tolist()]
        heldout_captions = [raw.captions[i] for i in heldout_idx.tolist()]
    return DatasetBundle(
        name=name,
        kind="image" if data.ndim == 4 else "vector",
        train=data[train_idx].contiguous(),
        heldout=data[heldout_idx].contiguous(),
        train_labels=None if labels is None else labels[train_idx],
        heldout_labels=None if labels is None else labels[heldout_idx],
        class_names=raw.class_names,
        train_captions=train_captions,
        heldout_captions=heldout_captions,
        gmm=raw.gmm,
        skipped=raw.skipped,
    )


def _downsample(images: torch.Tensor, k: int) -> torch.Tensor:
    """Average over k x k blocks: the mean of each block, so the value range stays [-1, 1]."""
    if k < 1:
        raise UserError(f"downsample must be >= 1, got {k}")
    if images.ndim != 4:
        raise DataError(f"downsample applies to images, but this data set holds vectors of shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % k or w % k:
        raise DataError(f"downsample {k} must divide the image size, got {w}x{h} (WxH)")
    return torch.nn.functional.avg_pool2d(images, k).contiguous()
