"""The final model of a run: EMA weights with ``run.json`` for ``diffusion-curriculum sample`` and,
where one fits, a diffusers pipeline (``DDPMPipeline`` or ``DiTPipeline``) that loads with
``from_pretrained``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .models import Denoiser
from .objectives import Objective
from .trained import RUN_META, run_meta

__all__ = ["pipeline_kind", "save_final_model"]


def pipeline_kind(arch: str, conditioning: str, objective: str, vae: bool) -> str | None:
    """Which diffusers pipeline can load a run: DDPMPipeline (pixel-space unconditional U-Net) or
    DiTPipeline (class-conditional DiT on VAE latents; it hard-codes ImageNet's null label 1000, so
    use it with guidance_scale=1). Other runs load with `diffusion-curriculum sample`."""
    if objective not in ("eps", "v", "x0"):
        return None
    if arch == "unet" and conditioning == "none" and not vae:
        return "ddpm"
    if arch == "dit" and conditioning == "class" and vae:
        return "dit"
    return None


def save_final_model(
    out: Path, model: Denoiser, objective: Objective, class_names: list[str] | None, step: int, vae: Any = None
) -> None:
    """Write ``out/model`` (weights, spec, run.json) and ``out/pipeline`` where a diffusers pipeline fits.
    ``model`` holds the weights to export (the caller swaps the EMA weights in); ``vae`` is the
    AutoencoderKL of latent runs."""
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target)
    (target / RUN_META).write_text(json.dumps(run_meta(model.spec, class_names, step), indent=1))
    kind = pipeline_kind(model.spec.arch, model.spec.conditioning, objective.name, vae is not None)
    if kind == "ddpm":
        from diffusers import DDPMPipeline

        DDPMPipeline(unet=model.inner, scheduler=objective.scheduler).save_pretrained(out / "pipeline")
    elif kind == "dit":
        from diffusers import DDIMScheduler, DiTPipeline

        names = class_names or [str(i) for i in range(model.spec.n_classes)]
        pipeline = DiTPipeline(
            transformer=model.inner,
            vae=vae,
            scheduler=DDIMScheduler.from_config(objective.scheduler.config),
            id2label=dict(enumerate(names)),
        )
        pipeline.save_pretrained(out / "pipeline")
