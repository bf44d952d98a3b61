"""The synthetic dataset on disk and the DVC ``synth`` stage: which clip goes to which file, rendered, encoded.

The classes and the description of the set are :mod:`cmmvt.data.synth_classes`; how a clip is drawn is
:mod:`cmmvt.data.synth_render`. Their public names are re-exported here, so ``from cmmvt.data import synth``
gives the whole API (``synth.CLASSES``, ``synth.render_clip``, ``synth.make_dataset`` …); code that needs only
the class table (e.g. :mod:`cmmvt.eval.evaluate`) imports :mod:`cmmvt.data.synth_classes` alone, so a
change to the renderer does not invalidate it.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

from cmmvt.config import DataParams, SynthParams
from cmmvt.data.synth_classes import (
    CLASSES,
    REVERSED_SOUND,
    REVERSED_VISUAL,
    SOUNDS,
    VISUALS,
    ClassSpec,
    class_names,
    order_only_pairs,
)
from cmmvt.data.synth_render import (
    EVENT_SECONDS,
    EVENT_TAIL,
    MIN_EVENT_GAP,
    clip_rng,
    event_frames,
    event_times,
    render_audio,
    render_clip,
    render_video,
)

__all__ = [  # this module's names and those of synth_classes and synth_render (their __all__)
    "CLASSES",
    "EVENT_SECONDS",
    "EVENT_TAIL",
    "MIN_EVENT_GAP",
    "REVERSED_SOUND",
    "REVERSED_VISUAL",
    "SOUNDS",
    "UNLABELLED",
    "UNLABELLED_OFFSET",
    "VISUALS",
    "ClassSpec",
    "class_names",
    "clip_path",
    "clip_rng",
    "event_frames",
    "event_times",
    "make_dataset",
    "order_only_pairs",
    "render_audio",
    "render_clip",
    "render_video",
    "stage",
    "unlabelled_order",
    "unlabelled_path",
]

UNLABELLED = "unlabelled"  # folder of the unlabelled pool under the dataset root
UNLABELLED_OFFSET = 100_000  # unlabelled clip i of class c uses clip_rng(seed, c, UNLABELLED_OFFSET + i)


def clip_path(out_dir: str | Path, spec: ClassSpec, index: int) -> Path:
    """``out_dir/<class>/<class>_<index:03d>.mp4``."""
    return Path(out_dir) / spec.name / f"{spec.name}_{index:03d}.mp4"


def unlabelled_path(out_dir: str | Path, index: int) -> Path:
    """``out_dir/unlabelled/clip_<index:04d>.mp4``: clip ``index`` of the unlabelled pool."""
    return Path(out_dir) / UNLABELLED / f"clip_{index:04d}.mp4"


def unlabelled_order(seed: int, classes: int, per_class: int) -> list[tuple[int, int]]:
    """The ``(class index, clip index)`` behind each unlabelled file, in file order.

    A seeded shuffle of every ``(c, i)``, ``c < classes``, ``i < per_class`` (its generator,
    ``default_rng([seed, classes, per_class])``, is distinct from every clip's three-number seed), so a
    file's name says nothing about its class. Unlabelled clip ``(c, i)`` is rendered from
    ``clip_rng(seed, c, UNLABELLED_OFFSET + i)``, never the generator of a labelled clip.

    Example:
        >>> sorted(unlabelled_order(0, 2, 2)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        True
    """
    pairs = [(c, i) for c in range(classes) for i in range(per_class)]
    perm = np.random.default_rng([int(seed), int(classes), int(per_class)]).permutation(len(pairs))
    return [pairs[j] for j in perm]


def _write_clip(path: Path, spec: ClassSpec, rng: np.random.Generator, p: SynthParams) -> None:
    """Render and encode one clip atomically (a temporary sibling renamed over ``path``)."""
    from cmmvt.io import atomic_path
    from cmmvt.media import encode_clip
    frames, audio = render_clip(spec, rng, p)
    with atomic_path(path, path.with_name(f".{path.stem}.partial.mp4")) as tmp:
        encode_clip(tmp, frames, p.fps, audio, p.sample_rate)


def _remove_stale(folder: Path, pattern: re.Pattern[str], wanted: set[str]) -> None:
    """Delete the files in ``folder`` whose names match ``pattern`` and are not ``wanted``."""
    for stale in folder.iterdir():
        if pattern.match(stale.name) and stale.name not in wanted:
            stale.unlink()


def stage(data: DataParams, out_dir: str | Path) -> list[Path]:
    """The DVC ``synth`` stage: the dataset when ``data.source`` is ``synth``, else an empty folder.

    A user's own clips (``data.source``: ``folder``, ``kinetics``, ``csv``) are never handed the synthetic set:
    the stage's output is then an empty folder, and no clip is rendered.

    Returns:
        The labelled clip paths (none for another source).
    """
    if data.source != "synth":
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return []
    return make_dataset(out_dir, data.synth, seed=data.seed, progress=True)


def make_dataset(out_dir: str | Path, p: SynthParams, seed: int = 0, progress: bool = False) -> list[Path]:
    """Render and encode the dataset, one folder per class, and the unlabelled pool.

    Writes ``out_dir/<class>/<class>_<index:03d>.mp4`` (H.264 + AAC via :func:`cmmvt.media.encode_clip`)
    for the first ``p.classes`` classes and ``p.clips_per_class`` clips each, and
    ``p.unlabelled_clips_per_class`` more clips of each of these classes to
    ``out_dir/unlabelled/clip_<NNNN>.mp4`` (:func:`unlabelled_path`, in :func:`unlabelled_order`).
    Every clip is regenerated deterministically (written to a temporary name, then renamed); stale
    ``<class>_NNN.mp4`` files of these classes beyond ``clips_per_class`` and stale ``clip_NNNN.mp4``
    files of the pool are removed so the folders always match the params (the ``unlabelled`` folder
    itself is removed when the pool is empty and nothing else is in it).

    Args:
        out_dir: Dataset root.
        p: Dataset parameters.
        seed: Dataset seed; clip ``(c, i)`` uses :func:`clip_rng` ``(seed, c, i)``, unlabelled clip
            ``(c, i)`` uses ``clip_rng(seed, c, UNLABELLED_OFFSET + i)``.
        progress: Print one line per clip to stderr.

    Returns:
        The labelled clip paths, class-major (the pool is ``unlabelled_path(out_dir, j)``,
        ``j < p.classes * p.unlabelled_clips_per_class``).
    """
    if not 1 <= p.classes <= len(CLASSES):
        raise ValueError(f"synth.classes must be in 1..{len(CLASSES)}, got {p.classes}")
    if p.size % 2:
        raise ValueError(f"synth.size must be even (H.264 yuv420p), got {p.size}")
    if p.clips_per_class > UNLABELLED_OFFSET:
        raise ValueError(f"synth.clips_per_class must be <= {UNLABELLED_OFFSET}, got {p.clips_per_class}")
    out = Path(out_dir)
    specs = CLASSES[: p.classes]
    pool = unlabelled_order(seed, p.classes, p.unlabelled_clips_per_class)
    total = len(specs) * p.clips_per_class + len(pool)
    done = 0
    t0 = time.perf_counter()

    def tick(path: Path) -> None:
        nonlocal done
        done += 1
        if progress:
            rate = (time.perf_counter() - t0) / done
            print(f"[synth] {done}/{total} {path} ({rate:.2f} s/clip)", file=sys.stderr, flush=True)

    paths: list[Path] = []
    for ci, spec in enumerate(specs):
        cdir = out / spec.name
        cdir.mkdir(parents=True, exist_ok=True)
        wanted = set()
        for i in range(p.clips_per_class):
            path = clip_path(out, spec, i)
            _write_clip(path, spec, clip_rng(seed, ci, i), p)
            paths.append(path)
            wanted.add(path.name)
            tick(path)
        _remove_stale(cdir, re.compile(rf"^{re.escape(spec.name)}_\d{{3,}}\.mp4$"), wanted)

    udir = out / UNLABELLED
    if pool:
        udir.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for j, (ci, i) in enumerate(pool):
        path = unlabelled_path(out, j)
        _write_clip(path, specs[ci], clip_rng(seed, ci, UNLABELLED_OFFSET + i), p)
        wanted.add(path.name)
        tick(path)
    if udir.is_dir():
        _remove_stale(udir, re.compile(r"^clip_\d{4,}\.mp4$"), wanted)
        if not pool and not any(udir.iterdir()):
            udir.rmdir()
    return paths
