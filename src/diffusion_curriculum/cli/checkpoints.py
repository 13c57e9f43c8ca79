"""``convert-checkpoint``: rewrite checkpoints of the earlier pickle format (state.pt) in place in the current,
data-only format, under the run's lock."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert-checkpoint`` to the top-level subparsers."""
    convert = sub.add_parser(
        "convert-checkpoint",
        help="rewrite checkpoints of the earlier pickle format (state.pt) in the current, data-only format",
        description="Checkpoints written before version 0.2 are pickles (state.pt, rank<r>.pt), which can run "
        "code when loaded, so they are no longer loaded. This rewrites them in place in the current format "
        "(safetensors and JSON), after checking them against their manifest. They are read with torch's "
        "restricted loader, which accepts tensors and plain data only; a file holding anything else is refused "
        "unless --trust is given, which unpickles it fully: only for files whose origin you trust.",
    )
    convert.add_argument("path", type=Path, help="a run folder (every checkpoint under it) or one checkpoint folder")
    convert.add_argument(
        "--trust", action="store_true", help="unpickle fully (runs any code the files carry): only for files you trust"
    )
    convert.set_defaults(func=_cmd_convert_checkpoint)


def _cmd_convert_checkpoint(args: argparse.Namespace) -> None:
    from ..runs import checkpoints as ckpt
    from ..runs.lock import folder_lock

    path = args.path
    if (path / "checkpoints").is_dir():
        run, targets = path, [p for p in ckpt.list_checkpoints(path / "checkpoints") if not (p / ckpt.STATE).is_file()]
    elif path.is_dir():
        run, targets = (path.parent.parent if path.parent.name == "checkpoints" else None), [path]
    else:
        raise UserError(f"{path}: not a run folder or a checkpoint folder")
    if not targets:
        print(f"{path}: no checkpoint of the earlier format to convert")
        return
    with folder_lock(run) if run is not None else contextlib.nullcontext():
        for target in targets:
            print(f"converted {ckpt.convert_legacy(target, trust=args.trust)}")
