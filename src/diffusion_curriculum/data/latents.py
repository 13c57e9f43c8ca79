"""Latent diffusion: a diffusers AutoencoderKL from a local folder encodes the data once.

Latents are the posterior *mean* times the VAE's ``scaling_factor`` (no sampling, so a cached
encoding is deterministic); they are cached on disk keyed by the VAE's files and the data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..atomic import write_atomic
from ..errors import DataError

__all__ = ["LatentCodec"]


class LatentCodec:
    """Encode images in [-1, 1] to scaled latents and decode them back."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        from diffusers import AutoencoderKL

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise DataError(f"--vae {self.path}: not a diffusers AutoencoderKL folder (no config.json)")
        try:
            self.vae = AutoencoderKL.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DataError(f"--vae {self.path}: could not load an AutoencoderKL ({exc.__class__.__name__})") from None
        self.vae.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.batch_size = batch_size

    def identity(self) -> str:
        """A digest of the VAE's config and weight files (size and modification time)."""
        h = hashlib.sha256()
        for file in sorted(self.path.rglob("*")):
            if file.is_file():
                stat = file.stat()
                h.update(f"{file.relative_to(self.path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        h.update((self.path / "config.json").read_bytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, c, h, w) float32 latents on the CPU."""
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            out.append((self.vae.encode(batch).latent_dist.mean * self.scaling_factor).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in roughly [-1, 1] (not clamped), on the latents' device."""
        out = []
        for start in range(0, latents.shape[0], self.batch_size):
            batch = latents[start : start + self.batch_size].to(self.device) / self.scaling_factor
            out.append(self.vae.decode(batch).sample.float())
        return torch.cat(out).to(latents.device)

    def encode_cached(self, images: torch.Tensor, cache_dir: Path | None, tag: str) -> torch.Tensor:
        """:meth:`encode`, computed once per (VAE, data) and kept in ``cache_dir``."""
        if cache_dir is None:
            return self.encode(images)
        h = hashlib.sha256(self.identity().encode())
        h.update(tag.encode())
        h.update(str(tuple(images.shape)).encode())
        h.update(images.contiguous().numpy().tobytes())
        file = cache_dir / f"{h.hexdigest()[:32]}.pt"
        if file.is_file():
            try:
                return torch.load(file, weights_only=True)
            except (OSError, RuntimeError, EOFError):
                pass  # a torn cache file: recompute and replace it
        latents = self.encode(images)
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(file, lambda f: torch.save(latents, f))
        return latents
