"""The extraction loop: decode → batch → embed with a frozen CNN → HDF5 cache; resumable, failure-tolerant.

Video rows are RGB frames sampled at ``extract.fps`` by presentation timestamp; audio rows are log-mel
windows centred on the same timestamps (:func:`cmmvt.media.sample_times`), so row ``t`` of both
modalities describes the same instant. Decoding runs in background threads (PyAV releases the GIL)
while the CNN runs in the calling thread, so decoding hides behind compute. Frames of several short
clips are batched together through the CNN.

Example:
    >>> from cmmvt import config, extract                     # doctest: +SKIP
    >>> items, skipped = extract.discover("videos/")          # doctest: +SKIP
    >>> extract.run(items, config.ExtractParams(), modality="both")  # doctest: +SKIP
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cmmvt import audio, backbones, cache, manifest, media
from cmmvt.config import ExtractParams

Modality = Literal["video", "audio"]
MODALITIES: tuple[Modality, ...] = ("video", "audio")


@dataclass(frozen=True)
class Item:
    """One video to extract: a unique id (the cache key) and its path."""

    video_id: str
    path: Path


@dataclass
class _Decoded:
    """A decoded clip ready for the CNN (``inputs`` is None when the file failed or has no stream)."""

    item: Item
    inputs: torch.Tensor | None  # (T, ...) CNN inputs: uint8 (T, H, W, 3) frames or float (T, 3, M, W) log-mel
    t: np.ndarray  # (T,) seconds
    duration: float
    error: str | None = None


@dataclass
class Summary:
    """What one modality's run did."""

    modality: str
    succeeded: int = 0
    failed: int = 0
    cached: int = 0
    no_stream: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        """One-line human summary."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        extra = f", {self.no_stream} without a {self.modality} stream" if self.no_stream else ""
        return (
            f"{self.modality}: {self.succeeded} succeeded, {self.failed} failed, {self.cached} already cached"
            f"{extra}; {self.rows} rows in {self.seconds:.1f} s ({rate:.1f} frames/s)"
        )


def discover(path: str | Path) -> tuple[list[Item], list[tuple[str, str]]]:
    """List the videos to extract from a folder tree (recursive) or a manifest CSV.

    Args:
        path: A folder (every file with a video extension, at any depth) or a manifest ``.csv``.

    Returns:
        The items (ids unique: the path relative to the folder without extension) and the skipped
        non-video files as ``(path, reason)``.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".csv":
        df = manifest.read(path)
        return [Item(r.video_id, Path(r.path)) for r in df.itertuples()], []
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder or manifest")
    files, skipped = manifest.scan(path)
    return [Item(vid, p) for vid, p in manifest.unique_ids(path, files).items()], skipped


def feature_attrs(p: ExtractParams, modality: Modality, bb: backbones.Backbone) -> dict[str, object]:
    """The params that define a modality's features: a cache made with others is never mixed in."""
    attrs: dict[str, object] = {"backbone": bb.name, "weights": bb.weights, "dim": bb.dim, "fps": p.fps}
    if modality == "video":
        attrs["image_size"] = p.image_size
    else:
        attrs.update(p.audio.model_dump())
    return attrs


