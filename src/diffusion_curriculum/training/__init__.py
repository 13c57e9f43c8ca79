"""Training: configuration, the loop, checkpoints and sample grids."""

from .config import Config, ConfigError, load_config
from .trainer import RunError, Trainer, train

__all__ = ["Config", "ConfigError", "RunError", "Trainer", "load_config", "train"]
