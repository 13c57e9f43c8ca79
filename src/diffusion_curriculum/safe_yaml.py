"""YAML from users, read with limits, and values shown in error messages in a short form.

``yaml.safe_load`` builds no objects but plain data, yet a small document can still be hostile: an
alias chain (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...) loads in a moment as shared lists but
expands to billions of values once anything walks it (an error message that prints the value, a
deep copy, a dump), and a deeply nested one exhausts the parser's recursion. :func:`load_yaml`
refuses both before anything walks the result, and :func:`short` shows any value in a bounded
number of characters.

This module imports only PyYAML and ``errors``.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_VALUES", "MAX_YAML_CHARS", "YamlTooLarge", "check_size", "load_yaml", "short"]

MAX_YAML_CHARS = 1 << 20  # a config or grid file is a few kB
MAX_VALUES = 100_000  # scalars, lists and mappings, counted as if every alias were expanded
MAX_DEPTH = 64  # a config is 3 levels deep

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 3, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short(value: Any, limit: int = 100) -> str:
    """``repr(value)`` cut to a few levels and at most ``limit`` characters: safe for any value
    (self-referencing, deeply nested or alias-expanded ones included)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class YamlTooLarge(ValueError):
    """A loaded document that would expand beyond :data:`MAX_VALUES`, nest beyond :data:`MAX_DEPTH`
    or refer to itself."""


def check_size(value: Any) -> None:
    """Raise :class:`YamlTooLarge` for a value that, with shared sub-values counted each time they
    appear, holds more than :data:`MAX_VALUES` values, is nested deeper than :data:`MAX_DEPTH`, or
    contains itself. Shared sub-values are sized once (memoised by identity), so this is fast even
    for an alias bomb."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise YamlTooLarge("a value refers to itself")
        if depth > MAX_DEPTH:
            raise YamlTooLarge(f"nested deeper than {MAX_DEPTH} levels")
        open_ids.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_VALUES:
                raise YamlTooLarge(f"expands to more than {MAX_VALUES} values (aliases repeated?)")
        open_ids.discard(key)
        sizes[key] = total
        return total

    size(value, 0)


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document safely (plain data only) within the limits above; a ConfigError
    naming ``where`` (e.g. "config file 'x.yaml'") for invalid YAML or a document beyond them."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{where}: larger than {MAX_YAML_CHARS} characters; not a config")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at} ({exc.__class__.__name__})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    try:
        check_size(value)
    except YamlTooLarge as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value
