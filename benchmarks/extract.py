"""Benchmark: video feature extraction throughput (frames/s), all measured in one run.

(a) decoding only (cmmvt.media, frames sampled by timestamp and resized while decoding);
(b) the frozen CNN only, on pre-decoded frames, at the extraction batch size;
(c) cmmvt end to end (decode threads + batched CNN + HDF5 cache);
(d) naive baseline: decode every frame to numpy, subsample afterwards, CNN at batch size 1.
Reports (c)/(b) (target ≥ 0.8: decoding hidden behind compute) and (c)/(d) (target ≥ 3).
Each measurement is repeated (``--repeats``, interleaved so background load hits all four alike) and the
best rate is kept: on a shared 2-core machine single timings of the same work varied by ±30 %.

    python benchmarks/extract.py            # 24 clips of 4 s, writes reports/bench/extract.json
    python benchmarks/extract.py --quick    # 3 short clips, for CI
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from cmmvt import backbones, extract, media, synth
from cmmvt.config import ExtractParams, SynthParams


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def naive(paths: list[Path], p: ExtractParams, bb: backbones.Backbone) -> int:
    """Decode every frame to a full-size numpy array, keep those nearest the sample times, embed one by one."""
    rows = 0
    for path in paths:
        with av.open(str(path)) as c:
            frames, pts = [], []
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="rgb24"))
                pts.append(float(f.time))
        pts = np.asarray(pts) - pts[0]
        duration = pts[-1] + (pts[1] - pts[0] if len(pts) > 1 else 0.04)
        for t in media.sample_times(duration, p.fps):
            i = int(np.searchsorted(pts, t, side="right") - 1)
            bb.embed(frames[max(i, 0)][None])
            rows += 1
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=128, help="CNN input side (params default 128; 224 for real data)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs (1 with --quick)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/extract.json"))
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    clips = 3 if args.quick else args.clips
    sp = SynthParams(classes=min(clips, 10), clips_per_class=-(-clips // 10), duration=1.0 if args.quick else 4.0)
    p = ExtractParams(image_size=args.image_size, batch_size=32, workers=1)
    bb = backbones.create(p.backbone, p.weights, image_size=p.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = synth.make_dataset(Path(tmp) / "clips", sp, seed=0)[:clips]
        items = [extract.Item(f"c{i}", path) for i, path in enumerate(paths)]
        bb.embed(np.zeros((2, p.image_size, p.image_size, 3), np.uint8))  # warm-up
        runs: dict[str, list[float]] = {"decode_only": [], "cnn_only": [], "cmmvt": [], "naive": []}
        for r in range(repeats):
            t, decoded = _timed(lambda: [media.read_frames(x, p.fps, short_side=p.image_size).rgb for x in paths])
            frames = np.concatenate(decoded)  # (n, H, W, 3): the CNN-only input
            n = len(frames)
            runs["decode_only"].append(n / t)
            t, _ = _timed(lambda: [bb.embed(frames[i : i + p.batch_size]) for i in range(0, n, p.batch_size)])
            runs["cnn_only"].append(n / t)
            t, s = _timed(lambda: extract.run_modality(items, p, "video", bb, out=Path(tmp) / f"feats{r}"))
            assert s.rows == n, (s.rows, n)
            runs["cmmvt"].append(n / t)
            t, n_naive = _timed(lambda: naive(paths, p, bb))
            runs["naive"].append(n_naive / t)
    fps = {k: max(v) for k, v in runs.items()}
    report = {
        "clips": len(paths), "frames": n, "backbone": p.backbone, "image_size": p.image_size,
        "batch_size": p.batch_size, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "repeats": repeats,
        "frames_per_s": {k: round(v, 2) for k, v in fps.items()},
        "frames_per_s_runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "ratio_cmmvt_over_cnn_only": round(fps["cmmvt"] / fps["cnn_only"], 3),
        "ratio_cmmvt_over_naive": round(fps["cmmvt"] / fps["naive"], 3),
        # Decoding (a) and the CNN (b) each use every core, so no pipeline beats running them back to back:
        # (c) <= 1 / (1/a + 1/b), i.e. (c)/(b) <= a / (a + b).
        "bound_cmmvt_over_cnn_only": round(fps["decode_only"] / (fps["decode_only"] + fps["cnn_only"]), 3),
        "bound_cmmvt_over_naive": round(1 / (1 / fps["decode_only"] + 1 / fps["cnn_only"]) / fps["naive"], 3),
        "targets": {"cmmvt_over_cnn_only": 0.8, "cmmvt_over_naive": 3.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
