"""The manifest: one row per clip (``video_id, path, label, split``) from a folder tree, a CSV or the synthetic set.

Sources (``data.source``): a folder tree, a Kinetics-style CSV or a plain CSV (:mod:`cmmvt.data.sources`), the
synthetic set (written folder-per-class), AudioSet and VGGSound segment lists (:mod:`cmmvt.data.youtube`).

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
    # → data/manifest.csv: 240 clips, 10 classes (train 140, val 50, test 50); 0 missing, 0 duplicates, 0 skipped
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from cmmvt.config import DataParams, SplitParams
from cmmvt.data import stratify
from cmmvt.data.records import (  # the vocabulary every source shares; ManifestError, SPLITS, … are the manifest's too
    COLUMNS, SEGMENT_COLUMNS, LABEL_SEP, SPLITS, UNLABELLED, ISSUES_NAME, ISSUE_COLUMNS, ManifestError,
    ManifestReport, label_set, norm_split,
)
from cmmvt.data.sources import from_csv, from_folder, from_kinetics
from cmmvt.io import atomic_path

log = logging.getLogger(__name__)

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
