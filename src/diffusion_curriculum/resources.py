"""Memory a request needs, checked before it is allocated.

A batch size, sample count or data set size that cannot fit must be refused in one line that names
the setting, before anything is written, rather than end in an allocator error after the run folder
was started. The estimates here are lower bounds (the tensors themselves, a few times over), so a
request they refuse cannot fit; one they pass may still not, and then the allocator's error is
reported in one line by the CLI.

This module imports only torch and the errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from .errors import ConfigError

__all__ = ["check_fits", "device_memory", "fmt_bytes"]


def device_memory(device: torch.device | str = "cpu") -> int | None:
    """Total memory of ``device`` in bytes: the GPU's, or the machine's RAM; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def fmt_bytes(n: float) -> str:
    """Bytes in binary units, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_fits(
    what: str,
    count: int,
    item_shape: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    copies: int = 4,
    bytes_per_value: int = 4,
) -> None:
    """Refuse ``count`` items of ``item_shape`` when ``copies`` of them (inputs, noise, outputs, ...)
    alone exceed ``device``'s memory; ``what`` names the setting in the ConfigError."""
    have = device_memory(device)
    need = int(count) * math.prod(int(d) for d in item_shape) * bytes_per_value * copies
    if have is not None and need > have:
        shape = "x".join(str(int(d)) for d in item_shape)
        raise ConfigError(
            f"{what}: {count} items of shape {shape} need at least {fmt_bytes(need)}, more than the "
            f"{fmt_bytes(have)} of {torch.device(device).type} memory here; lower it"
        )
