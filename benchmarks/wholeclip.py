"""Whole-clip vs 4-s crop evaluation on long synthetic clips: test top-1, 3 seeds, paired 95 % intervals.

Generates the synthetic set at a clip duration where a 16-row training crop is part of the clip (10 s: the crop
is the middle 40 %; on the default 4-s clips the crop *is* the whole clip and the two agree by construction),
extracts it with the params of params.yaml, trains the default model from scratch (16-row training crops) and
evaluates the same checkpoint twice: whole clips in one pass (the default, ``evaluate.max_frames: null``) and the
centred 16-row crop of earlier versions (``evaluate.max_frames=16 evaluate.views=1``). The synthetic patterns
span the whole clip (a disk crosses the frame once per clip), so the crop sees part of what the classes are made
of. The set is sized so its test split resolves a few points: 40 clips per class split 30 / 20 / 50 % (200 test
clips), no unlabelled pool. The difference is paired (same checkpoints, same clips; :mod:`cmmvt.eval.intervals`).

    python benchmarks/wholeclip.py            # 10-s clips, 3 seeds → reports/bench/wholeclip.{json,md}
    python benchmarks/wholeclip.py --quick    # 3 classes × 4 clips, 1 seed, 2 epochs (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cmmvt import config
from cmmvt.eval import evaluate, intervals
from cmmvt.features import extract
from cmmvt.data import manifest, synth
from cmmvt.train import loop

EVALS = {"whole clip": [], "centre crop 16": ["evaluate.max_frames=16", "evaluate.views=1"]}


SIZE = ["data.synth.clips_per_class=40", "data.synth.unlabelled_clips_per_class=0", "data.splits.train=0.3",
        "data.splits.val=0.2", "data.splits.test=0.5"]


def run_duration(duration: float, seeds: range, tmp: Path, extra: list[str]) -> dict[str, list[str]]:
    """Per evaluation, one string per seed: right (1) / wrong (0) per test clip in the split's order."""
    root = tmp / f"d{duration:g}"
    base = [f"data.root={root / 'clips'}", f"data.manifest={root / 'manifest.csv'}", f"extract.out={root / 'feats'}",
            f"data.synth.duration={duration}", *extra]
    p = config.load("params.yaml", base)
    synth.make_dataset(p.data.root, p.data.synth, seed=p.data.seed)
    manifest.prepare(p.data, seed=p.data.seed)
    items, _ = extract.discover(p.data.manifest)
    extract.run(items, p.extract, show_progress=False)
    out: dict[str, list[str]] = {name: [] for name in EVALS}
    for seed in seeds:
        ps = config.load("params.yaml", base + [f"seed={seed}", "train.init=scratch"])  # evaluation, no pretraining
        model = root / f"model{seed}.pt"
        loop.train(ps, model, live_dir=None)
        for name, overrides in EVALS.items():
            pe = config.load("params.yaml", base + [f"seed={seed}", *overrides])
            folder = root / f"eval{seed}-{len(overrides)}"
            evaluate.evaluate(pe, model, folder)
            pred = pd.read_csv(folder / "predictions.csv", dtype=str)
            out[name].append("".join("01"[a == b] for a, b in zip(pred.actual, pred.predicted)))
        print(duration, seed, {k: f"{v[-1].count('1') / len(v[-1]):.3f}" for k, v in out.items()}, flush=True)
    return out


def _scores(bits: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in b] for b in bits], dtype=float)  # (seeds, clips)


def table(results: dict[str, dict[str, list[str]]], rows_per_s: float) -> str:
    """Markdown: per duration, both evaluations [95 % interval] and their paired difference."""
    whole, crop = EVALS
    lines = [f"| clip length | rows per clip | test clips | {whole} (one pass) | {crop} | {whole} − {crop} (paired) |",
             "|---|---|---|---|---|---|"]
    for duration, r in results.items():
        a, b = _scores(r[whole]), _scores(r[crop])
        d = intervals.bootstrap(a, b)
        lines.append(f"| {duration} s | {int(float(duration) * rows_per_s)} | {a.shape[1]} | {intervals.bootstrap(a)} | "
                     f"{intervals.bootstrap(b)} | {d.signed()}{'' if d.excludes_zero else ' (no difference)'} |")
    seeds = len(next(iter(next(iter(results.values())).values())))
    return "\n".join(lines) + (f"\n\nTest top-1, {seeds} seeds: mean [95 % bootstrap interval over seeds and clips]; "
                               "the same checkpoint evaluated both ways.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--durations", type=float, nargs="+", default=[10.0])
    ap.add_argument("--out", type=Path, default=Path("reports/bench/wholeclip.json"))
    args = ap.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    extra = (["data.synth.classes=3", "data.synth.clips_per_class=4", "data.synth.unlabelled_clips_per_class=0",
              "data.synth.size=64", "extract.backbone=none", "extract.image_size=64", "train.epochs=2",
              "train.min_steps=0"] if args.quick else SIZE)
    durations = [2.0, 5.0] if args.quick else args.durations
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in durations:
            results[f"{d:g}"] = run_duration(d, seeds, Path(tmp), extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = table(results, config.load("params.yaml").extract.fps)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
