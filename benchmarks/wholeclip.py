"""Whole-clip vs 4-s crop evaluation on the synthetic dataset: test top-1 over 3 seeds.

For each clip duration (4 s, the default dataset, where a 16-row crop *is* the whole clip; and 10 s, where
it is the middle 40 %), generates the synthetic set, extracts it with the params of params.yaml, trains
the default model (16-row training crops) and evaluates the same checkpoint twice: whole clips in one pass
(the default, ``evaluate.max_frames: null``) and the centred 16-row crop of earlier versions
(``evaluate.max_frames=16 evaluate.views=1``). The synthetic patterns span the whole clip (a disk crosses
the frame once per clip), so the crop sees part of what the classes are made of.

    python benchmarks/wholeclip.py            # 4 s and 10 s, 3 seeds → reports/bench/wholeclip.{json,md}
    python benchmarks/wholeclip.py --quick    # 3 classes × 4 clips, 1 seed, 2 epochs (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from cmmvt import config
from cmmvt.eval import evaluate
from cmmvt.features import extract
from cmmvt.data import manifest, synth
from cmmvt.train import loop

EVALS = {"whole clip": [], "centre crop 16": ["evaluate.max_frames=16", "evaluate.views=1"]}


def run_duration(duration: float, seeds: range, tmp: Path, extra: list[str]) -> dict[str, list[float]]:
    root = tmp / f"d{duration:g}"
    base = [f"data.root={root / 'clips'}", f"data.manifest={root / 'manifest.csv'}", f"extract.out={root / 'feats'}",
            f"data.synth.duration={duration}", *extra]
    p = config.load("params.yaml", base)
    synth.make_dataset(p.data.root, p.data.synth, seed=p.data.seed)
    manifest.prepare(p.data, seed=p.data.seed)
    items, _ = extract.discover(p.data.manifest)
    extract.run(items, p.extract, show_progress=False)
    out: dict[str, list[float]] = {name: [] for name in EVALS}
    for seed in seeds:
        ps = config.load("params.yaml", base + [f"seed={seed}", "train.init=scratch"])  # evaluation, no pretraining
        model = root / f"model{seed}.pt"
        loop.train(ps, model, live_dir=None)
        for name, overrides in EVALS.items():
            pe = config.load("params.yaml", base + [f"seed={seed}", *overrides])
            out[name].append(evaluate.evaluate(pe, model, root / f"eval{seed}-{len(overrides)}")["top1"])
        print(duration, seed, {k: v[-1] for k, v in out.items()}, flush=True)
    return out


def table(results: dict[str, dict[str, list[float]]], rows_per_s: float) -> str:
    lines = ["| clip length | rows per clip | whole clip (one pass) | centre crop of 16 rows |", "|---|---|---|---|"]
    for duration, r in results.items():
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in r.values()]
        lines.append(f"| {duration} s | {int(float(duration) * rows_per_s)} | {' | '.join(cells)} |")
    return "\n".join(lines) + f"\n\nTest top-1, {len(next(iter(next(iter(results.values())).values())))} seeds " \
                              "(mean ± std); the same checkpoint evaluated both ways.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--durations", type=float, nargs="+", default=[4.0, 10.0])
    ap.add_argument("--out", type=Path, default=Path("reports/bench/wholeclip.json"))
    args = ap.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    extra = (["data.synth.classes=3", "data.synth.clips_per_class=4", "data.synth.size=64", "extract.backbone=none",
              "extract.image_size=64", "train.epochs=2", "train.min_steps=0"] if args.quick else [])
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
