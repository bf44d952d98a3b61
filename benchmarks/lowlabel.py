"""Low-label study: test top-1 at several label fractions, scratch vs each pretraining objective.

For every objective and seed, the encoders are pretrained once without labels (all clips), then the
classifier is trained on a stratified fraction of the training labels and evaluated on the test
split. Also reports video→audio retrieval recall@1/5 of each pretrained model on the test split.
Needs the caches and prototypes (`dvc repro prototypes`).

    python benchmarks/lowlabel.py           # → reports/bench/lowlabel.json and lowlabel.md
    python benchmarks/lowlabel.py --quick   # 1 seed, 2 fractions, short schedules (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from cmmvt import config
from cmmvt.eval import evaluate
from cmmvt.train import loop
from cmmvt.selfsup import pretrain as pt

OBJECTIVES = ["none", "xdc", "infonce", "protonce"]
FRACTIONS = [0.05, 0.1, 0.25, 1.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/lowlabel.json"))
    args = ap.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    fractions = FRACTIONS[1::2] if args.quick else args.fractions
    short = ["pretrain.epochs=2", "train.epochs=2"] if args.quick else []
    top1: dict[str, dict[str, list[float]]] = {o: {str(f): [] for f in fractions} for o in OBJECTIVES}
    pairs: dict[str, dict[str, list[float]]] = {o: {str(f): [] for f in fractions} for o in OBJECTIVES}
    retrieval: dict[str, list[dict[str, float]]] = {o: [] for o in OBJECTIVES}
    with tempfile.TemporaryDirectory() as tmp:
        for objective in OBJECTIVES:
            for seed in seeds:
                base = [f"pretrain.objective={objective}", f"seed={seed}"] + short
                enc = Path(tmp) / f"{objective}-{seed}.pt"
                pt.pretrain(config.load("params.yaml", base), enc, live_dir=None)
                retrieval[objective].append(torch.load(enc, weights_only=True)["metrics"])
                for f in fractions:
                    p = config.load("params.yaml", base + [f"train.label_fraction={f}"])
                    model = Path(tmp) / "model.pt"
                    loop.train(p, model, live_dir=None, pretrained=enc)
                    m = evaluate.evaluate(p, model, Path(tmp) / "eval")
                    top1[objective][str(f)].append(m["top1"])
                    pairs[objective][str(f)].append(m.get("order_pairs_top1", float("nan")))
                print(objective, seed, {f: v[-1] for f, v in top1[objective].items()}, retrieval[objective][-1],
                      flush=True)
    report = {"top1": top1, "order_pairs_top1": pairs, "retrieval": retrieval, "seeds": len(seeds),
              "fractions": fractions}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(report))
    print(table(report))


def table(report: dict) -> str:
    """Markdown: test top-1 and order-only pairs top-1, one row per objective, one column per label fraction."""
    text = _table(report, "top1")
    if "order_pairs_top1" in report:
        text += "\nOrder-only pairs (classes that share one modality and differ in the temporal order of the other):\n\n"
        text += _table(report, "order_pairs_top1")
    return text


def _table(report: dict, key: str) -> str:
    """One row per objective, one column per label fraction (mean ± std over seeds), plus retrieval recall."""
    fr = report["fractions"]
    lines = ["| objective | " + " | ".join(f"labels {f:g}" for f in fr) + " | retrieval R@1 | R@5 |",
             "|---|" + "---|" * (len(fr) + 2)]
    for o, by_f in report[key].items():
        cells = [f"{np.mean(by_f[str(f)]):.3f} ± {np.std(by_f[str(f)]):.3f}" for f in fr]
        r = report["retrieval"][o]
        r1 = np.mean([x.get("retrieval/recall@1", np.nan) for x in r])
        r5 = np.mean([x.get("retrieval/recall@5", np.nan) for x in r])
        lines.append(f"| {'scratch' if o == 'none' else o} | " + " | ".join(cells) + f" | {r1:.3f} | {r5:.3f} |")
    chance = np.mean([x.get("retrieval/chance@1", np.nan) for x in report["retrieval"]["none"]])
    return "\n".join(lines) + (f"\n\nTest {key}, mean ± std over {report['seeds']} seeds; "
                               f"retrieval chance@1 = {chance:.3f}.\n")


if __name__ == "__main__":
    main()
