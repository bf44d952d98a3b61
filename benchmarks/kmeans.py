"""Benchmark: frame-level k-means prototypes on a large cache, wall time and peak memory.

Synthetic clustered float16 rows (1,000,000 × 1,280 by default, in clips of 64 rows) are written to a
temporary HDF5 cache with CacheWriter; ``cmmvt.selfsup.prototypes.fit(..., frame_level=True)`` (k-means++
on a row sample, then MiniBatchKMeans streamed from HDF5, then a streamed assignment pass) clusters them
in a child process, whose wall time and peak RSS (VmHWM) are measured. Baselines in the same run: the
size of the rows as float32 and float64 (what an in-memory fit would hold), and the child's RSS after
its imports. Target: ≤ 3 minutes for 1M × 1280; peak RSS far below the float32 size (memory bounded).

    python benchmarks/kmeans.py            # 1M × 1280 rows (2.5 GB float16 in a temp dir) → reports/bench/kmeans.json
    python benchmarks/kmeans.py --quick    # 20,000 × 64 rows, for CI
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MiB = 2**20


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (peak only)


def write_cache(root: Path, rows: int, dim: int, clip_rows: int, k: int, seed: int = 0) -> int:
    """``rows`` rows around ``k`` random centres, ``clip_rows`` per clip, into ``root/video``; returns clips."""
    from cmmvt.features.cache import CacheWriter, ClipFeatures

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim), dtype=np.float32) * 3.0
    pool_rows = min(rows, 1 << 16)  # pre-generated noise, sliced at random offsets (generation is the slow part)
    noise = rng.standard_normal((pool_rows + clip_rows, dim), dtype=np.float32)
    t = np.arange(clip_rows, dtype=np.float32) / 4.0
    clips = -(-rows // clip_rows)
    with CacheWriter(root / "video", "video", {"backbone": "synthetic", "dim": dim, "fps": 4.0}) as w:
        for i in range(clips):
            n = min(clip_rows, rows - i * clip_rows)
            o = int(rng.integers(0, pool_rows))
            emb = (centres[rng.integers(0, k)] + noise[o : o + n]).astype(np.float16)  # one cluster per clip
            w.add(ClipFeatures(f"clip_{i:07d}", emb, t[:n], True, n / 4.0))
    return clips


def child(root: Path, k: int, threshold: int) -> None:
    """Runs in a fresh process: fit, print wall time and memory as JSON."""
    from cmmvt.selfsup import prototypes

    rss_imports = _status_kib("VmRSS")
    t0 = time.perf_counter()
    res = prototypes.fit(root, k_video=k, frame_level=True, minibatch_threshold=threshold, modalities=("video",))
    wall = time.perf_counter() - t0
    p = res["video"]
    print(json.dumps({"seconds": wall, "peak_rss_kib": _status_kib("VmHWM"), "rss_after_imports_kib": rss_imports,
                      "clips": len(p.ids), "inertia": p.inertia, "clusters_used": int(len(np.unique(p.assignments)))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 × 64 rows, for CI")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--clip-rows", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tmp", type=Path, default=None, help="where the temporary cache goes (default: the system temp dir)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/kmeans.json"))
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from cmmvt.selfsup.prototypes import MINIBATCH_THRESHOLD

    rows, dim = (20_000, 64) if args.quick else (args.rows, args.dim)
    # quick: lower the threshold so the streamed MiniBatchKMeans path runs, as in the full benchmark
    threshold = args.threshold or (5_000 if args.quick else MINIBATCH_THRESHOLD)
    if args.child is not None:
        child(args.child, args.k, threshold)
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        clips = write_cache(Path(tmp), rows, dim, args.clip_rows, args.k)
        t_write = time.perf_counter() - t0
        on_disk = sum(f.stat().st_size for f in Path(tmp).rglob("*.h5"))
        cmd = [sys.executable, __file__, "--child", tmp, "--k", str(args.k), "--threshold", str(threshold)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        fit = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = fit["peak_rss_kib"] * 1024
    f32, f64 = rows * dim * 4, rows * dim * 8
    report = {
        "quick": args.quick, "rows": rows, "dim": dim, "clip_rows": args.clip_rows, "clips": clips, "k": args.k,
        "minibatch_threshold": threshold, "cpus": len(__import__("os").sched_getaffinity(0)),
        "machine": platform.machine(),
        "write_seconds": round(t_write, 2), "cache_mib_float16": round(on_disk / MiB, 1),
        "fit_seconds": round(fit["seconds"], 2),
        "peak_rss_mib": round(peak / MiB, 1),
        "rss_after_imports_mib": round(fit["rss_after_imports_kib"] / 1024, 1),
        "peak_rss_growth_mib": round((fit["peak_rss_kib"] - fit["rss_after_imports_kib"]) / 1024, 1),
        "data_mib": {"float16": round(rows * dim * 2 / MiB, 1), "float32": round(f32 / MiB, 1),
                     "float64": round(f64 / MiB, 1)},
        "ratio_peak_rss_over_float32": round(peak / f32, 4),
        "ratio_peak_rss_over_float64": round(peak / f64, 4),
        "clusters_used": fit["clusters_used"], "inertia": fit["inertia"],
        "targets": {"fit_seconds_max": 180.0, "peak_rss_below_float32": True},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
