"""Low-label study: does cross-modal pretraining pay off when labels are few?

For every objective and seed, the encoders are pretrained once without labels on ``pretrain.splits`` (train,
val and the unlabelled pool; test held out), then the classifier is trained with 1, 2, 5 and all labels per
class (the same nested, seeded draw for every objective; scheduled for ≥ 200 optimiser steps, :data:`SCHEDULE`) under
two protocols:

* **fine-tune**: every weight trained from the pretrained init (``train.init: pretrained``);
* **linear probe**: the pretrained graph frozen, only the head trained (``train.freeze_encoder: true``);

and scored on the test split (never pretrained on); scratch (no pretraining) is fine-tuned from a random init.
Each pretrained model also reports video→audio retrieval recall@1/5 among the test clips, against chance.

Two datasets, both with an unlabelled pool:

* ``synth``: the default synthetic set (``params.yaml``; needs ``dvc repro prototypes``);
* ``realav``: the real-content set of ``benchmarks/realav.py`` (objects and their spoken names), generated,
  extracted with the default features and clustered here, with ``--pool`` unlabelled clips per class.

    python benchmarks/lowlabel.py                      # synth → reports/bench/lowlabel-synth.{json,md}
    python benchmarks/lowlabel.py --data realav        # → reports/bench/lowlabel-realav.{json,md}
    python benchmarks/lowlabel.py --quick              # 1 seed, 2 objectives, short schedules (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cmmvt import config
from cmmvt.data import manifest
from cmmvt.eval import evaluate
from cmmvt.features import extract
from cmmvt.selfsup import pretrain as pt
from cmmvt.selfsup import prototypes as protos
from cmmvt.train import loop

OBJECTIVES = ["none", "xdc", "infonce", "protonce", "sync", "combined"]
LABELS = ["1", "2", "5", "all"]  # labels per class
# ~200 optimiser steps or more whatever the labels (batch 16): the default 40 epochs are 40 steps at 1 label per
# class, where every init is still improving when training stops (best epochs 30–70 of 200 measured)
SCHEDULE = {"1": ["train.epochs=200", "train.patience=50"], "2": ["train.epochs=100", "train.patience=25"],
            "5": ["train.epochs=60", "train.patience=20"], "all": []}
PROTOCOLS = {"finetune": ["train.freeze_encoder=false"], "probe": ["train.freeze_encoder=true"]}


def realav_data(work: Path, per_class: int, pool: int, quick: bool) -> list[str]:
    """Generate (or reuse) the real-content clips with an unlabelled pool, extract them and fit prototypes.

    Returns:
        The params overrides that point every stage at them.
    """
    import realav

    csv = work / "clips.csv"
    if not csv.is_file():
        realav.make(work, per_class=per_class, unlabelled=pool, classes=4 if quick else 10,
                    durations=(2.0, 3.0) if quick else (3.0, 5.0))
    base = ["data.source=csv", f"data.csv={csv}", f"data.root={work}", f"data.manifest={work}/manifest.csv",
            f"extract.out={work}/features", f"paths.prototypes={work}/prototypes.h5",
            *(["extract.image_size=64"] if quick else [])]
    p = config.load("params.yaml", base)
    manifest.prepare(p.data, seed=p.data.seed)
    items, _ = extract.discover(p.data.manifest)
    extract.run(items, p.extract, "both", show_progress=False)
    protos.build(p, metrics_path=work / "prototypes.json")
    return base


def study(base: list[str], objectives: list[str], labels: list[str], seeds: list[int], work: Path,
          schedule: dict[str, list[str]]) -> dict:
    """Pretrain, then train and test every (objective, seed, labels per class, protocol), with the training
    schedule of each labels-per-class count (``schedule``)."""
    test: dict[str, dict[str, dict[str, list[float]]]] = {}
    retrieval: dict[str, list[dict[str, float]]] = {o: [] for o in objectives}
    for objective in objectives:
        protocols = ["finetune"] if objective == "none" else list(PROTOCOLS)
        test[objective] = {proto: {n: [] for n in labels} for proto in protocols}
        for seed in seeds:
            common = base + [f"pretrain.objective={objective}", f"seed={seed}"]
            enc = work / f"enc-{objective}-{seed}.pt"
            t0 = time.perf_counter()
            pt.pretrain(config.load("params.yaml", common), enc, live_dir=None)
            retrieval[objective].append(torch.load(enc, weights_only=True)["metrics"] |
                                        {"seconds": time.perf_counter() - t0})
            for proto in protocols:
                for n in labels:
                    p = config.load("params.yaml", common + PROTOCOLS[proto] + schedule.get(n, []) +
                                    [f"train.labels_per_class={'null' if n == 'all' else n}"])
                    loop.train(p, work / "model.pt", live_dir=None, pretrained=enc)
                    test[objective][proto][n].append(evaluate.evaluate(p, work / "model.pt", work / "eval")["top1"])
                print(objective, seed, proto, {n: v[-1] for n, v in test[objective][proto].items()}, flush=True)
            print(objective, seed, retrieval[objective][-1], flush=True)
    return {"top1": test, "retrieval": retrieval, "labels": labels, "seeds": len(seeds), "seed_list": seeds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["synth", "realav"], default="synth")
    ap.add_argument("--quick", action="store_true", help="1 seed, scratch and one objective, short schedules")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--objectives", nargs="+", default=OBJECTIVES, choices=OBJECTIVES)
    ap.add_argument("--labels", nargs="+", default=LABELS)
    ap.add_argument("--per-class", type=int, default=30, help="realav: labelled clips per class")
    ap.add_argument("--pool", type=int, default=30, help="realav: unlabelled clips per class")
    ap.add_argument("--work", type=Path, help="realav: keep clips, features and prototypes here (reused)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="extra params, key=value")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (two studies side by side: 1 each)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--merge", type=Path, nargs="+", help="only merge these reports (runs split over seeds or "
                                                          "objectives) into --out")
    args = ap.parse_args()
    out = args.out or Path(f"reports/bench/lowlabel-{args.data}.json")
    if args.merge:
        return write(merge([json.loads(f.read_text()) for f in args.merge]), out)
    torch.set_num_threads(args.threads)
    objectives = ["none", "combined"] if args.quick else args.objectives
    labels = ["1", "all"] if args.quick else args.labels
    short = ["pretrain.epochs=2", "train.epochs=2"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = []
        if args.data == "realav":
            data = args.work or work / "realav"
            data.mkdir(parents=True, exist_ok=True)
            base = realav_data(data, 3 if args.quick else args.per_class, 2 if args.quick else args.pool, args.quick)
        report = study(base + short + args.overrides, objectives, labels, [0] if args.quick else args.seeds, work,
                       {} if args.quick else SCHEDULE)
    write(report | {"data": args.data, "overrides": args.overrides}, out)


def write(report: dict, out: Path) -> None:
    """The report as JSON and its table as Markdown beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(report))
    print(table(report))


