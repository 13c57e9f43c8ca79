"""User data: a folder of images (optionally one sub-folder per class) or a .npz / .npy array.

Folder rules: images are .png, .jpg, .jpeg, .bmp and .webp files (other files and hidden names
starting with "." are ignored); items are ordered by their relative path, so the split is the
same on every machine. Transparent pixels are composited onto white, then every image becomes
grayscale if all of them are grayscale, else RGB. All images must have one size: nothing is
resized. Captions come from ``captions.jsonl`` at the folder root, one
``{"file": "relative/path.png", "caption": "..."}`` object per line.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, UserError
from .bundle import RawData

__all__ = ["IMAGE_EXTENSIONS", "load_array_file", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SHOW = 3  # how many offending files a message names


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _name_some(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """Decode one image to uint8 (H, W) if grayscale or (H, W, 3), alpha composited onto white."""
    if path.stat().st_size == 0:
        raise UserError("zero bytes")
    with Image.open(path) as img:
        img.load()
        gray = _is_gray(img.mode)
        if img.mode.startswith("I;16"):
            img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).round().astype(np.uint8))
        if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8), gray


def _list_images(root: Path) -> tuple[list[str], list[int] | None, list[str] | None]:
    """Relative image paths in sorted order, with class labels and names when there are sub-folders."""

    def images_under(folder: Path) -> list[str]:
        found = []
        for p in folder.rglob("*"):
            rel = p.relative_to(root)
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not any(s.startswith(".") for s in rel.parts):
                found.append(rel.as_posix())
        return sorted(found)

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    top = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    top = sorted(n for n in top if not n.startswith("."))
    if not classes:
        if not top:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {root}")
        return top, None, None
    if top:
        raise DataError(
            f"{root} has class sub-folders and also images at its top level ({_name_some(top)}); "
            "move them into a class folder"
        )
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = images_under(root / name)
        if not found:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    return files, labels, classes


def _read_captions(root: Path, files: list[str]) -> list[str]:
    """The caption of each file from ``captions.jsonl``; every file must have one."""
    path = root / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"captions requested but {root} has no captions.jsonl")
    table: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            file, caption = entry["file"], entry["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f'{path} line {lineno}: expected {{"file": ..., "caption": ...}} ({_one_line(e)})') from e
        if not isinstance(file, str) or not isinstance(caption, str):
            raise DataError(f"{path} line {lineno}: file and caption must be strings")
        key = PurePosixPath(file.replace("\\", "/")).as_posix()
        if key in table:
            raise DataError(f"{path} line {lineno}: second caption for {key!r}")
        table[key] = caption
    missing = [f for f in files if f not in table]
    if missing:
        raise DataError(f"{path} has no caption for {len(missing)} of {len(files)} images: {_name_some(missing)}")
    return [table[f] for f in files]


def load_image_folder(root: Path, *, on_bad_file: str, captions: bool) -> RawData:
    """Read every image under ``root``; unreadable ones raise :class:`DataError` or are skipped."""
    files, labels, class_names = _list_images(root)
    arrays: list[np.ndarray] = []
    grays: list[bool] = []
    kept: list[int] = []
    bad: list[str] = []
    reasons: list[str] = []
    for i, rel in enumerate(files):
        try:
            array, gray = _read_image(root / rel)
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            bad.append(rel)
            reasons.append(f"{rel} ({_one_line(e) or type(e).__name__})")
            continue
        arrays.append(array)
        grays.append(gray)
        kept.append(i)
    if bad and on_bad_file == "error":
        raise DataError(
            f"{len(bad)} unreadable image file(s) in {root}: {_name_some(reasons)}; "
            "skip them with --set data.on_bad_file=skip (on_bad_file='skip' from Python)"
        )
    if not arrays:
        raise DataError(f"no readable images in {root}")
    sizes = [a.shape[:2] for a in arrays]
    (common, count), *_ = Counter(sizes).most_common(1)
    for i, size in zip(kept, sizes, strict=True):
        if size != common:
            raise DataError(
                f"images differ in size: {files[i]} is {size[1]}x{size[0]} (WxH) but {count} of {len(sizes)} "
                f"are {common[1]}x{common[0]}; resize them to one size first"
            )
    if all(grays):
        stacked = np.stack(arrays)[:, None]
    else:
        stacked = np.stack([np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays])
        stacked = stacked.transpose(0, 3, 1, 2)
    kept_files = [files[i] for i in kept]
    return RawData(
        data=torch.from_numpy(np.ascontiguousarray(stacked)).to(torch.float32) / 127.5 - 1.0,
        labels=None if labels is None else torch.tensor([labels[i] for i in kept], dtype=torch.long),
        class_names=class_names,
        captions=_read_captions(root, kept_files) if captions else None,
        skipped=bad,
    )


_EXPECTED = (
    "expected uint8 images (N,H,W), (N,H,W,C) or (N,C,H,W) with C in {1,3}, "
    "float images of those shapes in [-1, 1], or float vectors (N,D)"
)


def _array_to_tensor(x: np.ndarray, where: str) -> torch.Tensor:
    """Check an array's dtype and shape and convert it to float32 images in [-1, 1] or vectors.

    Float images in [0, 1] (the other common float convention) are refused rather than guessed at: an
    image set whose pixels happen to be non-negative cannot be told from one in [0, 1], and training on
    [0, 1] as if it were [-1, 1] silently halves the contrast the model learns."""
    if x.size == 0:
        raise DataError(f"{where}: the array is empty ({x.dtype} of shape {x.shape}); {_EXPECTED}")
    if x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating):
        if x.ndim == 2 and x.dtype != np.uint8:
            out = torch.from_numpy(x.astype(np.float32))
            if not torch.isfinite(out).all():
                raise DataError(f"{where}: vectors hold NaN or inf values")
            return out
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
            if last and not first:
                x = x.transpose(0, 3, 1, 2)
            elif not first:
                raise DataError(f"{where}: got shape {x.shape}, channel count not in {{1, 3}}; {_EXPECTED}")
        else:
            raise DataError(f"{where}: got {x.dtype} array of shape {x.shape}; {_EXPECTED}")
        if x.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32) / 127.5 - 1.0
        out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not torch.isfinite(out).all():
            raise DataError(f"{where}: images hold NaN or inf values")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1.0 - 1e-5 or hi > 1.0 + 1e-5:
            raise DataError(
                f"{where}: float images range over [{lo:g}, {hi:g}], expected [-1, 1] "
                "(store uint8 0..255 to have them scaled)"
            )
        if lo >= 0.0 and 0.0 < hi <= 1.0:
            raise DataError(
                f"{where}: float images range over [{lo:g}, {hi:g}], which looks like the [0, 1] convention; "
                "the trainer expects floats in [-1, 1] or uint8 0..255: store x * 2 - 1, "
                "or (x * 255).round().astype(np.uint8)"
            )
        return out.clamp_(-1.0, 1.0)
    raise DataError(f"{where}: got dtype {x.dtype}; {_EXPECTED} (convert 0..255 integers with .astype(np.uint8))")


def _check_label_range(y: np.ndarray, where: str) -> None:
    """Labels must be 0..K-1 with every class present: the number of classes is read from the largest
    label, so one stray label (100 among 0..9) would otherwise make 101 classes, 91 of them empty, which
    class-conditional sample grids and class accuracy then cycle through."""
    present = np.unique(y)
    k = int(present[-1]) + 1
    if len(present) != k:
        missing = sorted(set(range(k)) - {int(v) for v in present})
        rare = [int(v) for v in present if int((y == v).sum()) <= 2 and int(v) >= len(present)]
        shown = _name_some([str(m) for m in missing])
        raise DataError(
            f"{where}: labels must be 0..K-1 with every class present, but they run to {k - 1} and "
            f"{len(missing)} class(es) have no item ({shown})"
            + (f"; check the stray label(s) {_name_some([str(r) for r in rare])}" if rare else "")
            + "; renumber them, e.g. with np.unique(y, return_inverse=True)[1]"
        )


def _check_npy_header(fp, stored: int, where: str) -> None:
    """Refuse an array whose header claims more bytes than ``stored`` (what the file or zip member
    holds), before numpy allocates what the header claims."""
    version = np.lib.format.read_magic(fp)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fp)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > stored - fp.tell():
        raise DataError(
            f"{where}: its header claims an array of shape {tuple(shape)} ({claimed} bytes), but the file holds "
            f"{max(0, stored - fp.tell())} bytes of data"
        )


def _check_array_sizes(path: Path) -> None:
    """Every array of a .npy or .npz file holds the bytes its header claims."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    _check_npy_header(member, info.file_size, f"{path}[{info.filename!r}]")
    else:
        with path.open("rb") as f:
            _check_npy_header(f, path.stat().st_size, str(path))


