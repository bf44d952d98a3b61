"""Benchmark: video feature extraction throughput (frames/s), all measured in one run.

(a) decoding only (cmmvt.media, frames sampled by timestamp and resized while decoding);
(b) the frozen CNN only, on pre-decoded frames, at the extraction batch size;
(c) cmmvt end to end (decode threads + batched CNN + HDF5 cache);
(d) naive baseline: decode every frame to numpy, subsample afterwards, CNN at batch size 1.
Reports (c)/(b) (target ≥ 0.8: decoding hidden behind compute) and (c)/(d) (target ≥ 3).

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
    ap.add_argument("--out", type=Path, default=Path("reports/bench/extract.json"))
    args = ap.parse_args()
    clips = 3 if args.quick else args.clips
    sp = SynthParams(classes=min(clips, 10), clips_per_class=-(-clips // 10), duration=1.0 if args.quick else 4.0)
    p = ExtractParams(image_size=args.image_size, batch_size=32, workers=1)
    bb = backbones.create(p.backbone, p.weights, image_size=p.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = synth.make_dataset(Path(tmp) / "clips", sp, seed=0)[:clips]
        items = [extract.Item(f"c{i}", path) for i, path in enumerate(paths)]
        bb.embed(np.zeros((2, p.image_size, p.image_size, 3), np.uint8))  # warm-up
        t_dec, decoded = _timed(lambda: [media.read_frames(x, p.fps, short_side=p.image_size).rgb for x in paths])
        n = sum(len(d) for d in decoded)
        frames = np.concatenate(decoded)
        t_cnn, _ = _timed(lambda: [bb.embed(frames[i : i + p.batch_size]) for i in range(0, n, p.batch_size)])
        t_e2e, s = _timed(lambda: extract.run_modality(items, p, "video", bb, out=Path(tmp) / "feats"))
        assert s.rows == n, (s.rows, n)
        t_naive, n_naive = _timed(lambda: naive(paths, p, bb))
    fps = {"decode_only": n / t_dec, "cnn_only": n / t_cnn, "cmmvt": n / t_e2e, "naive": n_naive / t_naive}
    report = {
        "clips": len(paths), "frames": n, "backbone": p.backbone, "image_size": p.image_size,
        "batch_size": p.batch_size, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "frames_per_s": {k: round(v, 2) for k, v in fps.items()},
        "ratio_cmmvt_over_cnn_only": round(fps["cmmvt"] / fps["cnn_only"], 3),
        "ratio_cmmvt_over_naive": round(fps["cmmvt"] / fps["naive"], 3),
        "targets": {"cmmvt_over_cnn_only": 0.8, "cmmvt_over_naive": 3.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
