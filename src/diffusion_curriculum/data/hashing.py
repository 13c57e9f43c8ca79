"""The content hash of a data set: what caches of derived numbers and fitted evaluators are keyed by.

A path names where data is, not what it is: a file overwritten at the same path must not be scored
with the old file's cached reference features, nor with an evaluator fitted on the old file. The
hash covers the bytes of a ``.npz``/``.npy`` file, or the relative path and bytes of every image
file (and ``captions.jsonl``) of an image folder, in sorted order; hidden names are left out, as the
loader leaves them out. A built-in data set is named by itself: its content is fixed by the package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .builtin import BUILTIN_DATASETS
from .files import IMAGE_EXTENSIONS

__all__ = ["content_hash"]

_CHUNK = 1 << 20


def _update_with_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def content_hash(name_or_path: str) -> str:
    """SHA-256 (hex) of a data set's content: ``builtin:<name>`` hashed for a built-in, else the file's or
    the image folder's bytes (see the module docstring). A missing path hashes its name, so a caller that
    hashes before loading still gets the loader's own error later."""
    name_or_path = str(name_or_path)
    digest = hashlib.sha256()
    path = Path(name_or_path).expanduser()
    if name_or_path in BUILTIN_DATASETS or not path.exists():
        digest.update(f"builtin:{name_or_path}".encode())
    elif path.is_dir():
        files = sorted(
            p.relative_to(path).as_posix()
            for p in path.rglob("*")
            if p.is_file()
            and (p.suffix.lower() in IMAGE_EXTENSIONS or p.name == "captions.jsonl")
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        for rel in files:
            digest.update(rel.encode() + b"\0")
            _update_with_file(digest, path / rel)
            digest.update(b"\0")
    else:
        _update_with_file(digest, path)
    return digest.hexdigest()