def merge(reports: list[dict]) -> dict:
    """One report from several of one dataset (e.g. seeds or objectives run apart): results concatenated."""
    if len({(r["data"], tuple(r["overrides"]), tuple(r["labels"])) for r in reports}) > 1:
        raise ValueError("lowlabel --merge: the reports differ in data, overrides or labels")
    out = {k: reports[0][k] for k in ("data", "overrides", "labels")} | {"top1": {}, "retrieval": {}}
    for r in reports:
        for objective, by_proto in r["top1"].items():
            for proto, by_n in by_proto.items():
                for n, values in by_n.items():
                    out["top1"].setdefault(objective, {}).setdefault(proto, {}).setdefault(n, []).extend(values)
            out["retrieval"].setdefault(objective, []).extend(r["retrieval"][objective])
    out["seeds"] = min(len(v) for v in out["retrieval"].values())
    return out


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(report: dict) -> str:
    """Markdown: one row per objective and protocol, one column per labels-per-class count, mean ± std over seeds;
    then video→audio retrieval R@1/R@5 on the test clips against chance."""
    labels = report["labels"]
    lines = ["| objective | protocol | " + " | ".join(f"{n} / class" for n in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for objective, by_proto in report["top1"].items():
        for proto, by_n in by_proto.items():
            name = "scratch" if objective == "none" else objective
            lines.append(f"| {name} | {proto} | " + " | ".join(_cell(by_n[n]) for n in labels) + " |")
    lines += ["", "| objective | seeds | R@1 | R@5 | chance@1 | pretraining (s) |", "|---|---|---|---|---|---|"]
    for objective, runs in report["retrieval"].items():
        get = lambda k: [r.get(k, np.nan) for r in runs]  # noqa: E731
        lines.append(f"| {'scratch (untrained)' if objective == 'none' else objective} | {len(runs)}"
                     f" | {_cell(get('retrieval/recall@1'))}"
                     f" | {_cell(get('retrieval/recall@5'))} | {np.mean(get('retrieval/chance@1')):.3f}"
                     f" | {np.mean(get('seconds')):.0f} |")
    return "\n".join(lines) + (f"\n\nTest top-1 and test-clip video→audio retrieval ({report['data']}), mean ± std over "
                               "each objective's seeds (second table).\n")


if __name__ == "__main__":
    main()
