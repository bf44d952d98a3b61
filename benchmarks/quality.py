"""Quality bar on the synthetic dataset: test top-1 per model variant, 3 seeds, with 95 % intervals.

Trains (the classifier alone, from scratch) and evaluates each variant on the workspace's caches (run `dvc repro
extract` first; the published table runs on the grid preset, `cmmvt preset grid`: 240 test clips), with the params
of params.yaml plus the variant's overrides. Reports test top-1 and the accuracy on the order-only class pairs
(classes that differ only in the temporal order of one modality, where an order-blind mean-pooling model must fail)
with a 95 % bootstrap interval over seeds and test clips, and each variant's paired difference against the default
architecture (same seeds, same clips; :mod:`cmmvt.eval.intervals`).

    python benchmarks/quality.py            # 3 seeds → reports/bench/quality.json and quality.md
    python benchmarks/quality.py --quick    # 1 seed, 2 epochs, 2 variants (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cmmvt import config
from cmmvt.data import synth
from cmmvt.eval import evaluate, intervals
from cmmvt.train import loop

VARIANTS = {  # overrides of params.yaml (default: av, early fusion, local attention)
    "av (early, local)": [],
    "av (early, global)": ["model.attention=global"],
    "av (late, local)": ["model.fusion=late"],
    "video": ["model.modalities=video"],
    "audio": ["model.modalities=audio"],
    "av meanpool (early)": ["model.encoder=meanpool"],
    "av meanpool (late)": ["model.encoder=meanpool", "model.fusion=late"],
}


def run(name: str, overrides: list[str], seed: int, tmp: Path, extra: list[str]) -> dict:
    """Train and evaluate one variant and seed; per test clip (in the split's order) right or wrong."""
    p = config.load("params.yaml", overrides + extra + [f"seed={seed}", "train.init=scratch"])  # the classifier alone
    work = tmp / f"{name.replace(' ', '_')}-{seed}"
    t0 = time.perf_counter()
    loop.train(p, work / "model.pt", live_dir=None)
    m = evaluate.evaluate(p, work / "model.pt", work / "eval")
    pred = pd.read_csv(work / "eval" / "predictions.csv", dtype=str)
    order = {c for pair in synth.order_only_pairs() for c in pair}
    return {"top1": m["top1"], "order_pairs_top1": m.get("order_pairs_top1", float("nan")),
            "seconds": time.perf_counter() - t0, "clips": "".join("01"[a == b] for a, b in zip(pred.actual, pred.predicted)),
            "order_clips": [i for i, a in enumerate(pred.actual) if a in order]}


def _scores(runs: list[dict], order_only: bool = False) -> np.ndarray:
    """(seeds, clips) right / wrong; only the order-only pairs' clips with ``order_only``."""
    m = np.array([[c == "1" for c in r["clips"]] for r in runs], dtype=float)
    return m[:, runs[0]["order_clips"]] if order_only else m


def table(results: dict[str, list[dict]]) -> str:
    """Markdown: per variant, test top-1 and order-only pairs top-1 [95 % interval], the paired difference against
    the first variant (the default architecture) and the seconds."""
    ref = next(iter(results))
    rows = [f"| variant | test top-1 | − {ref} (paired) | order-only pairs top-1 | train+eval s |",
            "|---|---|---|---|---|"]
    for name, runs in results.items():
        top1, pairs = _scores(runs), _scores(runs, order_only=True)
        diff = intervals.bootstrap(top1, _scores(results[ref])) if name != ref else None
        cell = "reference" if diff is None else diff.signed() + ("" if diff.excludes_zero else " (no difference)")
        rows.append(f"| {name} | {intervals.bootstrap(top1)} | {cell} | "
                    f"{intervals.bootstrap(pairs) if pairs.size else '–'} | {np.mean([r['seconds'] for r in runs]):.0f} |")
    runs = next(iter(results.values()))
    return "\n".join(rows) + (f"\n\n{len(runs)} seeds × {len(runs[0]['clips'])} test clips ({len(runs[0]['order_clips'])} of "
                              "them in order-only pairs): mean over seeds [95 % bootstrap interval over seeds and clips]; "
                              "paired differences on the same seeds and clips.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/quality.json"))
    args = ap.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    variants = dict(list(VARIANTS.items())[:2]) if args.quick else VARIANTS
    extra = ["train.epochs=2", "train.min_steps=0"] if args.quick else []
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in variants.items():
            results[name] = [run(name, overrides, s, Path(tmp), extra) for s in seeds]
            print(name, [round(r['top1'], 3) for r in results[name]], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
