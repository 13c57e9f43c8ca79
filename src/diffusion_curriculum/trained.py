"""Loading a trained run: its EMA model, objective and config, from the final model or a checkpoint.

The run's ``config.yaml`` is the one source of what the run is (objective, conditioning, text
encoder, VAE, sampling defaults); ``model/run.json`` and a checkpoint's ``meta`` hold only what the
config does not determine: the model spec built from the data (shape, classes, text width), the
class names and the step. Sampling, evaluation and the study all load runs through :func:`load_trained`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assembly import build_objective, cache_dir
from .conditioning import Conditioner
from .config import Config, dotted_overrides, load_config
from .errors import CheckpointError, RunError, UserError
from .models import Denoiser, ModelSpec, build_model
from .objectives import Objective
from .runs import checkpoints as ckpt
from .runs.layout import CHECKPOINTS, CONFIG, MODEL, load_run_config
from .runs.records import read_json

__all__ = ["RUN_META", "TrainedRun", "load_trained", "run_meta"]

RUN_META = "run.json"


def run_meta(spec: ModelSpec, class_names: list[str] | None, step: int) -> dict[str, Any]:
    """What loading a trained model needs besides its weights and the run's config."""
    return {"spec": dataclasses.asdict(spec), "class_names": class_names, "step": step}


@dataclass
class TrainedRun:
    """A trained model (EMA weights, in eval mode) with everything needed to sample and score it."""

    model: Denoiser
    objective: Objective
    config: Config
    class_names: list[str] | None
    step: int

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.data_shape)

    @property
    def conditioner(self) -> Conditioner:
        return Conditioner(
            self.config.model.conditioning,
            n_classes=self.spec.n_classes,
            text_encoder=self.config.model.text_encoder,
            cache_dir=cache_dir() / "text",
        )


def _run_folder(run: Path) -> Path:
    """The run folder of ``run``, which may also name its ``model/`` folder."""
    if (run / MODEL / RUN_META).is_file():
        return run
    if (run / RUN_META).is_file() and (run.parent / CONFIG).is_file():
        return run.parent
    raise RunError(f"{run}: no trained model here (expected {run / MODEL / RUN_META})")


def _spec(saved: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**{**saved, "data_shape": tuple(saved["data_shape"])})


def load_trained(run: Path, checkpoint: str | None = None) -> TrainedRun:
    """The EMA model of a run folder (or of its ``model/`` folder): the final model, or with
    ``checkpoint`` ("latest" or a checkpoint folder) a checkpoint's EMA weights."""
    run = Path(run)
    if checkpoint is None:
        folder = _run_folder(run)
        meta = read_json(folder / MODEL / RUN_META, "model description")
        model = Denoiser.from_pretrained(folder / MODEL)
        config = load_run_config(folder)
    else:
        if checkpoint == "latest":
            path = ckpt.find_latest(run / CHECKPOINTS)
            if path is None:
                raise RunError(f"{run}: no intact checkpoint under {run / CHECKPOINTS}")
        else:
            path = Path(checkpoint)
            ckpt.verify(path)
        state = ckpt.load_state(path)
        try:
            meta = state["meta"]
            model = build_model(_spec(meta["spec"]))
            model.load_state_dict(state["model"])
            with torch.no_grad():
                for param, value in zip(model.parameters(), state["ema"]["shadow_params"], strict=True):
                    param.copy_(value)
            config = load_config(overrides=dotted_overrides(state["config"]))
        except UserError as exc:
            raise CheckpointError(f"{path / ckpt.STATE}: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"{path / ckpt.STATE}: does not hold a model of this package ({exc.__class__.__name__})"
            ) from None
    model.eval()
    return TrainedRun(model, build_objective(config), config, meta.get("class_names"), int(meta["step"]))
