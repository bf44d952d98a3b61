"""Feature extraction, orchestrated: decode → batch → embed with a frozen CNN → HDF5 cache; streamed, resumable,
failure-tolerant.

This module finds the clips (:func:`discover`), builds the frozen models (:func:`create_backbones`), names the
params that define a cache (:func:`feature_attrs`) and runs one modality per rank (:func:`run_modality`), both with
a progress display (:func:`run`) and as the DVC stage (:func:`stage`), or one clip in memory
(:func:`clip_features`). The work itself is done by:

* :mod:`cmmvt.features.pieces`: each clip decoded into pieces of at most ``ROWS_PER_PIECE`` rows (frame views
  or log-mel images at ``extract.fps``, so video row ``t`` and audio row ``t`` describe the same instant), by
  ``extract.workers`` background threads a bounded amount ahead; peak memory does not depend on a video's length
  (an hour costs what ten seconds cost, plus 2.5 KB per cached row until its shard is published);
* :mod:`cmmvt.features.views`: the frame geometry (the decoder's resize, the square views, the backbone's input);
* :mod:`cmmvt.features.batching`: the rows of several clips in shared CNN batches, streamed into the cache writer,
  and each rank's share of the clips (:class:`cmmvt.distributed.World`: torchrun, or ``--shard i/N``).

Each cached clip records its file's fingerprint (:mod:`cmmvt.features.fingerprint`): a file changed under the
same path is retracted from the cache before anything else happens and extracted again.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import config
    from cmmvt.features import extract
    extract.stage(config.ExtractParams(), "videos/")  # both modalities into data/features
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cmmvt import distributed, media
from cmmvt.config import ExtractParams
from cmmvt.distributed import World
from cmmvt.features import backbones, batching, cache, pieces, sound
from cmmvt.features.batching import Summary
from cmmvt.features.fingerprint import is_current
from cmmvt.features.pieces import MODALITIES, Item, Modality

__all__ = ["COMPLETE", "MODALITIES", "Item", "Modality", "Summary", "clip_features", "create_backbones", "discover",
           "feature_attrs", "for_backbone", "library_versions", "run", "run_modality", "set_threads", "stage"]


def discover(path: str | Path) -> tuple[list[Item], list[tuple[str, str]]]:
    """List the videos to extract from a folder tree (recursive) or a manifest CSV.

    Args:
        path: A folder (every file with a video extension, at any depth) or a manifest ``.csv``.

    Returns:
        The items (ids unique: the path relative to the folder without extension) and the skipped
        non-video files as ``(path, reason)``.
    """
    from cmmvt.data import manifest, records, sources  # pandas: only for discovery, not for predict's start-up

    path = Path(path)
    if path.is_file() and path.suffix == ".csv":
        df = manifest.read(path)
        return [Item(r.video_id, Path(r.path), _segment(r)) for r in df.itertuples()], []
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder or manifest")
    files, skipped = records.scan(path)
    return [Item(vid, p) for vid, p in sources.unique_ids(path, files).items()], skipped


def _segment(row: object) -> tuple[float, float | None] | None:
    """A manifest row's ``start``/``end`` (blank or absent: the whole file)."""
    start, end = getattr(row, "start", ""), getattr(row, "end", "")
    return (float(start or 0), float(end) if end else None) if start or end else None


def for_backbone(p: ExtractParams, bb: backbones.Backbone) -> ExtractParams:
    """``p`` with the backbone's own input side (a timm model's pretrained one; ``extract.image_size`` otherwise).

    Frames are resized by the decoder's bilinear scaler whatever the model's interpolation (measured 1.7×
    faster than bicubic per frame; :func:`cmmvt.media.iter_frames`); its mean, std and size are the
    model's."""
    return p.model_copy(update={"image_size": bb.image_size})


def create_backbones(p: ExtractParams, device: str) -> tuple[ExtractParams, dict[Modality, backbones.Backbone]]:
    """The frozen models of both modalities (the frame backbone; for audio the same on log-mel images, or the audio
    model of ``extract.audio.backbone``) and ``p`` with the frame backbone's input side (:func:`for_backbone`)."""
    bb = backbones.create(p.backbone, p.weights, image_size=p.image_size, device=device, engine=p.engine)
    return for_backbone(p, bb), {"video": bb, "audio": sound.audio_backbone(p.audio, bb)}


def feature_attrs(p: ExtractParams, modality: Modality, bb: backbones.Backbone) -> dict[str, object]:
    """The params that define a modality's features: a cache made with others is never mixed in.

    Besides ``extract.*``: the backbone's weights (description, ``source``, ``weights_sha256``) and, for frames,
    the input normalisation it was trained with (``mean``, ``std``), so that rows of another model or
    preprocessing never join a cache (:class:`cmmvt.features.cache.ParamsMismatch` names both)."""
    attrs: dict[str, object] = {"backbone": bb.name, "weights": bb.weights, "source": bb.source,
                                "weights_sha256": bb.weights_sha256, "dim": bb.dim, "fps": p.fps}
    if modality == "video":  # (log-mel images are standardised by extract.audio.norm, not by the model's mean/std)
        attrs.update(image_size=bb.image_size, mean=list(bb.mean), std=list(bb.std), crop=p.crop, flip=p.flip,
                     fast_decode=p.fast_decode, resize="bilinear")
    else:
        attrs.update(sound.framing(p.audio).model_dump(exclude={"backbone", "weights"}))  # those: the audio model's above
    return attrs


