"""The manifest: one row per clip (``video_id, path, label, split``) from a folder tree, a CSV or the synthetic set.

Sources (``data.source``):

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
  ``cat;dog``. Relative paths are resolved against ``root`` when given (:func:`build` passes ``data.root``), else
  against the CSV's own folder. Rows with ``start``/``end`` are segments: several of one file are several clips.
* ``audioset``, ``vggsound``: the released segment lists of those datasets (:mod:`cmmvt.data.youtube`).

Columns:

* ``video_id`` — unique, stable key (used by the feature caches). Folder/CSV sources: the path relative
  to the root without its extension, ``/`` kept (``class_a/sub/clip01``), so equal file names in
  different folders stay distinct; if two files still share an id (``x.mp4`` and ``x.avi``) both keep
  their extension (``x.mp4``, ``x.avi``) and are listed as duplicates for information. Kinetics: the
  clip name ``<youtube_id>_<start:06d>_<end:06d>``.
* ``path`` — the file as a path usable from the working directory the pipeline runs in: ``root`` as
  given (``~`` expanded) joined with the path below it, e.g. ``data/synth/hum/hum_000.mp4``. It is
  absolute only when ``root`` (or the CSV entry) is.
* ``label`` — a string (never parsed as a number); several labels of one clip sorted and ``;``-joined (``cat;dog``),
  for ``train.task: multilabel``.
* ``start``, ``end`` (only where a source has segments) — seconds of the part of ``path`` that is the clip; blank:
  the whole file.
* ``split`` — ``train``, ``val`` or ``test``: from the source where it gives one, else from
  :func:`assign_splits` (deterministic, stratified per class, or per label by iterative stratification where
  clips have several); or ``unlabelled``.

**Unlabelled pool.** Clips without a label — files under ``root/unlabelled/``, CSV or Kinetics rows with an
empty label and no split, or the split ``unlabelled`` (``unlabeled``) — get split ``unlabelled`` and an empty
label (a row with an empty label in train, val or test is a data error: skipped and listed). Only
the self-supervised stages read them (``prototypes``, ``pretrain`` via ``pretrain.splits``); they are never
in train/val/test, never a class and never counted as labelled.

Nothing is dropped silently: files listed in a CSV but absent on disk (``missing``), repeated entries and
files sharing an id (``duplicates``) and non-video files (``skipped``) are returned in the
:class:`ManifestReport` and written by :func:`write` to ``manifest_issues.csv`` beside the manifest.
Hidden files and folders (name starting with ``.``, e.g. the synth stage's ``.*.partial.mp4``) are ignored.
Building a manifest never opens a video: no av or torch is imported.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import config, manifest
    p = config.load()
    report = manifest.prepare(p.data, seed=p.data.seed)
    print(manifest.summary(report, p.data.manifest))
    # → data/manifest.csv: 240 clips, 10 classes (train 144, val 48, test 48); 0 missing, 0 duplicates, 0 skipped
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from cmmvt.config import DataParams, SplitParams
from cmmvt.data import stratify
from cmmvt.data.records import (  # the vocabulary every source shares; its public names are the manifest's too
    COLUMNS, SEGMENT_COLUMNS, LABEL_SEP, SPLITS, UNLABELLED, ISSUES_NAME, ISSUE_COLUMNS,
    KINETICS_REQUIRED, CSV_REQUIRED, ManifestError, ManifestReport, posix, strip_video_ext, frame, label_set,
    join_labels, norm_label, norm_split, read_table, scan, clip_name, segment_id,
)
from cmmvt.io import atomic_path

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



def build(data: DataParams) -> ManifestReport:
    """Build the manifest for ``data.source`` (splits not yet assigned where the source gives none).

    ``synth`` and ``folder`` → :func:`from_folder` ``(data.root)``; ``kinetics`` →
    :func:`from_kinetics` ``(data.csv, data.root)``; ``csv`` → :func:`from_csv` ``(data.csv, data.root)``
    (relative CSV paths are resolved against ``data.root``).

    Args:
        data: The ``data`` params.

    Returns:
        The report.

    Raises:
        ManifestError: ``data.root`` does not exist, ``data.csv`` is needed but unset or absent, or no
            usable clip was found (one line naming the path or key).
    """
    root = Path(data.root).expanduser()
    if not root.is_dir():
        hint = " (run the synth stage first: `dvc repro synth` or `cmmvt synth`)" if data.source == "synth" else ""
        raise ManifestError(f"data.root = {data.root!r}: no such folder{hint}")
    if data.source in ("synth", "folder"):
        report = from_folder(root)
        if report.manifest.empty:
            raise ManifestError(
                f"data.root = {data.root!r}: no video files in class folders (expected root/<label>/<file>;"
                f" {len(report.skipped)} other file(s) skipped)"
            )
        return report
    if data.csv is None:
        raise ManifestError(f"data.csv is required when data.source = {data.source!r}")
    csvs = [data.csv] if isinstance(data.csv, str) else list(data.csv)
    if len(csvs) != 1 and data.source != "audioset":
        raise ManifestError(f"data.csv: one file for data.source = {data.source!r} (a list only for audioset)")
    for c in csvs:
        if not Path(c).expanduser().is_file():
            raise ManifestError(f"data.csv = {c!r}: no such file")
    if data.source in ("audioset", "vggsound"):
        from cmmvt.data import youtube

        if data.source == "audioset" and not (data.class_index and Path(data.class_index).expanduser().is_file()):
            raise ManifestError(f"data.class_index = {data.class_index!r}: AudioSet's class_labels_indices.csv is "
                                "required to name the label ids (no such file)")
        report = (youtube.from_audioset(csvs, data.class_index, root) if data.source == "audioset"
                  else youtube.from_vggsound(csvs[0], root))
    elif data.source == "kinetics":
        report = from_kinetics(csvs[0], root)
    else:
        report = from_csv(csvs[0], root)
    if report.manifest.empty:
        listed = len(report.missing) + len(report.duplicates) + len(report.skipped)
        raise ManifestError(
            f"data.csv = {data.csv!r}: no usable clips ({len(report.missing)} of {listed} listed not found"
            f" under data.root = {data.root!r}, {len(report.skipped)} unusable rows)"
        )
    return report


# ------------------------------------------------------------------------------------------ splits


def _split_counts(n: int, fractions: np.ndarray) -> list[int]:
    """Clips per split for a class of ``n``: largest remainders; with ``n >= 3`` each used split gets one."""
    quotas = n * fractions / fractions.sum()
    counts = [int(q) for q in np.floor(quotas)]
    order = sorted(range(3), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= 3:
        for i in range(3):
            if fractions[i] > 0 and counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], j == 0))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _class_seed(seed: int, label: str) -> list[int]:
    return [seed % (1 << 63), zlib.crc32(label.encode("utf-8"))]


def assign_splits(df: pd.DataFrame, fractions: SplitParams, seed: int) -> pd.DataFrame:
    """Fill in ``split`` where it is blank: deterministic and stratified per class (per label where clips have
    several: :func:`cmmvt.data.stratify.iterative`).

    Rows are sorted by ``video_id`` first, so the result does not depend on row order. Each class is
    shuffled by its own generator seeded from ``(seed, label)``, so adding or removing a class leaves the
    others' splits unchanged. Counts per class follow ``fractions`` (normalised, largest remainders);
    every class with at least 3 unsplit clips gets at least one clip in each split whose fraction is
    positive. Splits already given are kept; a row without a label is ``unlabelled``.

    Args:
        df: A manifest frame (``video_id``, ``label``, ``split`` at least).
        fractions: ``train``/``val``/``test`` fractions.
        seed: The dataset seed (`data.seed`).

    Returns:
        A new frame sorted by ``video_id`` with every ``split`` set.

    Raises:
        ManifestError: All fractions are zero, or a given split value is unknown.
    """
    frac = np.array([fractions.train, fractions.val, fractions.test], dtype=float)
    if frac.sum() <= 0:
        raise ManifestError("data.splits: train, val and test are all 0")
    out = df.copy()
    if "split" not in out.columns:
        out["split"] = None
    out = out.sort_values("video_id", kind="stable").reset_index(drop=True)
    split = [norm_split(v, f"video_id {vid!r}") for vid, v in zip(out["video_id"], out["split"].astype(object))]
    labels = [str(x) for x in out["label"]]
    todo: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(split):
        if not labels[i]:
            split[i] = UNLABELLED
        elif s is None:
            todo[labels[i]].append(i)
    if any(LABEL_SEP in label for label in todo):  # several labels per clip: keep every label's frequency
        rows = sorted(i for members in todo.values() for i in members)
        names = sorted({x for label in todo for x in label_set(label)})
        index = {x: c for c, x in enumerate(names)}
        y = np.zeros((len(rows), len(names)), bool)  # (N, C)
        for r, i in enumerate(rows):
            y[r, [index[x] for x in label_set(labels[i])]] = True
        where = stratify.iterative(y, frac, np.random.default_rng(_class_seed(seed, LABEL_SEP)))
        for i, s in zip(rows, where):
            split[i] = SPLITS[s]
        todo = {}
    for label in sorted(todo):
        rows = todo[label]
        counts = _split_counts(len(rows), frac)
        names = [name for name, c in zip(SPLITS, counts) for _ in range(c)]
        perm = np.random.default_rng(_class_seed(seed, label)).permutation(len(rows))
        for name, k in zip(names, perm):
            split[rows[k]] = name
    out["split"] = pd.Series(split, index=out.index, dtype=object)
    return out


# ------------------------------------------------------------------------------------------ files


def issues_path(path: str | Path) -> Path:
    """``manifest_issues.csv`` in the manifest's folder."""
    return Path(path).parent / ISSUES_NAME


