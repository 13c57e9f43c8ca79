"""The one exception the data layer raises for bad user data, so callers can catch it apart."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset that cannot be loaded as asked: unknown name, unreadable files, wrong shapes."""
