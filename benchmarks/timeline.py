"""Where in a long video: how right are ``predict --timeline``'s segments, and what does an hour cost?

Long videos are built from the test clips (and, to choose on, the val clips) of the real-content set
(``benchmarks/realav.py``: photographs with their names spoken, mixed sizes and containers) and of the synthetic
set, in a seeded order in which consecutive clips differ in class, each cut to a random 60–100 % of its length
(boundaries anywhere, not on a window grid) and letterboxed into one 320×240 frame at 4 fps, and encoded as one
H.264/AAC file of about 1, 2, 5 and 10 minutes with known boundaries. The model of ``params.yaml`` (all labels,
3 seeds, from scratch) is trained on each set's train split. Each video goes through the real path once —
``predict --timeline`` in its own process (decode, frozen CNN, cache, windows), whose wall time and peak memory
are recorded (kept beside the cache, so a rerun reuses them) — and its cache then serves every seed and
post-processing variant:

* **independent windows** (the baseline): windows of one training crop side by side, each row labelled by its
  window, no merging;
* **overlapping windows**: every half window, rows averaging the windows that cover them, no merging;
* **overlapping, min segment of a window**: and runs shorter than one window join a neighbour;
* **overlapping, min segment, smoothing**: and a moving average of one window over the rows' probabilities;
* **half windows, overlapping**: windows of half a training crop every quarter crop, no merging.

The variant with the best frame accuracy on long videos of the *val* clips (1 × 2 and 1 × 5 minutes) is chosen;
the test videos only report.

Scores, as in action segmentation (MS-TCN, Farha & Gall 2019): frame accuracy (rows whose segment label is the
truth at their time), segment F1 at IoU 0.5 (a predicted segment matches an unmatched true one of the same
class overlapping it by IoU ≥ 0.5), and boundary error (seconds from each true boundary to the nearest
predicted one). The ceiling is the same model's accuracy on the same clips classified whole (duration-weighted,
from their own caches, uncut).

    python benchmarks/timeline.py            # → reports/bench/timeline.{json,md}
    python benchmarks/timeline.py --quick    # tiny real-content set, one 20-s val and one test video, 1 seed (CI)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cmmvt import config, media
from cmmvt.eval import timeline
from cmmvt.train import loop
from cmmvt.train.dataset import ClipDataset, splits
from cmmvt.eval.inference import eval_frames, predict
from cmmvt.checkpoints import load_checkpoint
from cmmvt.data import manifest

import lowlabel  # benchmarks/lowlabel.py: the real-content and synthetic sets it prepares (this folder is on sys.path)

FPS, W, H, SR = 4, 320, 240, 16000
VARIANTS = {  # timeline options in training crops (× the model's crop_frames / fps seconds)
    "independent windows": {"window": 1, "stride": 1, "min_segment": 0},
    "overlapping windows": {"window": 1, "stride": 0.5, "min_segment": 0},
    "overlapping, min segment of a window": {"window": 1, "stride": 0.5, "min_segment": 1},
    "overlapping, min segment, smoothing": {"window": 1, "stride": 0.5, "min_segment": 1, "smooth": 1},
    "half windows, overlapping": {"window": 0.5, "stride": 0.25, "min_segment": 0}}
# Peak memory is the child's VmHWM (kB): a new process image starts its own, whereas getrusage's ru_maxrss keeps
# the parent's peak across fork and exec (this benchmark's parent holds models and videos: ~2 GB).
CHILD = """import re, sys, time
from pathlib import Path
from cmmvt.cli import app
t0 = time.perf_counter()
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    hwm = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
    print(f"BENCH {time.perf_counter() - t0:.3f} {hwm}", file=sys.stderr)
