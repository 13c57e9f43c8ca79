"""Load a trained run (final model or checkpoint) and draw samples from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .generation import default_solver, generate
from .models import Denoiser, ModelSpec, build_model
from .objectives import Objective, make_objective
from .runs import checkpoints as ckpt
from .visual import save_image_grid

__all__ = ["load_run", "sample_to_file"]


def _model_dir(run: Path) -> Path:
    if (run / "run.json").is_file():
        return run
    if (run / "model" / "run.json").is_file():
        return run / "model"
    raise FileNotFoundError(f"{run}: no trained model here (expected {run / 'model' / 'run.json'})")


def load_run(run: Path, checkpoint: str | None = None) -> tuple[Denoiser, Objective, dict[str, Any]]:
    """The EMA model, objective and metadata of a run folder, from its final model or a checkpoint."""
    run = Path(run)
    if checkpoint is None:
        model_dir = _model_dir(run)
        meta = json.loads((model_dir / "run.json").read_text())
        model = Denoiser.from_pretrained(model_dir)
    else:
        if checkpoint == "latest":
            path = ckpt.find_latest(run / "checkpoints")
            if path is None:
                raise FileNotFoundError(f"{run}: no intact checkpoint under {run / 'checkpoints'}")
        else:
            path = Path(checkpoint)
            ckpt.verify(path)
        state = ckpt.load_state(path)
        meta = state["meta"]
        spec = meta["spec"]
        model = build_model(ModelSpec(**{**spec, "data_shape": tuple(spec["data_shape"])}))
        model.load_state_dict(state["model"])
        shadow = state["ema"]["shadow_params"]
        with torch.no_grad():
            for param, value in zip(model.parameters(), shadow, strict=True):
                param.copy_(value)
    model.eval()
    return model, make_objective(**meta["objective"]), meta


def _conditions(
    meta: dict[str, Any], n: int, label: int | None, prompt: str | None, device: torch.device
) -> tuple[dict | None, dict | None]:
    kind = meta["conditioning"]
    if kind == "none":
        if label is not None or prompt is not None:
            raise UserError("this model is unconditional: --label and --prompt do not apply")
        return None, None
    if kind == "class":
        if prompt is not None:
            raise UserError("this model is class-conditional: use --label, not --prompt")
        n_classes = meta["null_index"]
        if label is not None and not 0 <= label < n_classes:
            raise UserError(f"--label {label}: this model knows labels 0..{n_classes - 1}")
        labels = (torch.full((n,), label, dtype=torch.long) if label is not None else torch.arange(n) % n_classes).to(
            device
        )
        return {"class_labels": labels}, {"class_labels": torch.full_like(labels, n_classes)}
    if label is not None:
        raise UserError("this model is text-conditional: use --prompt, not --label")
    if prompt is None:
        raise UserError("this model is text-conditional: give --prompt")
    from .data.text import TextEncoder

    encoder = TextEncoder(meta["text_encoder"])
    hidden, mask = encoder.encode([prompt, ""])
    cond = {
        "encoder_hidden_states": hidden[:1].expand(n, -1, -1),
        "encoder_attention_mask": mask[:1].expand(n, -1),
    }
    uncond = {
        "encoder_hidden_states": hidden[1:].expand(n, -1, -1),
        "encoder_attention_mask": mask[1:].expand(n, -1),
    }
    return ({k: v.to(device) for k, v in cond.items()}, {k: v.to(device) for k, v in uncond.items()})


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
) -> Path:
    """Sample a run and write a PNG grid (images) or an .npz of the raw samples."""
    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise UserError(f"--out {out}: expected a .png or .npz file name")
    if out.suffix == ".png" and out.exists():
        raise UserError(f"--out {out} exists; choose another name")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, objective, meta = load_run(run, checkpoint)
    model.to(device)
    defaults = meta.get("sample", {})
    solver = default_solver(objective.name, solver or defaults.get("solver", "ddim"))
    cond, uncond = _conditions(meta, n, label, prompt, device)
    samples = generate(
        model,
        objective,
        tuple(meta["spec"]["data_shape"]),
        n,
        solver=solver,
        steps=steps or defaults.get("steps", 50),
        cond=cond,
        uncond=uncond,
        guidance_scale=guidance_scale if guidance_scale is not None else defaults.get("guidance_scale", 1.0),
        generator=torch.Generator().manual_seed(seed),
        device=device,
        progress=True,
    )
    if meta.get("vae"):
        from .data.latents import LatentCodec

        samples = LatentCodec(meta["vae"], device).decode(samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, samples=samples.cpu().numpy())
    elif samples.dim() == 4:
        save_image_grid(samples, out)
    else:
        raise UserError("vector samples have no image grid: write them with an .npz --out")
    return out
