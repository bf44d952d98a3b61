"""The errors of a feature cache: :class:`CacheError` and the two kinds callers tell apart."""

from __future__ import annotations


class CacheError(RuntimeError):
    """A feature cache cannot be used as asked (missing, corrupt, locked, made by a newer version)."""


class ParamsMismatch(CacheError):
    """The directory holds features made with other feature params."""


class WriteFault(CacheError):
    """The cache folder cannot be written (full disk, read-only or vanished folder); published shards stay valid."""
