"""Where a manifest's rows come from: a folder tree, a Kinetics-style CSV, a plain CSV (``data.source``).

* ``folder`` (and ``synth``, whose set is written folder-per-class): ``root/<label>/**/<file>``. The label
  is the first-level folder; any depth below it is scanned. Files directly in ``root`` have no label and
  are skipped (listed). Files under ``root/unlabelled/`` are the unlabelled pool (below).
* ``kinetics``: a Kinetics-style CSV ``label,youtube_id,time_start,time_end[,split][,is_cc]``. Clip files
  are named ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (any video extension) and may lie anywhere under
  ``root``: flat, in class folders (``root/<label>/``, spaces or underscores) or in split folders
  (``root/train/<label>/``). Split values ``train``/``val``/``validate``/``validation``/``test`` are
  normalised to ``train``/``val``/``test``.
  A row whose clip file is absent but whose whole video ``<youtube_id>.<ext>`` is there becomes a segment of it
  (``start``/``end`` columns; extraction seeks to it).
* ``csv``: a plain CSV ``path,label[,split][,start,end]``; several labels per clip as ``labels`` (or ``label``)
  ``cat;dog``. Relative paths are resolved against ``root`` when given (:func:`cmmvt.data.manifest.build` passes ``data.root``), else
  against the CSV's own folder. Rows with ``start``/``end`` are segments: several of one file are several clips.
* ``audioset``, ``vggsound``: the released segment lists of those datasets (:mod:`cmmvt.data.youtube`).

Every source returns a :class:`~cmmvt.data.records.ManifestReport`; :func:`cmmvt.data.manifest.build` picks one
and :func:`cmmvt.data.manifest.assign_splits` splits what it gives without splits.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from cmmvt.data.records import (
    SPLITS, UNLABELLED, KINETICS_REQUIRED, CSV_REQUIRED, ManifestError, ManifestReport, posix, strip_video_ext,
    frame, label_set, join_labels, norm_label, norm_split, read_table, scan, clip_name, segment_id,
)

log = logging.getLogger(__name__)


def _make_ids(keys: list[str]) -> tuple[list[str], dict[int, list[int]]]:
    """Unique ids for unique relative paths: the path without extension, or the whole path on a clash.

    Returns:
        The ids (same order as ``keys``) and, for each key that had to keep its extension, the indices
        of the keys it clashed with.
    """
    ids = [strip_video_ext(k) for k in keys]
    whole = [False] * len(keys)
    clashed: dict[int, list[int]] = {}
    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, vid in enumerate(ids):
            groups[vid].append(i)
        changed = False
        for members in groups.values():
            if len(members) < 2:
                continue
            for i in members:
                if not whole[i]:  # whole paths are unique, so every clash ends after a few rounds
                    whole[i], ids[i], changed = True, keys[i], True
                    clashed.setdefault(i, []).extend(j for j in members if j != i)
        if not changed:
            return ids, clashed


def _clash_reasons(keys: list[str], paths: list[str], ids: list[str],
                   clashed: dict[int, list[int]]) -> list[tuple[str, str]]:
    out = []
    for i in sorted(clashed, key=lambda i: keys[i]):
        others = ", ".join(sorted({paths[j] for j in clashed[i]}))
        out.append((paths[i], f"same id {strip_video_ext(keys[i])!r} as {others}; kept with id {ids[i]!r}"))
    return out


def unique_ids(root: str | Path, files: Iterable[str | Path]) -> dict[str, Path]:
    """Map unique video ids to files under ``root`` (see the module docstring for the id rule).

    Args:
        root: The folder the ids are relative to.
        files: Files under ``root`` (as returned by :func:`scan`).

    Returns:
        ``{video_id: path}`` sorted by id.
    """
    base = Path(root).expanduser()
    paths = [Path(f) for f in files]
    keys = [posix(p.relative_to(base)) for p in paths]
    ids, _ = _make_ids(keys)
    return dict(sorted(zip(ids, paths)))


# ------------------------------------------------------------------------------------------ sources


def from_folder(root: str | Path) -> ManifestReport:
    """A folder-per-class tree ``root/<label>/**/<file>``.

    Args:
        root: The dataset folder; the label is each file's first-level folder (any depth below it), except
            ``root/unlabelled/``, whose files have no label (split ``unlabelled``).

    Returns:
        The report; ``split`` is None for every labelled row. Files directly in ``root`` and non-video files are
        listed in ``skipped``; files sharing an id in ``duplicates`` (both kept).

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    base = Path(root).expanduser()
    files, skipped = scan(base)
    in_class = []
    for f in files:
        rel = f.relative_to(base)
        if len(rel.parts) < 2:
            skipped.append((posix(f), "not inside a class folder (expected root/<label>/<file>)"))
        else:
            in_class.append(f)
    keys = [posix(f.relative_to(base)) for f in in_class]
    paths = [posix(f) for f in in_class]
    ids, clashed = _make_ids(keys)
    rows = []
    for vid, path, key in zip(ids, paths, keys):
        folder = key.split("/", 1)[0]
        pool = folder == UNLABELLED
        rows.append({"video_id": vid, "path": path, "label": "" if pool else folder, "split": UNLABELLED if pool else None})
    return ManifestReport(frame(rows), [], _clash_reasons(keys, paths, ids, clashed), sorted(skipped))



