"""Benchmark: extraction throughput (clips/s) and training steps/s with 1, 2, … processes on this machine
(torchrun, gloo).

Each run is the real command a user types, in a fresh process tree and a fresh output folder:
``cmmvt extract`` / ``cmmvt train`` for one process, ``torchrun --standalone --nproc_per_node N … cmmvt …``
for N.

**Extraction**, both modalities (each rank gets ``cores // N`` CNN threads and one decoding thread). Two rates
per run:

* ``clips_per_s``: clips over the command's wall time, start-up (importing torch, torchrun's rendezvous,
  loading the CNN) included;
* ``clips_per_s_extracting``: clips over the extraction time that rank 0 reports (the slowest rank's,
  both modalities), start-up excluded.

Clips are the Kinetics-like ones of ``benchmarks/extract.py --preset real`` (10 s, 30 fps, H.264 + AAC;
640×360, 1280×720 and 640×480; photographs and speech), the seven twice over (14 clips);
efficientnet_lite0 at 224 px, ``crop: centre``, ONNX Runtime. Runs are interleaved over N and repeated
(``--repeats``), the best rate kept: on this shared machine single timings of the same work varied by ±30 %.

**Training** (``"train"`` in the report): ``cmmvt train`` data-parallel (DDP, gloo) on a cache of random
float16 rows (240 clips of 16 rows × 1280, the size of efficientnet_lite0's embeddings, 3 classes; 144
training clips),
params.yaml's defaults otherwise (``model.*``, ``train.batch_size: 16``, the global batch): 9 optimiser steps
an epoch, 6 epochs. ``steps_per_s`` is optimiser steps over the time rank 0 spends in them (validation and
start-up excluded); one process uses torch's default threads, each of N ranks ``cores // N``; ``1x1`` is one
process at one thread (``OMP_NUM_THREADS=1``), a control.

    python benchmarks/scale.py                 # N = 1, 2 and powers of two up to the cores → reports/bench/scale.json
    python benchmarks/scale.py --parts train   # training only: replaces "train" in an existing report
    python benchmarks/scale.py --quick         # 2 short clips and a tiny cache, N = 1 and 2, one repeat, for CI
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
TRAIN_LINE = re.compile(r"\((\d+) epochs run, (\d+) steps at ([\d.e+]+) steps/s\)")


def cmmvt(procs: int, out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run ``cmmvt ARGS`` as the user would with ``procs`` processes (and ``env`` added to the environment), in
    ``out``'s parent folder (no params.yaml there: cmmvt's defaults); return its stderr and wall seconds."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200",
           **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "cmmvt.cli", *args], capture_output=True, text=True, env=env,
                          cwd=out.parent)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{procs} processes: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc.stderr, wall


def timed_run(procs: int, folder: Path, out: Path, image_size: int, clips: int) -> dict[str, float]:
    """One extraction of ``folder`` by ``procs`` processes: wall and extraction seconds, rows."""
    err, wall = cmmvt(procs, out, "extract", "--videos", str(folder), "--out", str(out),
                      "-S", f"extract.image_size={image_size}", "-S", "extract.crop=centre")
    lines = LINE.findall(err)
    if len(lines) != 2 or any(int(ok) != clips for _, ok, *_ in lines):
        raise RuntimeError(f"{procs} processes: not every clip extracted\n{err[-3000:]}")
    return {"wall_s": wall, "extract_s": sum(float(s) for *_, s in lines), "rows": sum(int(r) for *_, r, _ in lines)}


def timed_train(procs: int, cache: Path, out: Path, epochs: int, env: dict[str, str] | None = None
                ) -> dict[str, float]:
    """One ``cmmvt train`` on the cache under ``cache`` by ``procs`` processes: wall seconds, steps, steps/s."""
    err, wall = cmmvt(procs, out, "train", "--out", str(out / "model.pt"), "-S", f"data.manifest={cache / 'manifest.csv'}",
                      "-S", f"extract.out={cache / 'features'}", "-S", f"train.epochs={epochs}", "-S", "train.min_steps=0",
                      "-S", "train.init=scratch", env=env)  # training throughput: no pretrained encoders to load
    found = TRAIN_LINE.search(err)
    if found is None:
        raise RuntimeError(f"{procs} processes: no result line\n{err[-3000:]}")
    return {"wall_s": wall, "steps": int(found[2]), "steps_per_s": float(found[3])}


def extraction(procs: list[int], repeats: int, quick: bool, image_size: int) -> dict:
    """Extraction clips/s per process count (the report's top-level keys)."""
    from extract import real_clips  # benchmarks/extract.py

    load_before = os.getloadavg()  # other work on the machine skews both counts alike: reported, not hidden
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for path in real_clips(folder, quick):
            if not quick:  # the seven clips twice over
                shutil.copy(path, path.with_name(f"{path.stem}_copy{path.suffix}"))
        clips = len(list(folder.iterdir()))
        timed_run(1, folder, Path(tmp) / "warm-up", image_size, clips)  # exports the ONNX graph once
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in procs}
        for r in range(repeats):
            for n in procs:
                runs[n].append(timed_run(n, folder, Path(tmp) / f"p{n}-{r}", image_size, clips))
                print(n, "processes:", json.dumps(runs[n][-1]), flush=True)
    results = {}
    for n, rs in runs.items():
        results[str(n)] = {"clips_per_s": round(clips / min(x["wall_s"] for x in rs), 3),
                           "clips_per_s_extracting": round(clips / min(x["extract_s"] for x in rs), 3),
                           "rows_per_s_extracting": round(rs[0]["rows"] / min(x["extract_s"] for x in rs), 1),
                           "wall_s_runs": [round(x["wall_s"], 2) for x in rs],
                           "extract_s_runs": [round(x["extract_s"], 2) for x in rs]}
    one = results["1"] if "1" in results else None
    return {
        "clips": clips, "clip_seconds": 2.0 if quick else 10.0, "rows": runs[procs[0]][0]["rows"],
        "modalities": "video + audio", "backbone": "efficientnet_lite0", "image_size": image_size,
        "crop": "centre", "engine": "onnxruntime", "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results,
        "speedup_over_1": {n: {k: round(r[k] / one[k], 3) for k in ("clips_per_s", "clips_per_s_extracting")}
                           for n, r in results.items()} if one else {},
    }


