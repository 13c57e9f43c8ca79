"""Reading the JSON files the package writes (``metrics.jsonl``, ``probe.jsonl``, ``eval.jsonl``,
``done.json``, ``grid.json``, ``run.json``, manifests), so that nothing is ever dropped silently.

A JSON-lines file is appended one line at a time, so a kill (or a lost disk cache) can leave its
*last* line cut short, and only its last: :func:`read_jsonl` then keeps the records before it and
says so (``repaired``, and one notice on stderr). Any other line that is not a JSON record means
the file was changed after it was written: that is refused with a :class:`~..errors.RunError` that
names the file and the line, since guessing would change numbers without anyone noticing. A single
JSON document (:func:`read_json`) is written atomically, so it is never torn: one that does not
parse is refused the same way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["JsonLines", "read_json", "read_jsonl"]


@dataclass
class JsonLines:
    """The records of a JSON-lines file, and what was repaired to read them (None: nothing)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    repaired: str | None = None
    raw: list[bytes] = field(default_factory=list)  # each record's line as it is in the file


def _record(raw: bytes) -> dict[str, Any] | None:
    """One line as a JSON object, or None if it is not one."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def notice(message: str) -> None:
    """One line on stderr about a file that was read in a repaired form."""
    print(f"diffusion-curriculum: notice: {message}", file=sys.stderr)


def read_jsonl(path: Path, *, announce: bool = True) -> JsonLines:
    """The records of ``path`` (none if it does not exist). A torn last line (no newline, not a
    whole record) is left out and reported in ``repaired`` (and on stderr when ``announce``); any
    other bad line raises a RunError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return JsonLines()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    *complete, tail = data.split(b"\n")
    out = JsonLines()
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue  # a blank line holds nothing to lose
        record = _record(raw)
        if record is None:
            raise RunError(
                f"{path}: line {number} is not a JSON record, and it is not the last line, so no kill cut it "
                "short: the file was changed after it was written; restore it, or delete that line"
            )
        out.records.append(record)
        out.raw.append(raw)
    if tail.strip():
        record = _record(tail)
        if record is not None:  # a whole record that only lacks its newline
            out.records.append(record)
            out.raw.append(tail)
        else:
            out.repaired = (
                f"{path}: ignored its last line (line {len(complete) + 1}, {len(tail)} bytes), cut short by an "
                "interrupted write"
            )
            if announce:
                notice(out.repaired)
    return out


def read_json(path: Path, what: str = "file") -> Any:
    """One JSON document written by the package; a RunError naming the file (and where it breaks)
    if it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: missing ({what})") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise RunError(f"{path}: not a JSON {what} (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not a JSON {what} (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError):
        raise RunError(f"{path}: not a JSON {what}") from None