def from_kinetics(csv_path: str | Path, root: str | Path) -> ManifestReport:
    """A Kinetics-style CSV ``label,youtube_id,time_start,time_end[,split][,is_cc]`` and its clip folder.

    Each row's clip ``<youtube_id>_<start:06d>_<end:06d>.<any video ext>`` is looked up anywhere under
    ``root``. When it exists in several places, a copy inside a folder named like the row's label
    (spaces, underscores, case and punctuation ignored) is preferred, then the first by path; the others
    are listed in ``duplicates``. Video files under ``root`` that the CSV does not list are ignored
    (their number is logged).

    Args:
        csv_path: The CSV.
        root: The folder holding the clips.

    Returns:
        The report: ``video_id`` is the clip name, ``label`` the CSV's label, ``split`` the normalised
        CSV split (None when absent or blank). A clip listed twice is kept once and listed in
        ``duplicates``; clips with no file are listed in ``missing``; rows with an empty label or bad
        times in ``skipped``.

    Raises:
        ManifestError: Missing CSV or root, missing columns or an unknown split value.
    """
    csv_path = Path(csv_path).expanduser()
    base = Path(root).expanduser()
    table = read_table(csv_path, KINETICS_REQUIRED)
    files, skipped = scan(base)
    index: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        index[f.with_suffix("").name].append(f)

    rows: list[dict[str, object]] = []
    missing: list[str] = []
    duplicates: list[tuple[str, str]] = []
    first: dict[str, tuple[int, str, str]] = {}  # clip → (line, label, shown path)
    used: set[str] = set()
    has_split = "split" in table.columns
    for n, rec in enumerate(table.itertuples(index=False)):
        line = n + 2
        where = f"{csv_path}:{line}"
        label = rec.label
        try:
            clip = clip_name(rec.youtube_id, rec.time_start, rec.time_end)
        except (ValueError, OverflowError):
            skipped.append((where, f"bad time_start/time_end {rec.time_start!r}, {rec.time_end!r}"))
            continue
        if not rec.youtube_id:
            skipped.append((where, "empty youtube_id"))
            continue
        split = norm_split(rec.split, where) if has_split else None
        if not label and split in SPLITS:
            skipped.append((where, f"clip {clip}: empty label in split {split}"))
            continue
        if not label or split == UNLABELLED:
            label, split = "", UNLABELLED
        if clip in first:
            line0, label0, shown0 = first[clip]
            extra = f" with label {label!r} (kept {label0!r})" if label != label0 else ""
            duplicates.append((shown0, f"clip {clip} listed again at {where}{extra}; first at line {line0}"))
            continue
        found, segment = index.get(clip, []), {}
        if not found and index.get(rec.youtube_id):  # the whole video: extraction reads the segment only
            found, segment = index[rec.youtube_id], {"start": rec.time_start, "end": rec.time_end}
        if not found:
            first[clip] = (line, label, clip)
            missing.append(clip)
            continue
        want = norm_label(label)
        ranked = sorted(found, key=lambda f: (
            not any(norm_label(part) == want for part in f.relative_to(base).parts[:-1]),
            posix(f.relative_to(base)),
        ))
        kept = posix(ranked[0])
        for other in ranked[1:]:
            duplicates.append((posix(other), f"another copy of clip {clip}; kept {kept}"))
        first[clip] = (line, label, kept)
        used.add(clip)
        rows.append({"video_id": clip, "path": kept, "label": label, "split": split, **segment})
    unlisted = sum(len(v) for k, v in index.items() if k not in used)
    if unlisted:
        log.info("%s: %d video file(s) under %s are not listed in the CSV (ignored)", csv_path, unlisted, root)
    return ManifestReport(frame(rows), missing, duplicates, skipped)