def load_array_file(path: Path, *, captions: bool) -> RawData:
    """Read a .npy array, or a .npz holding ``images``/``x``/``arr_0`` [+ ``labels``/``y``, ``captions``]."""
    try:
        _check_array_sizes(path)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"arr_0": loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read {path}: {_one_line(e)}") from e
    except MemoryError:
        raise DataError(f"cannot read {path}: its arrays do not fit in memory") from None
    key = next((k for k in ("images", "x", "arr_0") if k in arrays), None)
    if key is None:
        raise DataError(f"{path}: expected an array named images, x or arr_0; found {sorted(arrays)}")
    x = arrays[key]
    data = _array_to_tensor(x, f"{path}[{key!r}]")
    if data.shape[0] < 2:
        raise DataError(f"{path}: need at least 2 items, got {data.shape[0]}")
    labels = None
    label_key = next((k for k in ("labels", "y") if k in arrays), None)
    if label_key is not None:
        y = arrays[label_key]
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise DataError(
                f"{path}[{label_key!r}]: expected {len(x)} non-negative integer labels, got {y.dtype} {y.shape}"
            )
        _check_label_range(y, f"{path}[{label_key!r}]")
        labels = torch.from_numpy(y.astype(np.int64))
    caption_list = None
    if captions:
        c = arrays.get("captions")
        if c is None:
            raise DataError(f"captions requested but {path} has no 'captions' array")
        if c.shape != (len(x),) or c.dtype.kind != "U":
            raise DataError(f"{path}['captions']: expected {len(x)} strings, got {c.dtype} {c.shape}")
        caption_list = [str(s) for s in c]
    return RawData(data, labels, captions=caption_list)
