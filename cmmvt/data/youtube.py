"""Segment lists of YouTube datasets: AudioSet and VGGSound, whose rows name a video, a segment and its labels.

Sources (``data.source``):

* ``audioset``: the released segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``,
  ``unbalanced_train_segments.csv``; ``data.csv`` one or a list), rows ``YTID, start_seconds, end_seconds,
  positive_labels`` with the labels a quoted, comma-separated list of ids (``"/m/09x0r,/t/dd00088"``) and ``#``
  comment lines, and the class index ``class_labels_indices.csv`` (``index,mid,display_name``; ``data.class_index``)
  that names the ids. Several labels per clip (Gemmeke et al. 2017, "Audio Set"). A file named ``eval_*`` is the
  test split; the training files' rows get train and val from ``data.splits`` (:mod:`cmmvt.data.stratify`).
* ``vggsound``: ``vggsound.csv`` (``youtube_id, start_seconds, label, split``, no header, 10-s segments, one label;
  Chen et al. 2020, "VGGSound"). Its test rows are the test split; its train rows get train and val from
  ``data.splits`` (the release has no validation split).

A row's file is found by name anywhere under ``data.root`` (flat, class or split folders), cut or not:

* cut to the segment: ``<id>_<start:06d>_<end:06d>`` (the Kinetics naming), ``<id>_<start:06d>``,
  ``<id>_<start>_<end>``, ``<id>_<start>``, ``Y<id>_<start:.3f>_<end:.3f>``, ``<id>_<start:.3f>_<end:.3f>``;
* the whole (untrimmed) video ``<id>`` or ``Y<id>``: the manifest row then carries the segment's ``start`` and
  ``end`` and extraction reads only that part.

The clip id is ``<id>_<start:06d>_<end:06d>`` either way (a fractional bound to the millisecond:
:func:`cmmvt.data.records.segment_id`), so segments of one video are cached apart.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from cmmvt.data import records as m

__all__ = ["SegmentFiles", "from_audioset", "from_vggsound", "read_class_index"]

VGGSOUND_SECONDS = 10.0  #: the length of a VGGSound segment


class SegmentFiles:
    """The video files under a root, looked up by the names a segment's file may have."""

    def __init__(self, root: Path) -> None:
        files, self.skipped = m.scan(root)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for f in files:
            self.by_stem[f.with_suffix("").name].append(f)

    def find(self, youtube_id: str, start: float, end: float) -> tuple[list[Path], bool]:
        """The files of a segment (first by path first) and whether they are the whole video (untrimmed)."""
        s, e = int(start), int(end)
        for name in (f"{youtube_id}_{s:06d}_{e:06d}", f"{youtube_id}_{s:06d}", f"{youtube_id}_{s}_{e}",
                     f"{youtube_id}_{s}", f"Y{youtube_id}_{start:.3f}_{end:.3f}", f"{youtube_id}_{start:.3f}_{end:.3f}"):
            if name in self.by_stem:
                return sorted(self.by_stem[name], key=m.posix), False
        for name in (youtube_id, f"Y{youtube_id}"):
            if name in self.by_stem:
                return sorted(self.by_stem[name], key=m.posix), True
        return [], False


def segment_rows(table: pd.DataFrame, root: Path, where: str) -> m.ManifestReport:
    """Manifest rows from a table ``youtube_id, start, end, label, split`` (label: one or ``;``-joined names)."""
    files = SegmentFiles(root)
    rows, missing, duplicates, skipped, seen = [], [], [], [], {}
    for n, rec in enumerate(table.itertuples(index=False)):
        line = f"{where} row {n + 1}"
        try:
            start, end = float(rec.start), float(rec.end)
        except ValueError:
            skipped.append((line, f"bad start/end {rec.start!r}, {rec.end!r}"))
            continue
        if not rec.youtube_id or not end > start >= 0:
            skipped.append((line, f"bad segment {rec.youtube_id!r} {rec.start}–{rec.end}"))
            continue
        clip = m.segment_id(rec.youtube_id, start, end)
        if clip in seen:
            duplicates.append((clip, f"segment listed again at {line}; first at {seen[clip]}"))
            continue
        seen[clip] = line
        found, whole = files.find(rec.youtube_id, start, end)
        if not found:
            missing.append(clip)
            continue
        for other in found[1:]:
            duplicates.append((m.posix(other), f"another copy of {clip}; kept {m.posix(found[0])}"))
        row = {"video_id": clip, "path": m.posix(found[0]), "label": rec.label, "split": rec.split}
        if whole:
            row |= {"start": m.seconds_text(start), "end": m.seconds_text(end)}
        rows.append(row)
    return m.ManifestReport(m.frame(rows), missing, duplicates, skipped)