def from_csv(csv_path: str | Path, root: str | Path | None = None) -> ManifestReport:
    """A plain CSV ``path,label[,split]`` (extra columns ignored).

    Args:
        csv_path: The CSV.
        root: Folder that relative paths are resolved against; None: the CSV's own folder. Absolute
            paths (and ``~``) are used as they are.

    Returns:
        The report: ``video_id`` is the path relative to that folder without its extension (the
        absolute path without the leading ``/`` for files outside it), ``path`` the resolved path,
        ``split`` the normalised CSV split (None when absent or blank). A file listed twice is kept once
        (the first row) and listed in ``duplicates``; absent files in ``missing``; rows with an empty
        path or label in ``skipped``. Extensions are not checked: the CSV is trusted to list videos.

    Raises:
        ManifestError: Missing CSV or root, missing columns or an unknown split value.
    """
    csv_path = Path(csv_path).expanduser()
    if root is not None and not Path(root).expanduser().is_dir():
        raise ManifestError(f"{root}: no such folder (relative paths of {csv_path} are resolved against it)")
    base = Path(root).expanduser() if root is not None else csv_path.parent
    table = read_table(csv_path, ["path"])
    if "label" not in table.columns and "labels" in table.columns:  # several labels per clip, ``;``-separated
        table = table.rename(columns={"labels": "label"})
    if "label" not in table.columns:
        raise ManifestError(f"{csv_path}: missing column(s) label (or labels) (found: {', '.join(table.columns)}; "
                            f"expected {', '.join(CSV_REQUIRED)})")
    table["label"] = [join_labels(label_set(x)) for x in table["label"]]
    segments = {"start", "end"} <= set(table.columns)
    has_split = "split" in table.columns
    base_abs = os.path.abspath(base)

    entries: list[tuple[str, str, str, str | None, dict[str, str]]] = []  # (key, path, label, split, segment)
    missing: list[str] = []
    duplicates: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    first: dict[str, tuple[int, str]] = {}  # absolute path → (line, label)
    for n, rec in enumerate(table.itertuples(index=False)):
        line = n + 2
        where = f"{csv_path}:{line}"
        if not rec.path:
            skipped.append((where, "empty path"))
            continue
        given = Path(rec.path).expanduser()
        path = given if given.is_absolute() else base / given
        shown = posix(path)
        split = norm_split(rec.split, where) if has_split else None
        if not rec.label and split in SPLITS:
            skipped.append((shown, f"empty label in split {split} at {where}"))
            continue
        label = "" if not rec.label or split == UNLABELLED else rec.label
        split = UNLABELLED if not label else split
        absolute = os.path.normcase(os.path.abspath(path))
        segment = {"start": rec.start, "end": rec.end} if segments and (rec.start or rec.end) else {}
        if segment:  # several segments of one file are several clips
            absolute += f"#{rec.start}-{rec.end}"
        if absolute in first:
            line0, label0 = first[absolute]
            extra = f" with label {label!r} (kept {label0!r})" if label != label0 else ""
            duplicates.append((shown, f"listed again at {where}{extra}; first at line {line0}"))
            continue
        first[absolute] = (line, label)
        if not path.is_file():
            missing.append(shown)
            continue
        rel = os.path.relpath(os.path.abspath(path), base_abs)
        key = posix(rel) if not rel.startswith("..") else posix(os.path.abspath(path)).lstrip("/")
        if segment:
            key = segment_id(strip_video_ext(key), segment["start"], segment["end"])
        entries.append((key, shown, label, split, segment))
    keys = [e[0] for e in entries]
    paths = [e[1] for e in entries]
    ids, clashed = _make_ids(keys)
    duplicates += _clash_reasons(keys, paths, ids, clashed)
    rows = [{"video_id": vid, "path": e[1], "label": e[2], "split": e[3], **e[4]} for vid, e in zip(ids, entries)]
    return ManifestReport(frame(rows), missing, duplicates, skipped)
