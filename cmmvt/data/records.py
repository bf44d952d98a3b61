"""The manifest's vocabulary, shared by every source: its columns and splits, the report of what did not make it in,
the label cells (one label, or several ``;``-joined), source-CSV reading and the scan of a folder for videos."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

VIDEO_EXTENSIONS = {
    ".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv",
}
COLUMNS = ["video_id", "path", "label", "split"]
SEGMENT_COLUMNS = ["start", "end"]  # optional: seconds of a segment of a longer file (blank: the whole file)
LABEL_SEP = ";"  # several labels of one clip, sorted, in the ``label`` column: ``cat;dog``
SPLITS = ("train", "val", "test")  # the labelled splits
UNLABELLED = "unlabelled"  # the split (and folder) of clips without a label
ISSUES_NAME = "manifest_issues.csv"
ISSUE_COLUMNS = ["kind", "path", "reason"]

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
    "unlabelled": UNLABELLED, "unlabeled": UNLABELLED,
}
KINETICS_REQUIRED = ["label", "youtube_id", "time_start", "time_end"]
CSV_REQUIRED = ["path", "label"]


class ManifestError(ValueError):
    """A manifest that cannot be built or read; ``str()`` is one line naming the path or params key."""


@dataclass
class ManifestReport:
    """A manifest and everything that did not make it in as-is.

    Attributes:
        manifest: Columns ``video_id, path, label, split`` sorted by ``video_id``; ``split`` is None
            where the source gives none (see :func:`assign_splits`).
        missing: Entries listed in the source CSV with no file on disk (csv: the resolved path;
            kinetics: the clip name ``<youtube_id>_<start>_<end>``).
        duplicates: ``(path, reason)``: the same file or clip listed twice, the same clip found in two
            places (the first kept), or files sharing an id (both kept with distinct ids).
        skipped: ``(path, reason)``: non-video files, files outside any class folder, unusable CSV rows.
    """

    manifest: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ helpers


def posix(path: str | Path) -> str:
    return Path(path).as_posix()


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def strip_video_ext(rel: str) -> str:
    """``a/b.mp4`` → ``a/b``; a name without a video extension is kept whole."""
    p = Path(rel)
    return posix(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else rel


def frame(rows: Iterable[dict[str, object]]) -> pd.DataFrame:
    """Rows → a manifest frame with :data:`COLUMNS` (and :data:`SEGMENT_COLUMNS` where a row has them), sorted by
    ``video_id``."""
    rows = list(rows)
    segments = any("start" in r for r in rows)
    df = pd.DataFrame(rows, columns=COLUMNS + (SEGMENT_COLUMNS if segments else []))
    df = df.astype(object)
    if segments:
        df[SEGMENT_COLUMNS] = df[SEGMENT_COLUMNS].where(df[SEGMENT_COLUMNS].notna(), "")
    return df.sort_values("video_id", kind="stable").reset_index(drop=True)


def label_set(label: object) -> list[str]:
    """The labels of a ``label`` cell: ``"cat;dog"`` → ``["cat", "dog"]`` (blank: none)."""
    return [x for x in (t.strip() for t in str(label).split(LABEL_SEP)) if x] if isinstance(label, str) else []


def join_labels(labels: Iterable[str]) -> str:
    """Several labels → one ``label`` cell: sorted, each once, ``;``-joined."""
    return LABEL_SEP.join(sorted({x.strip() for x in labels if x and x.strip()}))


def norm_label(text: str) -> str:
    """A label or folder name compared loosely: case, spaces, underscores and punctuation ignored."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def norm_split(value: object, where: str) -> str | None:
    """A source split value → ``train``/``val``/``test``/``unlabelled``; blank → None; anything else → error."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return _SPLIT_ALIASES[text.lower()]
    except KeyError:
        raise ManifestError(f"{where}: split {text!r} is not one of: train, val (validate), test, unlabelled"
                            ) from None


def read_table(csv_path: Path, required: list[str]) -> pd.DataFrame:
    """Read a source CSV as strings (no NA parsing), with lower-cased, stripped column names."""
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: no such CSV file")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{csv_path}: empty CSV (expected a header with {', '.join(required)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{csv_path}: not a readable CSV: {str(exc).strip().splitlines()[0]}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(df.columns)};"
            f" expected {', '.join(required)})"
        )
    return df.apply(lambda col: col.str.strip())


# ------------------------------------------------------------------------------------------ scanning


def scan(root: str | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every video file under ``root`` at any depth, and the other files.

    Hidden files and folders are ignored. Symlinked folders are followed once (loops are cut).

    Args:
        root: The folder to scan.

    Returns:
        ``(files, skipped)``: the video files as ``root``-joined paths sorted by their path relative to
        ``root``, and ``(path, reason)`` for every non-video file.

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ManifestError(f"{root}: no such folder")
    found: list[tuple[str, Path]] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to a folder already scanned
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        rel_dir = Path(dirpath).relative_to(base)
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            rel = rel_dir / name
            path = base / rel
            if not path.is_file():  # broken symlink, socket, ...
                skipped.append((posix(path), "not a regular file (broken link?)"))
            elif is_video(name):
                found.append((posix(rel), path))
            else:
                ext = Path(name).suffix.lower() or "no extension"
                skipped.append((posix(path), f"not a video file ({ext})"))
    found.sort(key=lambda item: item[0])
    skipped.sort()
    return [p for _, p in found], skipped



def clip_name(youtube_id: str, start: str, end: str) -> str:
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def bound(value: str | float | None) -> str:
    """A segment bound in a clip id: whole seconds as ``000030``, a fraction kept to the millisecond
    (``000030.250``), a blank end (the file's end) as ``end``."""
    if value is None or not str(value).strip():
        return "end"
    x = float(value)
    return f"{int(x):06d}" if x == int(x) else f"{x:010.3f}"


def segment_id(stem: str, start: str | float, end: str | float | None) -> str:
    """The clip id of a segment: ``<stem>_<start>_<end>`` (:func:`bound`), the Kinetics naming for whole seconds, so
    segments of one file stay apart."""
    return f"{stem}_{bound(start or 0)}_{bound(end)}"


def seconds_text(x: float) -> str:
    """Seconds as written in a manifest: no float noise, every millisecond kept (``30``, ``1234.567``)."""
    return f"{x:.3f}".rstrip("0").rstrip(".")
