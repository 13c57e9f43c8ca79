"""Sampling a model with its run's defaults: the one place that resolves the solver, steps and
guidance of a run, generates, and decodes VAE latents back to data space. Used by the trainer's
sample grids, ``diffusion-curriculum sample`` and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_atomic
from .config import Config
from .errors import UserError
from .generation import default_solver, generate
from .objectives import Objective
from .resources import check_fits
from .trained import load_trained
from .visual import save_image_grid

__all__ = ["SamplingSettings", "sample_decoded", "sample_to_file"]


@dataclass(frozen=True)
class SamplingSettings:
    """The solver, step count and guidance scale one set of samples is drawn with."""

    solver: str
    steps: int
    guidance_scale: float

    @classmethod
    def resolve(
        cls,
        objective: Objective,
        config: Config,
        *,
        conditional: bool,
        solver: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> SamplingSettings:
        """Each setting given here, else the run's ``sample`` section; guidance is 1 for unconditional models."""
        scfg = config.sample
        if not conditional and guidance_scale not in (None, 1.0):
            raise UserError(f"guidance scale {guidance_scale}: guidance applies to conditional models only")
        guidance = guidance_scale if guidance_scale is not None else scfg.guidance_scale
        return cls(
            default_solver(objective.name, solver or scfg.solver),
            steps or scfg.steps,
            guidance if conditional else 1.0,
        )


@torch.no_grad()
def sample_decoded(
    model: Any,
    objective: Objective,
    config: Config,
    data_shape: tuple[int, ...],
    n: int,
    settings: SamplingSettings,
    *,
    cond: dict | None = None,
    uncond: dict | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    codec: Any = None,
    progress: bool = False,
) -> torch.Tensor:
    """``n`` samples in data space: generated with ``settings`` from noise of ``seed``, then decoded
    through the run's VAE (``codec``, or the one ``config.data.vae`` names) for latent-space runs."""
    samples = generate(
        model,
        objective,
        data_shape,
        n,
        solver=settings.solver,
        steps=settings.steps,
        cond=cond,
        uncond=uncond if cond is not None else None,
        guidance_scale=settings.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        device=device,
        progress=progress,
    )
    if config.data.vae is None:
        return samples
    if codec is None:
        from .data.latents import LatentCodec

        codec = LatentCodec(config.data.vae, device)
    return codec.decode(samples.to(device))


def sample_to_file(
    run: Path,
    out: Path,
    *,
    checkpoint: str | None = None,
    solver: str | None = None,
    steps: int | None = None,
    n: int = 64,
    guidance_scale: float | None = None,
    label: int | None = None,
    prompt: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Sample a run and write a PNG grid (images) or an .npz of the raw samples; an existing file is
    replaced only with ``overwrite``."""
    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise UserError(f"--out {out}: expected a .png or .npz file name")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it, or choose another name")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trained = load_trained(run, checkpoint)
    check_fits("--n", n, trained.data_shape, device, copies=3)
    if len(trained.data_shape) != 3 and out.suffix == ".png":
        raise UserError("vector samples have no image grid: write them with an .npz --out")
    trained.model.to(device)
    cond, uncond = trained.conditioner.for_request(n, label, prompt, device)
    settings = SamplingSettings.resolve(
        trained.objective,
        trained.config,
        conditional=cond is not None,
        solver=solver,
        steps=steps,
        guidance_scale=guidance_scale,
    )
    samples = sample_decoded(
        trained.model,
        trained.objective,
        trained.config,
        trained.data_shape,
        n,
        settings,
        cond=cond,
        uncond=uncond,
        seed=seed,
        device=device,
        progress=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        array = samples.cpu().numpy()
        write_atomic(out, lambda f: np.savez(f, samples=array))
    else:
        save_image_grid(samples, out)
    return out