def issues_frame(report: ManifestReport) -> pd.DataFrame:
    """The report's problems as rows ``kind, path, reason`` (missing, then duplicates, then skipped)."""
    rows = [("missing", m, "listed in the source CSV but no file found") for m in report.missing]
    rows += [("duplicate", p, r) for p, r in report.duplicates]
    rows += [("skipped", p, r) for p, r in report.skipped]
    return pd.DataFrame(rows, columns=ISSUE_COLUMNS, dtype=object)


def _validate(df: pd.DataFrame, where: str) -> None:
    """Columns present, ids non-empty and unique, every split known, a label exactly where the split is labelled."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{where}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})"
        )
    ids = df["video_id"].astype(object)
    if (ids.isna() | (ids.astype(str) == "")).any():
        raise ManifestError(f"{where}: empty video_id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ManifestError(f"{where}: video_id {dup.iloc[0]!r} appears more than once")
    bad = df.loc[~df["split"].astype(object).isin(SPLITS + (UNLABELLED,)), ["video_id", "split"]]
    if len(bad):
        vid, value = bad.iloc[0]
        raise ManifestError(
            f"{where}: video_id {vid!r} has split {value!r} (expected train, val, test or unlabelled;"
            f" {len(bad)} row(s) in all; assign_splits fills blanks)"
        )
    pool = (df["split"] == UNLABELLED).to_numpy()
    empty = (df["label"].astype(object).isna() | (df["label"].astype(str) == "")).to_numpy()
    wrong = df.loc[pool != empty, ["video_id", "split"]]
    if len(wrong):
        vid, value = wrong.iloc[0]
        raise ManifestError(f"{where}: video_id {vid!r} (split {value!r}): a label is required in train, val and "
                            f"test and not allowed in unlabelled ({len(wrong)} row(s) in all)")


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, path.with_name(f".{path.name}.tmp")) as tmp:
        df.to_csv(tmp, index=False)


def write(report: ManifestReport, path: str | Path) -> None:
    """Write the manifest (sorted by ``video_id``) and ``manifest_issues.csv`` beside it.

    The issues file (``kind, path, reason``) is always written, with only its header when there is
    nothing to report, so it can be a pipeline output. Both files are replaced atomically.

    Args:
        report: A report whose manifest has every split assigned (see :func:`assign_splits`).
        path: The manifest CSV.

    Raises:
        ManifestError: Missing columns, duplicate ids or unassigned/unknown splits.
    """
    path = Path(path)
    df = report.manifest
    _validate(df, f"manifest for {path}")
    df = df[COLUMNS + [c for c in SEGMENT_COLUMNS if c in df.columns]]
    df = df.sort_values("video_id", kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_csv(df, path)
    _atomic_csv(issues_frame(report), issues_path(path))
    log.info("%s", summary(report, path).split(";")[0])
    if report.missing or report.duplicates or report.skipped:
        log.warning(
            "%s: %d missing, %d duplicates, %d skipped (see %s)", path, len(report.missing),
            len(report.duplicates), len(report.skipped), issues_path(path),
        )


def read(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest written by :func:`write`.

    Args:
        path: The manifest CSV.

    Returns:
        The frame, all columns strings (labels are never parsed as numbers), required columns first.

    Raises:
        ManifestError: No such file, or missing columns / empty or repeated ids / unknown splits (one
            line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest (run the prepare stage: `dvc repro prepare`)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: empty file (expected columns {', '.join(COLUMNS)})") from None
    _validate(df, str(path))
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ stage


def prepare(data: DataParams, seed: int = 0) -> ManifestReport:
    """The ``prepare`` stage: :func:`build`, :func:`assign_splits`, :func:`write` to ``data.manifest``.

    AudioSet's ``eval_segments.csv`` and VGGSound's test rows stay the test set; the other rows are split into
    train and val only (``data.splits``' train : val), so validation never comes out of the released test set.

    Args:
        data: The ``data`` params.
        seed: The dataset seed (`data.seed`), which fixes the splits.

    Returns:
        The report with splits assigned.
    """
    report = build(data)
    fractions = data.splits
    if data.source in ("audioset", "vggsound") and (report.manifest["split"] == "test").any():
        fractions = fractions.model_copy(update={"test": 0.0})  # the released test set stays the test set
    report.manifest = assign_splits(report.manifest, fractions, seed)
    write(report, data.manifest)
    return report


def summary(report: ManifestReport, path: str | Path) -> str:
    """One line: clips, classes, split sizes and problem counts (pointing at the issues file)."""
    df = report.manifest
    counts = df["split"].value_counts() if len(df) else pd.Series(dtype=int)
    classes = df.loc[df["split"] != UNLABELLED, "label"].nunique() if len(df) else 0
    pool = f", unlabelled {counts[UNLABELLED]}" if UNLABELLED in counts else ""
    line = (
        f"{path}: {len(df)} clips, {classes} classes (train {counts.get('train', 0)},"
        f" val {counts.get('val', 0)}, test {counts.get('test', 0)}{pool}); {len(report.missing)} missing,"
        f" {len(report.duplicates)} duplicates, {len(report.skipped)} skipped"
    )
    if report.missing or report.duplicates or report.skipped:
        line += f" (see {issues_path(path)})"
    return line