def library_versions() -> dict[str, str]:
    """Versions recorded in every shard, for provenance."""
    import av
    import h5py
    import torchaudio

    return {"python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "av": av.__version__, "h5py": h5py.__version__}


def _decode_video(item: Item, p: ExtractParams) -> _Decoded:
    info = media.probe(item.path)
    frames = media.read_frames(item.path, p.fps, short_side=p.image_size)
    return _Decoded(item, torch.from_numpy(frames.rgb), frames.t, info.duration)


def _decode_audio(item: Item, p: ExtractParams) -> _Decoded:
    info = media.probe(item.path)
    t = media.sample_times(info.duration, p.fps)
    wave = media.load_audio(item.path, p.audio.sample_rate)
    if wave is None:
        return _Decoded(item, None, t, info.duration)
    images = audio.to_images(audio.clip_windows(wave.samples, t, p.audio))  # (T, 3, n_mels, W)
    return _Decoded(item, images, t, info.duration)


def _safe(decode: Callable[[Item, ExtractParams], _Decoded], item: Item, p: ExtractParams) -> _Decoded:
    """Decode one item; any failure becomes a recorded reason, never an aborted run."""
    try:
        return decode(item, p)
    except media.MediaError as exc:
        return _Decoded(item, None, np.zeros(0, np.float32), 0.0, error=exc.reason)
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run; the reason is kept
        return _Decoded(item, None, np.zeros(0, np.float32), 0.0, error=f"{type(exc).__name__}: {exc}")


def _decoded(items: list[Item], modality: Modality, p: ExtractParams) -> Iterator[_Decoded]:
    """Decode items in order in ``p.workers`` background threads, a bounded number ahead."""
    decode = _decode_video if modality == "video" else _decode_audio
    if p.workers == 0:
        yield from (_safe(decode, it, p) for it in items)
        return
    ahead = 2 * p.workers + 2
    with ThreadPoolExecutor(p.workers, thread_name_prefix=f"decode-{modality}") as pool:
        futures = [pool.submit(_safe, decode, it, p) for it in items[:ahead]]
        for i in range(len(items)):
            if i + ahead < len(items):
                futures.append(pool.submit(_safe, decode, items[i + ahead], p))
            yield futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # release the frames


def _batched(clips: Iterable[_Decoded], batch_size: int) -> Iterator[list[_Decoded]]:
    """Group consecutive clips until they hold at least ``batch_size`` CNN rows."""
    group, rows = [], 0
    for clip in clips:
        group.append(clip)
        rows += 0 if clip.inputs is None else len(clip.inputs)
        if rows >= batch_size:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _embed(bb: backbones.Backbone, modality: Modality, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Run the frozen CNN over ``x`` in chunks of ``batch_size`` rows → (N, D) float32."""
    fn = bb.embed if modality == "video" else bb.embed_images
    outs = [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, bb.dim), np.float32)


def run_modality(
    items: list[Item],
    p: ExtractParams,
    modality: Modality,
    bb: backbones.Backbone,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Extract one modality of ``items`` into ``out/<modality>``, skipping clips already cached.

    Args:
        items: Videos to extract.
        p: Extraction params (fps, backbone, audio windows, batch size, workers).
        modality: ``video`` or ``audio``.
        bb: The frozen backbone (shared between modalities).
        out: Features root (default ``p.out``); the modality's shards go to ``out/<modality>/``.
        overwrite: Replace a cache made with other feature params instead of refusing.
        progress: Called with ``(videos_done, rows_done)`` after each clip.

    Raises:
        cache.ParamsMismatch: The folder holds features made with other params.
    """
    root = Path(out or p.out) / modality
    attrs = feature_attrs(p, modality, bb) | {"versions": library_versions()}
    summary = Summary(modality)
    start = time.perf_counter()
    with cache.CacheWriter(root, modality, attrs, shard_size=p.shard_size, overwrite=overwrite) as writer:
        done = writer.done_ids()
        todo = [it for it in items if it.video_id not in done]
        summary.cached = len(items) - len(todo)
        for group in _batched(_decoded(todo, modality, p), p.batch_size):
            ready = [c for c in group if c.inputs is not None]
            emb = _embed(bb, modality, torch.cat([c.inputs for c in ready]), p.batch_size) if ready else None
            offset = 0
            for clip in group:
                if clip.error is not None:
                    writer.add_failure(str(clip.item.path), clip.item.video_id, "decode", clip.error)
                    summary.failed += 1
                    summary.failures.append((str(clip.item.path), clip.error))
                else:
                    n = 0 if clip.inputs is None else len(clip.inputs)
                    rows = emb[offset : offset + n] if n else np.zeros((0, bb.dim), np.float32)  # (T, D)
                    offset += n
                    writer.add(cache.ClipFeatures(clip.item.video_id, rows, clip.t[:n].astype(np.float32),
                                                  has_stream=clip.inputs is not None, duration=clip.duration))
                    summary.succeeded += 1
                    summary.no_stream += clip.inputs is None
                    summary.rows += n
                if progress:
                    progress(summary.succeeded + summary.failed, summary.rows)
    summary.seconds = time.perf_counter() - start
    return summary


def run(
    items: list[Item],
    p: ExtractParams,
    modality: Literal["video", "audio", "both"] = "both",
    out: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> list[Summary]:
    """Extract the requested modalities with one shared frozen backbone, with a progress bar.

    Args:
        items: Videos to extract (see :func:`discover`).
        p: Extraction params.
        modality: ``video``, ``audio`` or ``both``.
        out: Features root (default ``p.out``).
        overwrite: Replace caches made with other feature params.
        show_progress: Draw a rich progress bar (videos/s and frames/s) on stderr.

    Returns:
        One :class:`Summary` per modality.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bb = backbones.create(p.backbone, p.weights, image_size=p.image_size, device=p.device)
    summaries = []
    for mod in MODALITIES if modality == "both" else (modality,):
        columns = (TextColumn(f"[bold]{mod}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn())
        with Progress(*columns, disable=not show_progress, transient=False) as bar:
            task = bar.add_task(mod, total=len(items), rate="")
            t0 = time.perf_counter()

            def tick(videos: int, rows: int, task=task, t0=t0, bar=bar) -> None:
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=videos, rate=f"{videos / dt:.1f} videos/s  {rows / dt:.0f} frames/s")

            summary = run_modality(items, p, mod, bb, out=out, overwrite=overwrite, progress=tick)
            bar.update(task, completed=len(items))
        summaries.append(summary)
    return summaries


COMPLETE = ".complete"


def run_stage(p: ExtractParams, manifest: str | Path, modality: Modality) -> Summary:
    """The DVC ``extract@<modality>`` stage over a manifest.

    The output folder is ``persist``-ed, so an interrupted run resumes where it stopped. A folder holding
    a *completed* run is wiped first: DVC reruns a completed stage only when its inputs (clips, code,
    feature params) changed, and cached rows of changed inputs must not survive.
    """
    import shutil

    root = Path(p.out) / modality
    if (root / COMPLETE).exists():
        shutil.rmtree(root)
    items, _ = discover(manifest)
    summary = run(items, p, modality=modality, overwrite=True, show_progress=False)[0]
    (root / COMPLETE).write_text(summary.line() + "\n")
    return summary


def clip_features(path: str | Path, p: ExtractParams, bb: backbones.Backbone,
                  modalities: Iterable[Modality] = MODALITIES) -> dict[Modality, np.ndarray]:
    """Features of one video, in memory, exactly as :func:`run_modality` would cache them (for ``predict``).

    Returns:
        ``{modality: (T, D) float32}``; a modality whose stream is absent has 0 rows.

    Raises:
        media.MediaError: The file cannot be decoded.
    """
    item = Item(Path(path).stem, Path(path))
    out = {}
    for m in modalities:
        clip = (_decode_video if m == "video" else _decode_audio)(item, p)
        rows = np.zeros((0, bb.dim), np.float32) if clip.inputs is None else _embed(bb, m, clip.inputs, p.batch_size)
        out[m] = rows.astype(np.float16).astype(np.float32)  # the cache stores float16
    return out
