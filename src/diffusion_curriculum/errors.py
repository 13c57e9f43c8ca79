"""The errors a user can cause, apart from the bugs we can.

Every problem with the user's input (a config value, a data file, a run folder, a checkpoint, an
argument to a core function) raises :class:`UserError` or one of its kinds, with a message that
names the key, argument or file. The CLI prints such an error as one line and exits with code 2
(or the error's own ``exit_code``); anything else is a bug in this package and keeps its traceback
(exit 1). ``UserError`` subclasses ``ValueError`` so that code calling the library and catching
``ValueError`` for bad arguments keeps working.

This module imports nothing, so the core may use it.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "RunError", "TrainingDiverged", "UserError"]


class UserError(ValueError):
    """Bad input from the user: reported in one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A bad configuration value; the message names the key."""


class DataError(UserError):
    """A data set that cannot be loaded as asked: unknown name, unreadable files, wrong shapes."""


class RunError(UserError):
    """A problem with a run folder or a resume request."""


class CheckpointError(RunError):
    """A checkpoint that is missing, incomplete or corrupt."""


class TrainingDiverged(RunError):
    """The loss was NaN or inf at ``train.max_bad_steps`` consecutive steps; the CLI exits with code 3."""

    exit_code = 3
