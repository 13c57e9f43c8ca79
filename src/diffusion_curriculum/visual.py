"""Sample grids (PNG) for images and scatter plots for 2-D vector data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["save_image_grid", "save_samples", "save_scatter"]


def save_image_grid(images: torch.Tensor, path: Path, scale: int = 4, pad: int = 1) -> None:
    """Write (N, C, H, W) images in [-1, 1] as one grid PNG, upscaled so small images are visible."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = x[i].transpose(1, 2, 0)
    pixels = (grid * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode="L" if c == 1 else "RGB")
    scale = max(1, scale if h < 32 else 1)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def save_scatter(samples: torch.Tensor, reference: torch.Tensor, path: Path, title: str = "") -> None:
    """Scatter the first two coordinates of samples over the data, for vector data sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ref = reference.detach().float().cpu()[:, :2].numpy()
    gen = samples.detach().float().cpu()[:, :2].numpy()
    ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, color="0.6", label="data")
    ax.scatter(gen[:, 0], gen[:, 1], s=3, alpha=0.7, color="C3", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_samples(samples: torch.Tensor, reference: torch.Tensor, path: Path, title: str = "") -> None:
    """A grid for images, a scatter plot for vectors."""
    if samples.dim() == 4:
        save_image_grid(samples, path)
    else:
        save_scatter(samples, reference, path, title)
