"""Feature params (a cache's attrs): normalised as they read back from disk and compared, provenance left out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


#: Attr keys that are provenance, not feature params: they may differ between runs that share a cache.
PROVENANCE_KEYS = frozenset({"versions", "library_versions", "engine"})  # recorded, never compared
_MISSING = "<missing>"


def _normalise_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """JSON round trip (tuples → lists, keys → str) so attrs compare equal to those read back from disk."""
    try:
        return json.loads(json.dumps(dict(attrs), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cache attrs must be JSON-serialisable without NaN/inf: {exc}") from None


def _feature_params(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in PROVENANCE_KEYS}


def feature_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for each feature param (provenance left out) in which two caches' attrs differ."""
    return _diff(_feature_params(_normalise_attrs(old)), _feature_params(_normalise_attrs(new)))


def _same(a: Any, b: Any) -> bool:
    """Equal as params: 4 == 4.0, but True != 1."""
    return a == b and (type(a) is bool) == (type(b) is bool)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for every differing key, sorted (``<missing>`` for an absent key)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if not _same(a, b):
            lines.append(f"{key}: {a if a is _MISSING else repr(a)} → {b if b is _MISSING else repr(b)}")
    return lines