def training(procs: list[int], repeats: int, quick: bool) -> dict:
    """Training steps/s per process count (the report's ``"train"``)."""
    from train import make_tiny_cache  # benchmarks/train.py

    clips, rows, dim, epochs = (20, 16, 64, 1) if quick else (240, 16, 1280, 6)
    # "1x1": one process at one thread, the control that tells the ranks' own gain from the cost of threads
    configs = {str(n): (n, None) for n in procs} | ({} if quick else {"1x1": (1, {"OMP_NUM_THREADS": "1"})})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_cache(Path(tmp), clips=clips, rows=rows, dim=dim)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        for r in range(repeats):
            for name, (n, env) in configs.items():
                out = Path(tmp) / f"train-{name}-{r}"
                out.mkdir()
                runs[name].append(timed_train(n, Path(tmp), out, epochs, env))
                print(name, "processes, train:", json.dumps(runs[name][-1]), flush=True)
    results = {str(n): {"steps_per_s": max(x["steps_per_s"] for x in rs), "wall_s": round(min(x["wall_s"] for x in rs), 2),
                        "steps_per_s_runs": [x["steps_per_s"] for x in rs], "wall_s_runs": [round(x["wall_s"], 2) for x in rs]}
               for n, rs in runs.items()}
    one = results.get("1")
    return {
        "clips": clips, "train_clips": clips * 3 // 5, "rows": rows, "dim": dim, "epochs": epochs,
        "steps": runs[str(procs[0])][0]["steps"], "batch_size": 16, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results,
        "speedup_over_1": {n: {"steps_per_s": round(r["steps_per_s"] / one["steps_per_s"], 3),
                               "whole_command": round(one["wall_s"] / r["wall_s"], 3)}
                           for n, r in results.items()} if one else {},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--procs", type=int, nargs="+", default=None,
                    help="process counts (default: 1, 2 and powers of two up to the cores)")
    ap.add_argument("--parts", nargs="+", choices=["extract", "train"], default=["extract", "train"],
                    help="what to measure; a part left out keeps its results from the report at --out")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs (1 with --quick)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/scale.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    cores = len(os.sched_getaffinity(0))
    procs = args.procs or ([1, 2] if args.quick else sorted({1, 2, *(2**k for k in range(1, 8) if 2**k <= cores)}))
    repeats = 1 if args.quick else args.repeats
    report = json.loads(args.out.read_text()) if set(args.parts) != {"extract", "train"} and args.out.exists() else {}
    report |= {"cores": cores, "machine": platform.machine(), "repeats": repeats}
    if "extract" in args.parts:
        report |= extraction(procs, repeats, args.quick, args.image_size)
    if "train" in args.parts:
        report["train"] = training(procs, repeats, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
