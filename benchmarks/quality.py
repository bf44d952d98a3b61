"""Quality bar on the default synthetic dataset: test top-1 over 3 seeds per model variant.

Trains and evaluates each variant on the existing caches (run `dvc repro extract` first), with the
params of params.yaml plus the variant's overrides, and reports mean ± std of test top-1 and the
accuracy on the order-only class pairs (classes that differ only in the temporal order of one
modality), where an order-blind mean-pooling model must fail.

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

from cmmvt import config
from cmmvt.eval import evaluate
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


def run(name: str, overrides: list[str], seed: int, tmp: Path, extra: list[str]) -> dict[str, float]:
    p = config.load("params.yaml", overrides + extra + [f"seed={seed}", "train.init=scratch"])  # the classifier alone
    work = tmp / f"{name.replace(' ', '_')}-{seed}"
    t0 = time.perf_counter()
    loop.train(p, work / "model.pt", live_dir=None)
    m = evaluate.evaluate(p, work / "model.pt", work / "eval")
    return {"top1": m["top1"], "order_pairs_top1": m.get("order_pairs_top1", float("nan")),
            "seconds": time.perf_counter() - t0}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    rows = ["| variant | test top-1 | order-only pairs top-1 | train+eval s |", "|---|---|---|---|"]
    for name, runs in results.items():
        top1 = np.array([r["top1"] for r in runs])
        pairs = np.array([r["order_pairs_top1"] for r in runs])
        secs = np.mean([r["seconds"] for r in runs])
        rows.append(f"| {name} | {top1.mean():.3f} ± {top1.std():.3f} | {pairs.mean():.3f} ± {pairs.std():.3f} "
                    f"| {secs:.0f} |")
    return "\n".join(rows) + f"\n\n{len(next(iter(results.values())))} seeds (mean ± std over seeds).\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/quality.json"))
    args = ap.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    variants = dict(list(VARIANTS.items())[:2]) if args.quick else VARIANTS
    extra = ["train.epochs=2", "train.min_steps=0"] if args.quick else []
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in variants.items():
            results[name] = [run(name, overrides, s, Path(tmp), extra) for s in seeds]
            print(name, results[name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