def library_versions() -> dict[str, str]:
    """Versions recorded in every shard, for provenance."""
    import av
    import h5py
    import torchaudio

    return {"python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "av": av.__version__, "h5py": h5py.__version__}


def run_modality(
    items: list[Item],
    p: ExtractParams,
    modality: Modality,
    bb: backbones.Backbone,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    world: World = World(),
) -> Summary:
    """Extract one modality of ``items`` into ``out/<modality>``, skipping clips already cached.

    With several ranks every rank calls this with the same ``items`` and extracts its share
    (:func:`cmmvt.features.batching.share`) into its own shard files; rank 0 opens the folder first (checking the
    feature params, replacing the cache if asked), and no rank writes before every rank has read the shards.

    Args:
        items: Videos to extract.
        p: Extraction params (fps, backbone, audio windows, batch size, workers).
        modality: ``video`` or ``audio``.
        bb: The frozen backbone (shared between modalities).
        out: Features root (default ``p.out``); the modality's shards go to ``out/<modality>/``.
        overwrite: Replace a cache made with other feature params instead of refusing.
        progress: Called with ``(videos_done, rows_done, videos_to_do)`` before the first clip and after each.
        world: This process among the ranks (default: one process).

    Returns:
        What this rank did.

    Raises:
        cache.ParamsMismatch: The folder holds features made with other params.
    """
    root = Path(out or p.out) / modality
    attrs = feature_attrs(p, modality, bb) | {"versions": library_versions(), "engine": bb.engine}
    summary = Summary(modality)
    start = time.perf_counter()
    with distributed.rank_zero_first(world):
        writer = cache.CacheWriter(root, modality, attrs, shard_size=p.shard_size, overwrite=overwrite,
                                   writer=world.rank)
    with writer:
        sources = writer.sources()
        changed = {it.video_id for it in items if it.video_id in sources
                   and not is_current(it.path, sources[it.video_id])}
        done = writer.done_ids() - changed
        distributed.barrier(world)  # every rank has read the shards: from here on they change
        todo, summary.cached = batching.share(items, done, world)
        stale = [it.video_id for it in todo if it.video_id in changed]
        writer.retract(stale)  # before any work: their old rows are never served again
        summary.stale = len(stale)
        if progress:
            progress(0, 0, len(todo))
        tick = progress and (lambda videos, rows: progress(videos, rows, len(todo)))
        batching.embed_pieces(pieces.prefetched(todo, modality, p), writer, modality, bb, p.batch_size, summary, tick)
    summary.seconds = time.perf_counter() - start
    return summary


def set_threads(p: ExtractParams, world: World = World()) -> int:
    """Give the CNN ``extract.threads`` threads, or (0) this machine's cores shared by its ranks.

    Measured on 2 cores with one decoding thread (``benchmarks/extract.py``): the CNN at 2 threads beside
    the decoder ran 1.2× faster than at 1 thread, because decoding leaves its core idle most of the time
    (it is ~1/3 of the work), so "cores minus decoders" would waste it. Set ``threads`` where decoding
    dominates, e.g. many decoding workers on a many-core machine. With N ranks on one machine each gets
    ``max(1, cores // N)`` (:func:`cmmvt.distributed.threads_per_rank`).

    Returns:
        The CNN's thread count (also what :class:`~cmmvt.features.engines.OnnxRunner` takes).
    """
    threads = p.threads or distributed.threads_per_rank(world, distributed.cores())
    torch.set_num_threads(threads)
    return threads


def run(
    items: list[Item],
    p: ExtractParams,
    modality: Literal["video", "audio", "both"] = "both",
    out: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    world: World | None = None,
) -> list[Summary]:
    """Extract the requested modalities with one shared frozen backbone, with a progress bar.

    Every rank of a job calls this with the same items (see :func:`run_modality`). A group's ranks join
    their process group here and each returns the job's merged summaries, gathered once every rank has
    published its shards; SIGTERM (torchrun stopping the ranks after one failed, SLURM's time limit) ends
    the run like an error: complete clips in flight are published first.

    Args:
        items: Videos to extract (see :func:`discover`).
        p: Extraction params.
        modality: ``video``, ``audio`` or ``both``.
        out: Features root (default ``p.out``).
        overwrite: Replace caches made with other feature params.
        show_progress: Draw a rich progress bar (videos/s and frames/s) on stderr (rank 0's, in a group).
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        One :class:`Summary` per modality: the job's in a group, else this process's.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    world = world or distributed.from_env()
    with distributed.joined(world), distributed.sigterm_as_exit():
        set_threads(p, world)
        p, bbs = create_backbones(p, world.device(p.device))
        summaries = []
        for mod in MODALITIES if modality == "both" else (modality,):
            label = f"{mod} ({world.label()})" if world.label() else mod
            columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
            with Progress(*columns, disable=not (show_progress and world.lead), transient=False) as bar:
                task = bar.add_task(mod, total=None, rate="")
                t0 = time.perf_counter()

                def tick(videos: int, rows: int, total: int, task=task, t0=t0, bar=bar) -> None:
                    dt = max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=videos, total=total,
                               rate=f"{videos / dt:.1f} videos/s  {rows / dt:.0f} frames/s")

                summary = run_modality(items, p, mod, bbs[mod], out=out, overwrite=overwrite, progress=tick, world=world)
            summaries.append(Summary.merge(distributed.all_gather(world, summary)))
    return summaries


COMPLETE = ".complete"


def stage(p: ExtractParams, source: str | Path, modality: Literal["video", "audio", "both"] = "both",
          overwrite: bool = False, world: World | None = None) -> bool:
    """Extract every clip of ``source``: the DVC ``extract@<modality>`` stage (``overwrite``) and ``cmmvt extract``
    alike, in this process, as a rank of torchrun's, or as one of ``--shard i/N``'s independent processes.

    With ``extract.procs`` > 1 and no ``world`` given (and not already under torchrun) the very command runs again as
    that many torchrun processes (:func:`cmmvt.distributed.relaunch`). An interrupted run resumes where it stopped: clips already
    cached are skipped. With ``overwrite`` a cache made with other feature params is replaced, and a folder
    holding a *completed* run is wiped first (by rank 0, before the other ranks open it): DVC reruns a completed
    stage only when its inputs (clips, code, feature params) changed, and cached rows of changed inputs must not
    survive. Once every rank has published its shards the run is marked complete (``.complete``, its summary
    line). Independent ``--shard`` processes neither wipe nor mark: none of them knows what the others do. Skipped
    files, failures and each modality's summary line are printed (rank 0 of a group).

    Args:
        p: Extraction params (``extract.out`` is the features root).
        source: A folder of videos (recursive) or a manifest CSV (:func:`discover`).
        modality: ``video``, ``audio`` or ``both``.
        overwrite: Start afresh as above (what the DVC stage does).
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        Whether the run did its job: False where every clip of every modality failed (exit status 1).
    """
    import shutil

    if world is None:  # (not a rank of --shard i/N: those are launched by the user, one by one)
        launched = distributed.relaunch(p.procs)
        if launched is not None:
            return launched == 0
    world = world or distributed.from_env()
    whole = world.group or world.size == 1  # one process, or a group that meets: not independent shards
    mods = MODALITIES if modality == "both" else (modality,)
    with distributed.joined(world):
        with distributed.rank_zero_first(world):
            for mod in mods if overwrite and whole and world.rank == 0 else ():
                if (Path(p.out) / mod / COMPLETE).exists():
                    shutil.rmtree(Path(p.out) / mod)
        items, skipped = discover(source)
        for path, reason in skipped if world.lead else ():
            print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
        summaries = run(items, p, modality=modality, overwrite=overwrite, show_progress=sys.stderr.isatty(),
                        world=world)
        if world.rank == 0 and whole:
            for s in summaries:
                (Path(p.out) / s.modality).mkdir(parents=True, exist_ok=True)
                (Path(p.out) / s.modality / COMPLETE).write_text(s.line() + "\n")
    if world.lead:
        for s in summaries:
            for path, reason in s.failures:
                print(f"failed {path}: {reason}", file=sys.stderr, flush=True)
            print(s.line(), file=sys.stderr, flush=True)
    return any(s.succeeded or s.cached or not s.failed for s in summaries)


def clip_features(path: str | Path, p: ExtractParams, bbs: Mapping[Modality, backbones.Backbone],
                  modalities: Iterable[Modality] = MODALITIES) -> dict[Modality, np.ndarray]:
    """Features of one video, in memory, through the same streamed path as :func:`run_modality` (for ``predict``).

    ``bbs`` maps each modality to its backbone (:func:`create_backbones`).

    Returns:
        ``{modality: (T, D) float32}``; a modality whose stream is absent has 0 rows.

    Raises:
        media.MediaError: The file cannot be decoded.
    """
    item = Item(Path(path).stem, Path(path))
    out = {}
    for m in modalities:
        sink = batching.MemorySink()
        batching.embed_pieces(pieces.clip_pieces(item, m, p), sink, m, bbs[m], p.batch_size, Summary(m))
        if item.video_id in sink.failed:
            raise media.MediaError(path, sink.failed[item.video_id])
        rows = sink.rows[item.video_id]
        emb = np.concatenate(rows) if rows else np.zeros((0, bbs[m].dim), np.float32)  # (T, D)
        out[m] = emb.astype(np.float16).astype(np.float32)  # the cache stores float16
    return out
