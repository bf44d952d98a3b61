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

``--memory`` measures instead the peak resident memory of extracting one clip (both modalities,
efficientnet_lite0, ``--image-size``) in a fresh process per clip, for a 10-s clip and a 1-hour one
(320×180, 25 fps, H.264 + AAC, written frame by frame so the generator holds no video either): memory
must not grow with a video's length (target: the hour within +200 MB of the 10 s).

    python benchmarks/extract.py --memory --image-size 224   # writes reports/bench/extract-memory.json
    python benchmarks/extract.py --memory --quick            # 10 s vs 2 min
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

from cmmvt import media
from cmmvt.features import backbones, extract
from cmmvt.data import synth
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


def write_long_clip(path: Path, seconds: float, width: int = 320, height: int = 180, fps: int = 25,
                    sample_rate: int = 16000) -> None:
    """An H.264 + AAC clip of any length written frame by frame: a square moving on a gradient, a wobbling tone."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8)  # (H, W, 3)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "30"}
        aus = c.add_stream("aac", rate=sample_rate)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = base.copy()
            top, left = (7 * i) % (height - 40), (11 * i) % (width - 40)
            frame[top : top + 40, left : left + 40] = 255
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
            t = (np.arange(sample_rate // fps) + i * (sample_rate // fps)) / sample_rate
            wave = 0.3 * np.sin(2 * np.pi * (440 + 100 * np.sin(t / 3)) * t)
            af = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="flt", layout="mono")
            af.sample_rate, af.pts = sample_rate, i * (sample_rate // fps)
            c.mux(aus.encode(af))
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))


_CHILD = """
import resource, sys, json
from pathlib import Path
from cmmvt.features import extract
from cmmvt.config import ExtractParams
p = ExtractParams(image_size=int(sys.argv[2]), out=sys.argv[3])
s = extract.run([extract.Item("clip", Path(sys.argv[1]))], p, show_progress=False)
print(json.dumps({"rows": [x.rows for x in s], "seconds": [x.seconds for x in s],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of extracting a short and a long clip, each in a fresh process."""
    import subprocess
    import sys

    durations = [10.0, 120.0 if args.quick else 3600.0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in durations:
            clip = Path(tmp) / f"clip{int(seconds)}.mp4"
            t0 = time.perf_counter()
            write_long_clip(clip, seconds)
            made = time.perf_counter() - t0
            out = subprocess.run([sys.executable, "-c", _CHILD, str(clip), str(args.image_size), str(Path(tmp) / f"f{seconds}")],
                                 check=True, capture_output=True, text=True).stdout
            results[f"{int(seconds)}s"] = json.loads(out.strip().splitlines()[-1]) | {
                "clip_mib": round(clip.stat().st_size / 2**20, 1), "write_seconds": round(made, 1)}
    short, long = (results[f"{int(d)}s"] for d in durations)
    report = {"clip": "320x180 25 fps H.264 + AAC 16 kHz", "backbone": "efficientnet_lite0", "image_size": args.image_size,
              "modalities": ["video", "audio"], "results": results,
              "extra_peak_rss_mib_long_over_short": round(long["peak_rss_mib"] - short["peak_rss_mib"], 1),
              "target_extra_mib": 200}
    out = args.out if args.out != Path("reports/bench/extract.json") else Path("reports/bench/extract-memory.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--memory", action="store_true", help="peak RSS of a 10-s vs a 1-hour clip instead of speed")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=128, help="CNN input side (params default 128; 224 for real data)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs (1 with --quick)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/extract.json"))
    args = ap.parse_args()
    if args.memory:
        return memory(args)
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
