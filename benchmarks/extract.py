"""Benchmark: extraction throughput (rows/s) per modality, all measured in one run.

(a) decode only: rows prepared exactly as cmmvt does (video: frames sampled by timestamp, resized inside
    the colour conversion, cut into views; audio: decoded, log-mel windows, images);
(b) the frozen CNN only, on those prepared rows at the extraction batch size, per engine (``onnxruntime``,
    ``torch``: eager torch since #27, the frozen TorchScript trace before; ``benchmarks/engines.py``);
(c) cmmvt end to end (decoding thread + batched CNN + HDF5 cache), default engine;
(d) naive baseline: video: decode every frame full size to numpy, pick the frames, CNN at batch 1;
    audio: the whole waveform in memory, one log-mel, CNN at batch 1; torch engine.
Decoding and the CNN each use every core, so back to back they bound (c): ``1 / (1/a + 1/b)``. Overlap can
beat that bound where either leaves cores idle. The **work bound** has every core busy with nothing but
decoding and the CNN, each at the least CPU time per row it took alone: ``cores / (cpu_a + cpu_b)`` (CPU time
of all the process's threads; an estimate from parts timed alone, not a strict ceiling). Reported:
(c)/bound, (c)/(d), the work bound over (d) (about what (c)/(d) could reach), (b) onnxruntime/torch (best and
median runs), CPU ms per row of each, and for video the same with ``extract.fast_decode``. Where
``openvino`` is installed, (b) also for the same graph under OpenVINO.
Each measurement is repeated (``--repeats``, interleaved so background load hits all alike) and the best
rate kept: on a shared 2-core machine single timings of the same work varied by ±30 %.

    python benchmarks/extract.py --preset real      # Kinetics-like clips at 224 px → reports/bench/extract-real.json
    python benchmarks/extract.py                    # synthetic 128-px clips → reports/bench/extract-synthetic.json
    python benchmarks/extract.py --quick            # 3 short clips, for CI

The real preset: 10-s 30-fps H.264 (x264 defaults, B-frames) + AAC clips, four 640×360, two 1280×720 and one
640×480, showing photographs and speech (``benchmarks/realav.py``); ``--crop centre`` (one CNN input per
frame, like (d)) unless ``--crop`` says otherwise.

``--memory`` measures instead the peak resident memory of extracting one clip (both modalities,
efficientnet_lite0, ``--image-size``) in a fresh process per clip, for a 10-s clip and a 1-hour one
(320×180, 25 fps, H.264 + AAC, written frame by frame so the generator holds no video either): memory
must not grow with a video's length (target: the hour within +200 MB of the 10 s).

    python benchmarks/extract.py --memory --image-size 224   # writes reports/bench/extract-memory.json
    python benchmarks/extract.py --memory --quick            # 10 s vs 2 min

``--segments`` times decoding (rows prepared, no CNN) of a 10-s segment 5 minutes into a 10-minute clip: seeking
to it (the product), decoding from the start up to it (what a reader without seeking does) and the same 10 s cut
to a file of its own (the bound); and three overlapping segments in one shared pass against one at a time.

    python benchmarks/extract.py --segments                  # writes reports/bench/extract-segments.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from cmmvt import distributed, media
from cmmvt.features import backbones, batching, extract, logmel, pieces
from cmmvt.data import synth
from cmmvt.config import ExtractParams, SynthParams


def _timed(fn) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process (all its threads) and the result of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


class _OpenVino:
    """The same ONNX graph compiled by OpenVINO for the CPU (a comparison made by
    ``benchmarks/extract.py`` only, measured when ``openvino`` is installed: no faster than ONNX Runtime on
    this project's AMD EPYC, so not one of cmmvt's engines)."""

    def __init__(self, onnx: Path, threads: int) -> None:
        import openvino as ov

        model = ov.convert_model(str(onnx))
        self.compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.request.infer({0: x.contiguous().numpy()})[0].copy())


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


# The child's own peak (VmHWM, kB): a new process image starts its own, whereas getrusage's ru_maxrss keeps the
# parent's peak across fork and exec.
_CHILD = """
import re, sys, json
from pathlib import Path
from cmmvt.features import extract
from cmmvt.config import ExtractParams
p = ExtractParams(image_size=int(sys.argv[2]), out=sys.argv[3])
s = extract.run([extract.Item("clip", Path(sys.argv[1]))], p, show_progress=False)
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"rows": [x.rows for x in s], "seconds": [x.seconds for x in s], "peak_rss_mib": hwm / 1024}))
"""


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of extracting a short and a long clip, each in a fresh process."""
    import subprocess
    import sys

    durations = [10.0, 120.0 if args.quick else args.long]
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def real_clips(folder: Path, quick: bool) -> list[Path]:
    """Kinetics-like clips: 10 s, 30 fps, H.264 (x264 defaults: B-frames, CRF 23) + AAC; four 640×360, two
    1280×720 and one 640×480 (4:3), showing photographs and speech (``benchmarks/realav.py``)."""
    import realav  # benchmarks/realav.py: this folder is on sys.path when a benchmark runs as a script

    sizes = [(640, 360)] * 4 + [(1280, 720)] * 2 + [(640, 480)]
    seconds = 2.0 if quick else 10.0
    rng = np.random.default_rng(0)
    speaker = realav.Speaker()
    paths = []
    for i, (w, h) in enumerate(sizes[:2] if quick else sizes):
        word = realav.WORDS[i % len(realav.WORDS)]
        path = folder / f"real{i}_{w}x{h}.mp4"
        media.encode_clip(path, realav.render_video(rng, word, w, h, int(seconds * 30)), 30,
                          realav.render_audio(rng, speaker, word, "en-us", seconds), realav.SPEECH_RATE, crf=23)
        paths.append(path)
    return paths


