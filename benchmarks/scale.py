"""Benchmark: extraction throughput (clips/s) with 1, 2, … processes on this machine (torchrun, gloo).

Each run is the real command a user types, in a fresh process tree and a fresh output folder, both
modalities: ``cmmvt extract`` for one process, ``torchrun --standalone --nproc_per_node N … cmmvt extract``
for N (each rank gets ``cores // N`` CNN threads and one decoding thread). Two rates per run:

* ``clips_per_s``: clips over the command's wall time, start-up (importing torch, torchrun's rendezvous,
  loading the CNN) included;
* ``clips_per_s_extracting``: clips over the extraction time that rank 0 reports (the slowest rank's,
  both modalities), start-up excluded.

Clips are the Kinetics-like ones of ``benchmarks/extract.py --preset real`` (10 s, 30 fps, H.264 + AAC;
640×360, 1280×720 and 640×480; photographs and speech), the seven twice over (14 clips);
efficientnet_lite0 at 224 px, ``crop: centre``, ONNX Runtime. Runs are interleaved over N and repeated
(``--repeats``), the best rate kept: on this shared machine single timings of the same work varied by ±30 %.
Training steps/s with several processes is not measured yet.

    python benchmarks/scale.py                 # N = 1, 2 and powers of two up to the cores → reports/bench/scale.json
    python benchmarks/scale.py --quick         # 2 short clips, N = 1 and 2, one repeat, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(video|audio): (\d+) succeeded, (\d+) failed.*; (\d+) rows in ([\d.]+) s", re.M)


def command(procs: int, folder: Path, out: Path, image_size: int) -> list[str]:
    """The user's command line for ``procs`` processes."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    return [*launcher, "-m", "cmmvt.cli", "extract", "--videos", str(folder), "--out", str(out),
            "-S", f"extract.image_size={image_size}", "-S", "extract.crop=centre"]


def timed_run(procs: int, folder: Path, out: Path, image_size: int, clips: int) -> dict[str, float]:
    """One extraction of ``folder`` by ``procs`` processes: wall and extraction seconds, rows."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    t0 = time.perf_counter()
    proc = subprocess.run(command(procs, folder, out, image_size), capture_output=True, text=True, env=env,
                          cwd=out.parent)  # no params.yaml there: cmmvt's defaults
    wall = time.perf_counter() - t0
    lines = LINE.findall(proc.stderr)
    if proc.returncode or len(lines) != 2 or any(int(ok) != clips for _, ok, *_ in lines):
        raise RuntimeError(f"{procs} processes: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "extract_s": sum(float(s) for *_, s in lines), "rows": sum(int(r) for *_, r, _ in lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--procs", type=int, nargs="+", default=None,
                    help="process counts (default: 1, 2 and powers of two up to the cores)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs (1 with --quick)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/scale.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from extract import real_clips  # benchmarks/extract.py

    cores = len(os.sched_getaffinity(0))
    procs = args.procs or ([1, 2] if args.quick else sorted({1, 2, *(2**k for k in range(1, 8) if 2**k <= cores)}))
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()  # other work on the machine skews both counts alike: reported, not hidden
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for path in real_clips(folder, args.quick):
            if not args.quick:  # the seven clips twice over
                shutil.copy(path, path.with_name(f"{path.stem}_copy{path.suffix}"))
        clips = len(list(folder.iterdir()))
        timed_run(1, folder, Path(tmp) / "warm-up", args.image_size, clips)  # exports the ONNX graph once
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in procs}
        for r in range(repeats):
            for n in procs:
                runs[n].append(timed_run(n, folder, Path(tmp) / f"p{n}-{r}", args.image_size, clips))
                print(n, "processes:", json.dumps(runs[n][-1]), flush=True)
    results = {}
    for n, rs in runs.items():
        results[str(n)] = {"clips_per_s": round(clips / min(x["wall_s"] for x in rs), 3),
                           "clips_per_s_extracting": round(clips / min(x["extract_s"] for x in rs), 3),
                           "rows_per_s_extracting": round(rs[0]["rows"] / min(x["extract_s"] for x in rs), 1),
                           "wall_s_runs": [round(x["wall_s"], 2) for x in rs],
                           "extract_s_runs": [round(x["extract_s"], 2) for x in rs]}
    one = results["1"] if "1" in results else None
    report = {
        "clips": clips, "clip_seconds": 2.0 if args.quick else 10.0, "rows": runs[procs[0]][0]["rows"],
        "modalities": "video + audio", "backbone": "efficientnet_lite0", "image_size": args.image_size,
        "crop": "centre", "engine": "onnxruntime", "cores": cores, "machine": platform.machine(),
        "repeats": repeats, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results,
        "speedup_over_1": {n: {k: round(r[k] / one[k], 3) for k in ("clips_per_s", "clips_per_s_extracting")}
                           for n, r in results.items()} if one else {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
