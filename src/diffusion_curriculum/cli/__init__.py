"""Command-line interface. Argument parsing and error messages only; the work lives elsewhere.

Every user error ends with one line on stderr and exit code 2, and nothing already written is
overwritten.

One module per command (or family of commands), each with a ``register(subparsers)`` that adds its parser and
the function that runs it; ``common`` holds what several share. This module builds the top-level parser from them
and turns what a command raises into one line and an exit code (:func:`main`). None of these modules imports torch
at import time: :func:`build_parser` does, inside main()'s Ctrl-C handling.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UserError
from ..interrupts import deferred_signals, handle_stop_signals
from . import checkpoints, clusters, compare, evaluate, fit_evaluator, sample, study, train
from .common import EXTRA_PURPOSE, OPTIONAL_MODULES, Parser, install_hint, missing_extra

__all__ = ["OPTIONAL_MODULES", "build_parser", "main"]

# The command modules, in the order --help lists their commands.
COMMANDS = (train, sample, checkpoints, evaluate, compare, fit_evaluator, study, clusters)


def build_parser() -> Parser:
    """The parser of every command (the command modules' ``register`` import torch: inside main()'s Ctrl-C
    handling)."""
    parser = Parser(
        prog="diffusion-curriculum",
        description="Denoising-task-difficulty curricula for diffusion models (Kim et al., ICLR 2025).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


_RESUME_HINTS = {
    "train": "; resume with --resume latest",
    "compare": "; run the same command again to resume",
    "study": "; run the same command again to resume",
}


def _one_line(exc: BaseException) -> str:
    """An error as one line: an OS error as its path and reason, anything else its first line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror}" if where else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed (torch's CPU or GPU allocator, or Python's)."""
    if isinstance(exc, MemoryError):
        return True
    name = exc.__class__.__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusion-curriculum`` command. SIGINT and SIGTERM stop it with one line and
    exit code 130 or 143 (a checkpoint being written is finished first)."""
    command = args = None
    try:
        with handle_stop_signals():
            # build_parser imports torch: a KeyboardInterrupt raised inside torch's import can abort the
            # process (SIGABRT), so a signal then is held until the import is done, and acted on after
            with deferred_signals():
                parser = build_parser()
            args = parser.parse_args(argv)
            command = args.command
            args.func(args)
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        what = " ".join(filter(None, ["diffusion-curriculum", command, getattr(args, "study", None)]))
        print(
            f"{what} needs the [{extra}] extra{EXTRA_PURPOSE[extra]} (no module named {exc.name!r}): "
            f"{install_hint(extra)}",
            file=sys.stderr,
        )
        return 2
    except (UserError, OSError) as exc:
        # User errors, and what the system refused on a path (missing, not writable, disk full), are one
        # line; anything else (an internal ValueError included) is a bug and keeps its traceback (exit 1).
        print(f"diffusion-curriculum: error: {_one_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 2 for user errors; 3 for a run stopped by a diverged loss
    except KeyboardInterrupt as exc:
        hint = _RESUME_HINTS.get(command or "", "")
        print(f"diffusion-curriculum: interrupted{hint}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)  # 130 for SIGINT, 143 for SIGTERM
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"diffusion-curriculum: error: out of memory ({_one_line(exc)[:200]})", file=sys.stderr)
        return 2
    return 0