def synthetic_clips(folder: Path, quick: bool, clips: int) -> list[Path]:
    """The embedded synthetic set's clips: 4 s (1 s with ``quick``), 128×128, 25 fps."""
    clips = 3 if quick else clips
    sp = SynthParams(classes=min(clips, 10), clips_per_class=-(-clips // 10), duration=1.0 if quick else 4.0)
    return synth.make_dataset(folder, sp, seed=0)[:clips]


def _inputs(items: list[extract.Item], p: ExtractParams, modality: str) -> list[torch.Tensor]:
    """Everything the CNN would see, decoded and prepared exactly as cmmvt does: (a) on its own."""
    blocks = []
    for it in items:
        blocks += [piece.inputs for piece in pieces.clip_pieces(it, modality, p) if piece.rows]
    return blocks


def _naive(paths: list[Path], p: ExtractParams, bb: backbones.Backbone, modality: str) -> int:
    if modality == "video":
        return naive(paths, p, bb)
    rows = 0
    for path in paths:  # the whole waveform in memory, log-mel of it all, one window at a time
        info = media.probe(path)
        wave = media.load_audio(path, p.audio.sample_rate).samples  # (N,)
        t = media.sample_times(info.duration, p.fps)
        win = logmel.windows(logmel.LogMel(p.audio)(torch.from_numpy(wave)), t, p.audio)
        stats = logmel.clip_stats([win]) if p.audio.norm == "clip" else None  # once per clip
        for w in win:
            bb.embed_images(logmel.to_images(w[None], p.audio.image and tuple(p.audio.image), p.audio.norm, stats))
            rows += 1
    return rows


def speed(args: argparse.Namespace) -> None:
    """(a)–(d) per modality and engine on one preset, interleaved repeats, best rate kept."""
    repeats = 1 if args.quick else args.repeats
    p = ExtractParams(image_size=args.image_size, batch_size=32, workers=1, crop=args.crop)
    fast = p.model_copy(update={"fast_decode": True})
    engines = list(backbones.ENGINES)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        paths = (real_clips(folder, args.quick) if args.preset == "real"
                 else synthetic_clips(folder, args.quick, args.clips))
        items = [extract.Item(f"c{i}", path) for i, path in enumerate(paths)]
        bbs = {e: backbones.create(p.backbone, p.weights, image_size=p.image_size, engine=e) for e in engines}
        bb = bbs[p.engine]
        try:  # the same graph under OpenVINO, for comparison only
            bbs["openvino"] = copy.copy(bbs["onnxruntime"])
            bbs["openvino"].runner = _OpenVino(bbs["onnxruntime"].runner.path, torch.get_num_threads())
        except ImportError:
            bbs.pop("openvino")
        cores = distributed.cores()
        report: dict[str, object] = {
            "preset": args.preset, "cores": cores, "clips": [f"{x.name}" for x in paths], "backbone": p.backbone,
            "image_size": p.image_size, "batch_size": p.batch_size, "threads": torch.get_num_threads(),
            "decode_workers": p.workers, "engine": p.engine, "machine": platform.machine(), "repeats": repeats}
        for modality in ("video", "audio"):
            embed = ((lambda b, x: batching.embed_views(b)([x])) if modality == "video"  # (n, V, S, S, 3) views
                     else (lambda b, x: b.embed_images(x)))
            for b in bbs.values():  # warm-up
                embed(b, _inputs(items[:1], p, modality)[0][: p.batch_size])
            runs: dict[str, list[float]] = {"decode_only": [], "cmmvt": [], "naive": [],
                                            **{f"cnn_only_{e}": [] for e in bbs}}
            if modality == "video":
                runs |= {"decode_only_fast": [], "cmmvt_fast": []}
            cpu: dict[str, list[float]] = {k: [] for k in runs}  # CPU ms per row, all threads

            def record(kind: str, rows: int, wall: float, cpu_s: float) -> None:
                runs[kind].append(rows / wall)
                cpu[kind].append(1000 * cpu_s / rows)

            for r in range(repeats):
                t, c, blocks = _timed(lambda: _inputs(items, p, modality))
                x = torch.cat(blocks)  # (n, ...) every row the CNN sees
                n = len(x)
                record("decode_only", n, t, c)
                for e, b in bbs.items():
                    t, c, _ = _timed(lambda b=b: [embed(b, x[i : i + p.batch_size]) for i in range(0, n, p.batch_size)])
                    record(f"cnn_only_{e}", n, t, c)
                t, c, s = _timed(lambda: extract.run_modality(items, p, modality, bb, out=Path(tmp) / f"f{modality}{r}"))
                assert s.rows == n and not s.failed, (s.rows, n, s.failures)
                record("cmmvt", n, t, c)
                t, c, n_naive = _timed(lambda: _naive(paths, p, bbs["torch"], modality))
                record("naive", n_naive, t, c)
                if modality == "video":  # extract.fast_decode: non-reference frames skipped
                    t, c, _ = _timed(lambda: _inputs(items, fast, modality))
                    record("decode_only_fast", n, t, c)
                    t, c, _ = _timed(lambda: extract.run_modality(items, fast, modality, bb, out=Path(tmp) / f"fast{r}"))
                    record("cmmvt_fast", n, t, c)
            best = {k: max(v) for k, v in runs.items()}
            least = {k: min(v) for k, v in cpu.items()}
            # Decoding (a) and the CNN (b) each use every core, so running them back to back bounds (c):
            # (c) <= 1 / (1/a + 1/b). Overlap can only beat it where they leave cores idle.
            bound = 1 / (1 / best["decode_only"] + 1 / best[f"cnn_only_{p.engine}"])
            # The work bound: every core busy with nothing but decoding and the CNN, each at the least CPU
            # time per row it took alone. An estimate from parts timed alone, not a strict ceiling: a part may
            # burn less CPU per row beside the other (audio (c) came out 5 % above it once).
            work = {k: least["decode_only" + k] + least[f"cnn_only_{p.engine}"] for k in ("", "_fast")
                    if "decode_only" + k in least}
            report[modality] = {
                "rows": n, "rows_per_s": {k: round(v, 2) for k, v in best.items()},
                "torch_bound": round(1 / (1 / best["decode_only"] + 1 / best["cnn_only_torch"]), 2),
                "rows_per_s_runs": {k: [round(v, 2) for v in vs] for k, vs in runs.items()},
                "cpu_ms_per_row": {k: round(v, 2) for k, v in least.items()},
                "cmmvt_cores_busy": round(least["cmmvt"] * best["cmmvt"] / 1000, 2),
                "work_bound": round(1000 * cores / work[""], 2),
                **({"work_bound_fast": round(1000 * cores / work["_fast"], 2)} if "_fast" in work else {}),
                "bound": round(bound, 2), "cmmvt_over_bound": round(best["cmmvt"] / bound, 3),
                "cmmvt_over_naive": round(best["cmmvt"] / best["naive"], 3),
                "work_bound_over_naive": round(1000 * cores / work[""] / best["naive"], 3),
                "cnn_onnxruntime_over_torch": round(best["cnn_only_onnxruntime"] / best["cnn_only_torch"], 3),
                "cnn_onnxruntime_over_torch_median": round(float(np.median(runs["cnn_only_onnxruntime"]))
                                                           / float(np.median(runs["cnn_only_torch"])), 3),
            }
            print(modality, json.dumps(report[modality]), flush=True)
    report["targets"] = {"cnn_onnxruntime_over_torch": 1.7, "cmmvt_over_bound": 0.9, "cmmvt_over_naive": 2.5}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def segments(args: argparse.Namespace) -> None:
    """Decoding a segment of a long video (seeking) against decoding up to it and against the segment cut to a file
    of its own (the bound); overlapping segments in one pass against one at a time. Decoding and row preparation
    only (frame views and log-mel images, both modalities): the CNN's cost per row is the same either way."""
    long_s, at = (60.0, 30.0) if args.quick else (600.0, 300.0)
    p = ExtractParams(image_size=args.image_size, workers=0)

    def decode(items: list[extract.Item], together: bool = True) -> float:
        """Seconds to prepare every row of ``items`` (in one pass where they share one, else one by one)."""
        t0 = time.perf_counter()
        for mod in ("video", "audio"):
            for unit in ([items] if together else [[it] for it in items]):
                for piece in pieces.pass_pieces(unit, mod, p):
                    assert piece.error is None, piece.error
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        film, cut = Path(tmp) / "film.mp4", Path(tmp) / "cut.mp4"
        write_long_clip(film, long_s)
        write_long_clip(cut, 10.0)
        seg = [extract.Item("seg", film, (at, at + 10))]
        overlapping = [extract.Item(f"o{k}", film, (at + d, at + d + 10)) for k, d in enumerate((0.0, 4.0, 8.0))]
        runs = {"segment (seek)": [], f"decode from 0 to {at + 10:g} s": [], "cut to its own file (bound)": [],
                "3 overlapping segments, one pass": [], "3 overlapping segments, one at a time": []}
        for _ in range(1 if args.quick else args.repeats):  # interleaved; the best run of each kept
            runs["segment (seek)"].append(decode(seg))
            runs[f"decode from 0 to {at + 10:g} s"].append(decode([extract.Item("prefix", film, (0.0, at + 10))]))
            runs["cut to its own file (bound)"].append(decode([extract.Item("cut", cut)]))
            runs["3 overlapping segments, one pass"].append(decode(overlapping))
            runs["3 overlapping segments, one at a time"].append(decode(overlapping, together=False))
    best = {k: min(v) for k, v in runs.items()}
    report = {"clip": f"{long_s:g}-s 320x180 25 fps H.264 (keyframe every 10 s) + AAC 16 kHz",
              "segment": f"10 s at {at:g} s", "image_size": args.image_size, "seconds": best,
              "from_start_over_seek": best[f"decode from 0 to {at + 10:g} s"] / best["segment (seek)"],
              "seek_over_bound": best["segment (seek)"] / best["cut to its own file (bound)"],
              "one_at_a_time_over_one_pass": best["3 overlapping segments, one at a time"]
              / best["3 overlapping segments, one pass"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--memory", action="store_true", help="peak RSS of a 10-s vs a long clip instead of speed")
    ap.add_argument("--segments", action="store_true", help="a segment of a long video (seeking) vs decoding up to "
                    "it and vs its own file; overlapping segments in one pass vs one at a time")
    ap.add_argument("--long", type=float, default=3600.0, help="--memory: the long clip's seconds (default: 1 hour)")
    ap.add_argument("--preset", choices=["synthetic", "real"], default="synthetic")
    ap.add_argument("--clips", type=int, default=24, help="synthetic preset: how many clips")
    ap.add_argument("--image-size", type=int, default=None, help="CNN input side (default: 224 real, 128 synthetic)")
    ap.add_argument("--crop", default="centre", help="extract.crop (centre: one CNN input per frame, as naive (d))")
    ap.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs (1 with --quick)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.image_size is None:
        args.image_size = 224 if args.preset == "real" or args.memory else 128
    if args.memory:
        args.out = args.out or Path("reports/bench/extract-memory.json")
        return memory(args)
    if args.segments:
        args.out = args.out or Path("reports/bench/extract-segments.json")
        return segments(args)
    args.out = args.out or Path(f"reports/bench/extract-{args.preset}.json")
    return speed(args)


if __name__ == "__main__":
    main()
