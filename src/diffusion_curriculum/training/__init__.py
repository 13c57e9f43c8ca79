"""Training: configuration, the loop, checkpoints and sample grids.

The trainer is imported on first use, so reading and validating a config stays fast and light.
"""

from typing import Any

from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "RunError", "Trainer", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("RunError", "Trainer", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
