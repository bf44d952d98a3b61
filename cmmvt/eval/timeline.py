"""Where in a long video: class probabilities over time from sliding windows of a trained classifier.

The classifier was trained on crops of ``model.crop_frames`` rows; here it reads windows of half that length by
default (or ``window`` seconds) every half window (``stride``) over a clip's cached rows, a batch of windows at a
time straight from the HDF5 cache, so memory holds one batch of rows whatever the video's length (an hour at
4 fps is 14,400 rows; the rows of 64 windows of 8 are 512). Each row's probabilities are the mean over the
windows that cover it (overlapping windows vote, as in MMAction2's long-video demo), optionally smoothed by a
moving average; the rows' top labels merge into segments, and, where asked, a segment shorter than
``min_segment`` seconds joins the neighbour its rows favour (the minimum-duration rule of action-segmentation
post-processing, MS-TCN, Farha & Gall 2019). The defaults (half-crop windows, no merging, no smoothing) won on
the val videos of ``benchmarks/timeline.py`` on both sets.

A video file is first extracted into a feature cache with the checkpoint's feature params (a temporary one, or
``cache`` to keep it: a video already there is never decoded again), so the timeline of a file and that of its
cache are one computation.

Example (needs a checkpoint and a video on disk, so not run as a doctest)::

    from cmmvt.eval import timeline
    [tl] = timeline.from_files(["lecture.mp4"], "models/classifier.pt", stride=1.0)
    timeline.write(tl, "reports/timeline")   # CSV of windows and segments, JSON, PNG
    [(s.start, s.end, s.label) for s in tl.segments]
"""

from __future__ import annotations

import contextlib
import heapq
import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from cmmvt.checkpoints import load_checkpoint
from cmmvt.eval import explain as explain_mod
from cmmvt.eval.predict import extract_params
from cmmvt.features import cache, extract
from cmmvt.models import Classifier
from cmmvt.train.dataset import crops


@dataclass(frozen=True)
class Segment:
    """A run of rows with one top label: ``[start, end)`` seconds and the label's mean probability over it."""

    start: float
    end: float
    label: str
    probability: float


@dataclass
class Timeline:
    """One video's class probabilities over time.

    Attributes:
        video_id: The clip's id in the cache.
        labels: Class names (the checkpoint's order).
        fps: Rows per second; row ``i`` stands for ``[i / fps, (i + 1) / fps)`` (clipped to the duration).
        duration: Seconds.
        starts: (W,) first row of each window; ``ends`` (W,) one past its last.
        ends: (W,).
        window_prob: (W, C) softmax of each window.
        row_prob: (T, C) mean over the covering windows, smoothed.
        present: ``{modality: (T,) bool}``, where the model's modalities have rows.
        segments: Merged runs of the rows' top label.
        relevance: ``{stream: (T,)}`` attention rollout of each encoder over the rows (``explain``; 1 = an even
            share), ``{}`` without.
    """

    video_id: str
    labels: list[str]
    fps: float
    duration: float
    starts: np.ndarray
    ends: np.ndarray
    window_prob: np.ndarray
    row_prob: np.ndarray
    present: dict[str, np.ndarray]
    segments: list[Segment]
    relevance: dict[str, np.ndarray]

    def edge(self, rows: np.ndarray | int) -> np.ndarray:
        """Seconds at the start of row(s) ``rows`` (a row count gives the end of the previous row)."""
        return np.minimum(np.asarray(rows, np.float64) / self.fps, self.duration)

    def centres(self) -> np.ndarray:
        """(T,) seconds at the middle of each row (the instants the rows were sampled at)."""
        return (np.arange(len(self.row_prob)) + 0.5) / self.fps

    def row_labels(self) -> np.ndarray:
        """(T,) the label index of the segment each row falls in (segment bounds are row edges)."""
        first = self.edge(np.arange(len(self.row_prob)))  # (T,) each row's start, as the segments were cut
        out = np.zeros(len(first), np.int64)
        for s in self.segments:
            out[(first >= s.start) & (first < s.end)] = self.labels.index(s.label)
        return out


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First rows of windows of ``window`` rows every ``stride`` rows that cover ``length`` rows.

    The last window may be partial; a clip of at most one window is one window from row 0.

    Example:
        >>> window_starts(10, 4, 2), window_starts(11, 4, 2), window_starts(3, 4, 2)
        ([0, 2, 4, 6], [0, 2, 4, 6, 8], [0])
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}) rows, got {stride}")
    starts = [0]
    while starts[-1] + window < length:
        starts.append(starts[-1] + stride)
    return starts


