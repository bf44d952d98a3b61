"""The failure log (``failures.csv``): clips a writer could not extract, retried by the next run."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any


FAILURE_FIELDS = ("path", "video_id", "stage", "reason")


def _read_failures(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: (row.get(k) or "") for k in FAILURE_FIELDS} for row in csv.DictReader(f)]


def _latest_failures(rows: list[dict[str, str]], cached: set[str] | Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per video_id (its latest), dropping ids that are cached, ordered by latest occurrence."""
    last: dict[str, dict[str, str]] = {}
    for row in rows:
        last.pop(row["video_id"], None)
        last[row["video_id"]] = row
    return [row for vid, row in last.items() if vid not in cached]


def _csv_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, FAILURE_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