def read_class_index(path: str | Path) -> dict[str, str]:
    """AudioSet's ``class_labels_indices.csv`` (``index,mid,display_name``) → ``{mid: display_name}``."""
    table = m.read_table(Path(path).expanduser(), ["mid", "display_name"])
    return dict(zip(table["mid"], table["display_name"]))


def _audioset_split(csv_path: Path) -> str | None:
    """``eval_segments.csv`` → test; the training files → None (train and val assigned from ``data.splits``)."""
    return "test" if csv_path.name.lower().startswith("eval") else None


def from_audioset(csv_paths: list[str | Path], class_index: str | Path, root: str | Path) -> m.ManifestReport:
    """AudioSet segment CSVs, their class index and the folder holding the videos (module docstring).

    Returns:
        The report: labels are the display names, ``;``-joined; rows whose ids are all unknown to the class index
        are skipped with the ids named (a row with some known ids keeps those and lists the others).
    """
    names = read_class_index(class_index)
    tables, skipped = [], []
    for csv_path in map(lambda c: Path(c).expanduser(), csv_paths):
        if not csv_path.is_file():
            raise m.ManifestError(f"{csv_path}: no such AudioSet segments CSV")
        t = pd.read_csv(csv_path, comment="#", header=None, dtype=str, keep_default_na=False, skipinitialspace=True,
                        names=["youtube_id", "start", "end", "ids"], usecols=range(4), engine="python")
        t = t.apply(lambda col: col.str.strip())
        labels = []
        for i, cell in enumerate(t["ids"]):
            ids = [x.strip() for x in cell.split(",") if x.strip()]
            known = [names[x] for x in ids if x in names]
            unknown = [x for x in ids if x not in names]
            if unknown:
                skipped.append((f"{csv_path} row {i + 1}", f"label id(s) not in {class_index}: {', '.join(unknown)}"
                                + ("" if known else " (row skipped)")))
            labels.append(m.join_labels(known))
        t["label"], t["split"] = labels, _audioset_split(csv_path)
        tables.append(t[t["label"] != ""])
    report = segment_rows(pd.concat(tables, ignore_index=True), Path(root).expanduser(), "audioset")
    report.skipped += skipped
    return report


def from_vggsound(csv_path: str | Path, root: str | Path) -> m.ManifestReport:
    """VGGSound's CSV (``youtube_id, start_seconds, label, split``; a header line is allowed) and the videos."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise m.ManifestError(f"{csv_path}: no such VGGSound CSV")
    t = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True,
                    names=["youtube_id", "start", "label", "split"], usecols=range(4))
    t = t.apply(lambda col: col.str.strip())
    if len(t) and not t["start"].iloc[0].replace(".", "", 1).isdigit():  # a header row
        t = t.iloc[1:]
    t["end"] = [m.seconds_text(float(s) + VGGSOUND_SECONDS) if s.replace(".", "", 1).isdigit() else ""
                for s in t["start"]]
    t["split"] = [m.norm_split(s, f"{csv_path} row {i + 1}") for i, s in enumerate(t["split"])]
    t["split"] = [None if s == "train" else s for s in t["split"]]  # train and val are carved from train
    return segment_rows(t, Path(root).expanduser(), str(csv_path))
