"""Training: the loop and its checkpoint state.

The trainer (and with it Accelerate and diffusers) is imported on first use.
"""

from typing import Any

__all__ = ["Trainer", "train", "train_or_resume"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