@torch.inference_mode()
def window_probs(model: Classifier, readers: Mapping[str, cache.CacheReader], video_id: str, length: int,
                 window: int, stride: int, batch: int = 64, explain: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Softmax of every window of one cached clip of ``length`` rows, ``batch`` windows (and only their rows)
    read at a time.

    Returns:
        (W,) window starts, (W, C) probabilities, and with ``explain`` each encoder's row relevance
        (:func:`cmmvt.eval.explain.relevance`) summed over the windows covering a row, each window's scaled so
        that 1 is its even share, ``{stream: (T,)}`` (the caller divides by the coverage).
    """
    model.eval()
    starts = window_starts(length, window, stride)
    width = max(1, min(window, length))  # a clip shorter than a window is read whole, unpadded (as evaluate does)
    out: list[np.ndarray] = []
    rel: dict[str, np.ndarray] = {}
    for i in range(0, len(starts), batch):
        part = starts[i : i + batch]
        a, b = part[0], min(part[-1] + width, length)
        x: dict[str, torch.Tensor] = {}
        for m in model.modalities:
            rows = readers[m].rows(video_id, a, b)  # (≤ b - a, D): only this batch's rows
            x[m], x[f"{m}_mask"] = crops(rows, [s - a for s in part], width)  # (B, width, D), (B, width)
        out.append(model(x).softmax(-1).numpy())  # (B, C)
        if explain:
            for name, r in explain_mod.relevance(model, x).items():  # (B, width)
                total = rel.setdefault(name, np.zeros(length))
                for s, rw in zip(part, r):
                    n = min(width, length - s)
                    total[s : s + n] += rw[:n] * n
    return np.asarray(starts), np.concatenate(out), rel


def merge_segments(row_prob: np.ndarray, min_rows: int = 1) -> list[tuple[int, int, int]]:
    """Runs ``(first row, end row, label)`` of the rows' top label; a run shorter than ``min_rows`` joins the
    neighbour whose label its rows give the higher mean probability, shortest first, until none is left."""
    lab = row_prob.argmax(1)  # (T,)
    bounds = [0, *(np.flatnonzero(np.diff(lab)) + 1).tolist(), len(lab)]
    runs = [[a, b, int(lab[a])] for a, b in zip(bounds[:-1], bounds[1:])]
    prev, nxt = list(range(-1, len(runs) - 1)), [*range(1, len(runs)), -1]  # a linked list of live runs
    alive = [True] * len(runs)

    def drop(i: int) -> None:
        alive[i] = False
        if prev[i] >= 0:
            nxt[prev[i]] = nxt[i]
        if nxt[i] >= 0:
            prev[nxt[i]] = prev[i]

    heap = [(b - a, j) for j, (a, b, _) in enumerate(runs)]
    heapq.heapify(heap)
    while heap:
        size, j = heapq.heappop(heap)
        a, b, _ = runs[j]
        if not alive[j] or size != b - a:
            continue  # merged away, or grown since pushed
        if size >= min_rows:
            break
        near = [k for k in (prev[j], nxt[j]) if k >= 0]
        if not near:
            break  # the only run
        k = max(near, key=lambda k: row_prob[a:b, runs[k][2]].mean())
        runs[k][0], runs[k][1] = min(runs[k][0], a), max(runs[k][1], b)
        drop(j)
        for o in (prev[k], nxt[k]):  # the grown run now meets a run of its own label: one run
            if o >= 0 and runs[o][2] == runs[k][2]:
                runs[k][0], runs[k][1] = min(runs[k][0], runs[o][0]), max(runs[k][1], runs[o][1])
                drop(o)
        heapq.heappush(heap, (runs[k][1] - runs[k][0], k))
    return [(a, b, c) for (a, b, c), keep in zip(runs, alive) if keep]


def timeline(model: Classifier, ckpt: dict[str, Any], readers: Mapping[str, cache.CacheReader], video_id: str,
             window: float | None = None, stride: float | None = None, smooth: float = 0.0, min_segment: float = 0.0,
             batch: int = 64, whole: bool = False, explain: bool = False) -> Timeline:
    """The timeline of one cached clip.

    Args:
        model: The trained classifier.
        ckpt: Its checkpoint (class names, ``model.crop_frames``, ``model.max_frames``).
        readers: ``{modality: CacheReader}`` for the model's modalities (made with the checkpoint's feature params).
        video_id: The clip.
        window: Seconds per window (default: half the model's training crop, ``model.crop_frames / 2`` rows).
        stride: Seconds between window starts (default: half a window).
        smooth: Seconds of the moving average over the rows' probabilities (0: none).
        min_segment: Segments shorter than this many seconds join a neighbour (0: none).

    The defaults won on val in ``benchmarks/timeline.py`` on both the real-content and the synthetic set (long
    videos of val clips of 2–5 s): half-crop windows every quarter crop, no merging, no smoothing.
        batch: Windows per forward pass.
        whole: One window of the whole clip (up to ``model.max_frames`` rows, then windows of that): the
            whole-clip prediction, with ``explain`` its relevance.
        explain: Also the attention rollout over the rows (:mod:`cmmvt.eval.explain`).
    """
    if "thresholds" in ckpt:
        raise ValueError("timelines score each window by a softmax over one label per clip; a multi-label model "
                         "(train.task=multilabel) is not supported by --timeline yet")
    labels: list[str] = ckpt["labels"]
    mp = ckpt["params"]["model"]
    fps = float(readers[model.modalities[0]].attrs["fps"])
    length = max(readers[m].length(video_id) for m in model.modalities)
    if whole:
        w = max(1, min(length, int(mp["max_frames"])))
    else:
        w = max(1, round(window * fps)) if window else max(1, int(mp["crop_frames"]) // 2)
    s = max(1, round(stride * fps)) if stride else max(1, w // 2)
    starts, prob, relevance = window_probs(model, readers, video_id, length, w, min(s, w), batch, explain)
    ends = np.minimum(starts + w, length)
    total, count = np.zeros((length, prob.shape[1])), np.zeros(length)
    for a, b, pw in zip(starts, ends, prob):
        total[a:b] += pw
        count[a:b] += 1
    row_prob = total / np.maximum(count, 1)[:, None]  # (T, C)
    relevance = {k: v / np.maximum(count, 1) for k, v in relevance.items()}  # (T,) mean over covering windows
    k = round(smooth * fps)
    if k > 1:
        row_prob = uniform_filter1d(row_prob, k, axis=0, mode="nearest")
    min_rows = round(min_segment * fps)
    duration = max(readers[m].duration(video_id) for m in model.modalities) or length / fps
    tl = Timeline(video_id, labels, fps, duration, starts, ends, prob, row_prob,
                  {m: np.arange(length) < readers[m].length(video_id) for m in model.modalities}, [], relevance)
    tl.segments = [Segment(float(tl.edge(a)), float(tl.edge(b)), labels[c], float(row_prob[a:b, c].mean()))
                   for a, b, c in merge_segments(row_prob, max(min_rows, 1))]
    return tl


def check_cache(ckpt: dict[str, Any], readers: Mapping[str, cache.CacheReader]) -> None:
    """Refuse a cache made with other feature params than the checkpoint's training features (naming each); a key
    only one side records (a cache or checkpoint from a version that did not record it yet) is not compared."""
    for m, r in readers.items():
        trained = ckpt["features"][m]
        diff = cache.feature_diff({k: v for k, v in trained.items() if k in r.attrs},
                                  {k: v for k, v in r.attrs.items() if k in trained})
        if diff:
            raise cache.ParamsMismatch(f"{r.root}: {m} features differ from the checkpoint's: " + "; ".join(diff))


def from_cache(root: str | Path, ids: list[str] | None, model_path: str | Path, **options: Any) -> list[Timeline]:
    """Timelines of cached clips (``ids``; None: every clip of the cache); ``options`` as :func:`timeline`."""
    return _from_cache(root, ids, *load_checkpoint(model_path), options)


def _from_cache(root: str | Path, ids: list[str] | None, model: Classifier, ckpt: dict[str, Any],
                options: dict[str, Any]) -> list[Timeline]:
    with contextlib.ExitStack() as stack:
        readers = {m: stack.enter_context(cache.CacheReader(root, m)) for m in model.modalities}
        check_cache(ckpt, readers)
        ids = list(readers[model.modalities[0]].ids) if ids is None else ids
        missing = [i for i in ids if any(i not in r for r in readers.values())]
        if missing:
            raise cache.CacheError(f"{root}: not cached: {', '.join(missing)}")
        return [timeline(model, ckpt, readers, i, **options) for i in ids]


def from_files(paths: list[str | Path], model_path: str | Path, cache_dir: str | Path | None = None,
               show_progress: bool = False, **options: Any) -> list[Timeline | dict[str, str]]:
    """Timelines of video files: extracted into ``cache_dir`` (default: a temporary folder) with the checkpoint's
    feature params, then :func:`from_cache`. A file that cannot be decoded gives ``{"path", "error"}``."""
    items = [extract.Item(Path(x).stem, Path(x)) for x in paths]
    seen: dict[str, str] = {}
    for it in items:
        if seen.setdefault(it.video_id, str(it.path)) != str(it.path):
            raise cache.CacheError(f"two videos would share the cache id {it.video_id!r}: {seen[it.video_id]} and "
                                   f"{it.path} (give them different names)")
    model, ckpt = load_checkpoint(model_path)
    p = extract_params(ckpt)
    mods = model.modalities
    with contextlib.ExitStack() as stack:
        root = Path(cache_dir) if cache_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        extract.run(items, p, modality=mods[0] if len(mods) == 1 else "both", out=root, show_progress=show_progress)
        failed = {}
        for m in mods:
            with cache.CacheReader(root, m) as r:
                failed |= {f["video_id"]: f["reason"] for f in r.failures()}
        ok = _from_cache(root, [it.video_id for it in items if it.video_id not in failed], model, ckpt, options)
    done = {tl.video_id: tl for tl in ok}
    return [done.get(it.video_id) or {"path": str(it.path), "error": failed[it.video_id]} for it in items]


# ------------------------------------------------------------------------------------------------ output


def to_dict(tl: Timeline) -> dict[str, Any]:
    """Windows (``start, end, label, probability`` of each window's top class) and segments, in seconds."""
    top = tl.window_prob.argmax(1)
    windows = [{"start": float(tl.edge(a)), "end": float(tl.edge(b)), "label": tl.labels[c],
                "probability": float(pw[c])} for a, b, c, pw in zip(tl.starts, tl.ends, top, tl.window_prob)]
    return {"video_id": tl.video_id, "duration": tl.duration, "fps": tl.fps, "labels": tl.labels,
            "windows": windows, "segments": [asdict(s) for s in tl.segments]}


def write(tl: Timeline, out: str | Path, picture: bool = True) -> dict[str, Path]:
    """``<id>.windows.csv``, ``<id>.segments.csv``, ``<id>.timeline.json`` and ``<id>.timeline.png`` in ``out``;
    with relevance also ``<id>.rows.csv``."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = tl.video_id.replace("/", "__")
    d = to_dict(tl)
    files = {"windows": out / f"{stem}.windows.csv", "segments": out / f"{stem}.segments.csv",
             "json": out / f"{stem}.timeline.json"}
    cols = ["start", "end", "label", "probability"]
    pd.DataFrame(d["windows"], columns=cols).to_csv(files["windows"], index=False, float_format="%.3f")
    pd.DataFrame(d["segments"], columns=cols).to_csv(files["segments"], index=False, float_format="%.3f")
    files["json"].write_text(json.dumps(d, indent=1) + "\n")
    if tl.relevance:  # one row per cached row: its time and each encoder's relevance
        files["rows"] = out / f"{stem}.rows.csv"
        rows = {"time": tl.centres()} | {f"relevance_{k}": v for k, v in tl.relevance.items()}
        pd.DataFrame(rows).to_csv(files["rows"], index=False, float_format="%.4f")
    if picture:
        files["png"] = out / f"{stem}.timeline.png"
        plot(tl, files["png"])
    return files


def plot(tl: Timeline, path: str | Path, top: int = 5) -> None:
    """The top classes' probabilities against time, the merged segments under them, (with two modalities) a strip
    per modality where it has rows, and a strip per encoder's relevance where explained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.argsort(-tl.row_prob.max(0))[:top]  # the classes that peak highest
    palette = plt.cm.tab10 if len(tl.labels) <= 10 else plt.cm.tab20
    colour = lambda c: palette(c % palette.N)  # noqa: E731  one colour per class, the same in every picture
    strips = len(tl.present) if len(tl.present) > 1 else 0
    rel = len(tl.relevance)
    fig, axes = plt.subplots(2 + strips + rel, 1, sharex=True, figsize=(12, 3.2 + 0.45 * (1 + strips) + 0.9 * rel),
                             gridspec_kw={"height_ratios": [6, 1] + [0.6] * strips + [2] * rel})
    t = tl.centres()
    for c in shown:
        axes[0].plot(t, tl.row_prob[:, c], color=colour(c), label=tl.labels[c], lw=1.4)
    axes[0].set(ylim=(0, 1.02), ylabel="probability", title=f"{tl.video_id}: {len(tl.segments)} segments")
    axes[0].legend(loc="upper right", fontsize=8, ncol=min(len(shown), 5))
    for s in tl.segments:
        c = tl.labels.index(s.label)
        axes[1].broken_barh([(s.start, s.end - s.start)], (0, 1), color=colour(c))
        if s.end - s.start > tl.duration / 40:
            axes[1].text((s.start + s.end) / 2, 0.5, s.label, ha="center", va="center", fontsize=7, clip_on=True)
    axes[1].set(yticks=[], ylabel="segments")
    for ax, (m, rows) in zip(axes[2:], tl.present.items() if strips else ()):
        edges = np.flatnonzero(np.diff(np.r_[0, rows.astype(np.int8), 0]))  # starts and ends of present runs
        ax.broken_barh([(a / tl.fps, (b - a) / tl.fps) for a, b in zip(edges[::2], edges[1::2])], (0, 1),
                       color="0.35")
        ax.set(yticks=[], ylabel=m)
        ax.yaxis.label.set(rotation=0, ha="right", va="center")
    for ax, (name, r) in zip(axes[2 + strips :], tl.relevance.items()):
        ax.fill_between(t, r, step="mid", color="tab:purple", alpha=0.6)
        ax.set(ylabel=f"relevance\n({name})", ylim=(0, max(float(r.max()), 1e-6) * 1.1))
    axes[-1].set(xlim=(0, tl.duration), xlabel="seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