"""


def letterbox(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) → (H, W, 3): scaled to fit, centred on black (nearest-neighbour; sizes differ clip to clip)."""
    h, w = rgb.shape[:2]
    s = min(W / w, H / h)
    nh, nw = max(2, int(h * s)), max(2, int(w * s))
    ys, xs = (np.arange(nh) / s).astype(int).clip(0, h - 1), (np.arange(nw) / s).astype(int).clip(0, w - 1)
    out = np.zeros((H, W, 3), np.uint8)
    out[(H - nh) // 2 : (H - nh) // 2 + nh, (W - nw) // 2 : (W - nw) // 2 + nw] = rgb[ys][:, xs]
    return out


def build(clips: list[tuple[Path, str]], out: Path, rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """Decode ``clips`` at 4 fps, keep a random 60–100 % of each from its start (so that boundaries fall anywhere,
    not on a grid of clip lengths: the synthetic clips all last 4 s, one window), letterbox, and encode them as
    one file; returns the true segments (seconds)."""
    frames, waves, truth, t = [], [], [], 0.0
    for path, label in clips:
        f = [letterbox(rgb) for rgb, _ in media.iter_frames(path, FPS)]
        f = f[: max(2, round(len(f) * rng.uniform(0.6, 1.0)))]
        audio = media.load_audio(path, SR)
        wave = np.zeros(len(f) * SR // FPS, np.float32)  # the clip's length in frames, silence where audio ends
        if audio is not None:
            wave[: len(audio.samples)] = audio.samples[: len(wave)]
        frames += f
        waves.append(wave)
        truth.append((t, t + len(f) / FPS, label))
        t += len(f) / FPS
    media.encode_clip(out, np.stack(frames), FPS, np.concatenate(waves), SR, preset="veryfast", crf=23)
    return truth


def order(ids: list[str], labels: list[str], minutes: float, durations: dict[str, float],
          rng: np.random.Generator) -> list[int]:
    """Clip indices, consecutive ones of different classes, until ``minutes`` are filled (clips may repeat)."""
    out: list[int] = []
    total = 0.0
    while total < minutes * 60:
        pool = [i for i in rng.permutation(len(ids)) if not out or labels[i] != labels[out[-1]]]
        out.append(int(pool[0]))
        total += durations[ids[out[-1]]]
    return out


def scores(tl: timeline.Timeline, truth: list[tuple[float, float, str]]) -> dict[str, float]:
    """Frame accuracy, segment F1 at IoU 0.5 and mean boundary error (s) of one timeline against the truth."""
    t = tl.centres()  # (T,)
    true = np.full(len(t), -1)
    for a, b, label in truth:
        true[(t >= a) & (t < b)] = tl.labels.index(label)
    pred = tl.row_labels()
    keep = true >= 0
    used, tp = set(), 0
    for s in tl.segments:
        for j, (a, b, label) in enumerate(truth):
            inter = max(0.0, min(b, s.end) - max(a, s.start))
            if j not in used and label == s.label and inter / (max(b, s.end) - min(a, s.start)) >= 0.5:
                used.add(j)
                tp += 1
                break
    fp, fn = len(tl.segments) - tp, len(truth) - tp
    cuts = np.array([s.end for s in tl.segments[:-1]] or [np.inf])
    errors = [np.abs(cuts - b).min() for _, b, _ in truth[:-1]]
    return {"frame_accuracy": float((pred[keep] == true[keep]).mean()), "segment_f1": 2 * tp / (2 * tp + fp + fn),
            "boundary_error_s": float(np.mean(errors)) if errors else 0.0, "segments": len(tl.segments),
            "true_segments": len(truth)}


def options(variant: dict, window: float) -> dict:
    """:func:`timeline.timeline` options (seconds) of a variant given in training crops of ``window`` seconds."""
    return {k: v * window for k, v in variant.items()}


def run_set(name: str, base: list[str], work: Path, minutes: dict[str, list[float]], seeds: list[int],
            picture: Path) -> dict:
    """Build the long videos of one set (``minutes`` per split: val videos choose, test videos report), train the
    default model per seed, time ``predict --timeline`` on each video and score every post-processing variant;
    the first seed's shortest test video, with its attention rollout, becomes ``picture``."""
    p = config.load("params.yaml", base)
    sp, names = splits(manifest.read(p.data.manifest), p.extract.out, ("video", "audio"))
    df = manifest.read(p.data.manifest).set_index("video_id")
    report: dict = {"dataset": name, "clips": {s: len(sp[s].ids) for s in minutes}, "runs": []}
    videos = []
    for split, lengths in minutes.items():
        s = sp[split]
        durations = {i: media.probe(df.loc[i, "path"]).duration for i in s.ids}
        for k, m in enumerate(lengths):
            idx = order(s.ids, [names[y] for y in s.labels], m / 0.8, durations, np.random.default_rng(k))  # (cuts)
            path = work / f"timeline-{name}-{'' if split == 'test' else split + '-'}{m:g}min-cut.mp4"
            truth_file = path.with_suffix(".json")
            if not truth_file.is_file():
                truth_file.write_text(json.dumps(build([(Path(df.loc[s.ids[i], "path"]), names[s.labels[i]])
                                                        for i in idx], path, np.random.default_rng(100 + k))))
            videos.append((split, m, path, json.loads(truth_file.read_text()), idx))
    for seed in seeds:
        model_path = work / f"timeline-{name}-model-{seed}.pt"
        if not model_path.is_file():
            loop.train(config.load("params.yaml", base + [f"seed={seed}", "train.init=scratch"]), model_path,
                       live_dir=None)
        model, ckpt = load_checkpoint(model_path)
        right = {}
        for split in minutes:  # (N,) each clip classified whole, from its own cache
            s = sp[split]
            ds = ClipDataset(p.extract.out, s.ids, s.labels, model.modalities, eval_frames(p), views=p.evaluate.views)
            right[split] = predict(model, ds).argmax(1) == np.asarray(s.labels)
        window = ckpt["params"]["model"]["crop_frames"] / FPS
        for split, m, path, truth, idx in videos:
            cache_dir = path.with_name(path.stem + "-cache")
            cost = cache_dir.with_name(cache_dir.name + "-cost.json")  # the one run that decoded the video
            if not cost.is_file():
                shutil.rmtree(cache_dir, ignore_errors=True)
                cmd = [sys.executable, "-c", CHILD, "predict", str(path), "--timeline", "--model", str(model_path),
                       "--cache", str(cache_dir), "--out", str(work / "timeline-out"), "--json"]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                seconds, hwm_kb = res.stderr.strip().splitlines()[-1].split()[1:]
                cost.write_text(json.dumps({"wall_s": float(seconds), "peak_rss_mb": int(hwm_kb) / 1024}))
            dur = sum(b - a for a, b, _ in truth)
            ceiling = float(np.average(right[split][idx], weights=[b - a for a, b, _ in truth]))
            row = {"split": split, "seed": seed, "minutes": m, "duration_s": dur, **json.loads(cost.read_text()),
                   "ceiling_clip_accuracy": ceiling, "variants": {}}
            for vname, variant in VARIANTS.items():
                [tl] = timeline.from_cache(cache_dir, [path.stem], model_path, **options(variant, window))
                row["variants"][vname] = scores(tl, [tuple(x) for x in truth])
            report["runs"].append(row)
            if split == "test" and seed == seeds[0] and m == minutes["test"][0]:
                [tl] = timeline.from_cache(cache_dir, [path.stem], model_path, explain=True)
                timeline.plot(tl, picture)
            print(name, split, seed, m, {k: round(v["frame_accuracy"], 3) for k, v in row["variants"].items()},
                  f"ceiling {ceiling:.3f}", f"{row['wall_s']:.0f} s", f"{row['peak_rss_mb']:.0f} MB", flush=True)
    return report


def chosen(report: dict) -> str:
    """The variant with the best mean frame accuracy on the val videos (test never looked at)."""
    val = [x for x in report["runs"] if x["split"] == "val"]
    return max(VARIANTS, key=lambda v: np.mean([x["variants"][v]["frame_accuracy"] for x in val]))


def table(reports: list[dict]) -> str:
    out = []
    for r in reports:
        runs = [x for x in r["runs"] if x["split"] == "test"]
        seeds = sorted({x["seed"] for x in runs})
        best = chosen(r)
        out += [f"**{r['dataset']}** (long videos of {r['clips']['test']} test clips, "
                f"{', '.join(f'{m:.3g}' for m in sorted({x['minutes'] for x in runs}))} min; {len(seeds)} seeds, "
                "mean ± std over seeds of the mean over videos; val = the same on videos of val clips, to choose)", "",
                "| post-processing | val frame accuracy | frame accuracy | segment F1@0.5 | boundary error (s) | "
                "segments / true |", "|---|---|---|---|---|---|"]

        def agg(f, split: str = "test") -> str:
            per_seed = [np.mean([f(x) for x in r["runs"] if x["seed"] == s and x["split"] == split]) for s in seeds]
            return f"{np.mean(per_seed):.3f} ± {np.std(per_seed):.3f}"

        for v in VARIANTS:
            name = f"**{v}** (chosen on val)" if v == best else v
            out.append(f"| {name} | {agg(lambda x: x['variants'][v]['frame_accuracy'], 'val')} | "
                       f"{agg(lambda x: x['variants'][v]['frame_accuracy'])} | "
                       f"{agg(lambda x: x['variants'][v]['segment_f1'])} | "
                       f"{agg(lambda x: x['variants'][v]['boundary_error_s'])} | "
                       f"{agg(lambda x: x['variants'][v]['segments'] / x['variants'][v]['true_segments'])} |")
        out.append(f"| ceiling: the same clips classified whole | {agg(lambda x: x['ceiling_clip_accuracy'], 'val')} | "
                   f"{agg(lambda x: x['ceiling_clip_accuracy'])} | | | |")
        out += ["", "| video | wall (s) | seconds per hour of video | peak memory (MB) |", "|---|---|---|---|"]
        for m in sorted({x["minutes"] for x in runs}):
            x = next(x for x in runs if x["minutes"] == m)
            out.append(f"| {m:.3g} min | {x['wall_s']:.0f} | {x['wall_s'] / x['duration_s'] * 3600:.0f} | "
                       f"{x['peak_rss_mb']:.0f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny real-content set, one 20-s video, 1 seed (CI)")
    ap.add_argument("--data", nargs="+", default=["realav", "synth"], choices=["realav", "synth"])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10], help="test videos")
    ap.add_argument("--val-minutes", type=float, nargs="+", default=[2, 5], help="val videos (choose the variant)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/timeline.json"))
    args = ap.parse_args()
    reports = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for data in ["realav"] if args.quick else args.data:
        work = args.work or Path("data/bench") / f"lowlabel-{data}{'-quick' if args.quick else ''}"
        work.mkdir(parents=True, exist_ok=True)
        sets = (lowlabel.prepare_realav if data == "realav" else lowlabel.prepare_synth)(work, args.quick)
        name, base = next(iter(sets.items()))  # synth: the labelled clips are the same in both pools
        base = base + (lowlabel.QUICK if args.quick else [])
        t0 = time.perf_counter()
        minutes = {"val": [1 / 3], "test": [1 / 3]} if args.quick else {"val": args.val_minutes, "test": args.minutes}
        reports.append(run_set(name, base, work, minutes, [0] if args.quick else args.seeds,
                               args.out.parent / f"timeline-{name}.png"))
        print(name, f"{time.perf_counter() - t0:.0f} s", flush=True)
    args.out.write_text(json.dumps(reports, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(reports))
    print(table(reports))


if __name__ == "__main__":
    main()
