"""Defaults chosen on validation: one axis at a time around ``params.yaml``, on two sets, 3 seeds, paired intervals.

The sets are those of :mod:`lowlabel` (same work folders, features and unlabelled pools): ``synth-240`` (the
synthetic set at benchmark size, **540 test clips**, 180 val) and ``realav`` (objects shown and their names spoken,
**300 test clips**, 100 val). Every configuration trains on all labels; each axis varies one key around the
reference (``params.yaml``'s value, all other keys fixed):

====================  =====================================================
axis                  values
====================  =====================================================
fusion                ``model.fusion``: early, late
attention             ``model.attention``: local, global
pool                  ``model.pool``: both, cls, mean
window                ``model.window``: 4, 2, 8
crop                  ``model.crop_frames``: 16, 8, 32
schedule              ``train.epochs`` 40 / 80, ``train.lr`` 1e-3 / 3e-4
====================  =====================================================

An axis runs with the default pretraining (``pretrain.objective`` of ``params.yaml``, pretrained once per
configuration and seed on train + val + the pool) or, to save its cost, from scratch (``--scratch-axes``; the
reference is then also trained from scratch, so the comparison stays paired). Every value of an axis sees the
same seeds, clips and pretraining data.

**Rule** (written beside the table): the reference stays unless an alternative's paired val difference against it
is positive on *both* sets and its 95 % interval (bootstrap over seeds and val clips,
:mod:`cmmvt.eval.intervals`) excludes 0 on at least one; among several such, the best mean val over the two
sets. Test is reported only, with the paired test difference and its interval ("no difference" where it holds 0).
An axis swept from scratch is confirmed with pretraining (run again with it left out of ``--scratch-axes``) before a
default changes.

Runs are journaled in the work folders (:func:`lowlabel.study`): an interrupted sweep resumes, and the reference
runs of the low-label study are reused.

    python benchmarks/defaults.py --sets synth-240 --threads 1 &   # the two sets side by side on 2 cores
    python benchmarks/defaults.py --sets realav --threads 1
    python benchmarks/defaults.py                                  # gathers both from the journals → reports/bench/defaults.{json,md}
    python benchmarks/defaults.py --quick                          # tiny real-content set, 1 seed, 2 axes (CI)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import lowlabel
from cmmvt import config
from cmmvt.eval import intervals

AXES: dict[str, list[dict[str, object]]] = {  # axis → candidate values, each a set of params
    "fusion": [{"model.fusion": v} for v in ("early", "late")],
    "attention": [{"model.attention": v} for v in ("local", "global")],
    "pool": [{"model.pool": v} for v in ("both", "cls", "mean")],
    "window": [{"model.window": v} for v in (4, 2, 8)],
    "crop": [{"model.crop_frames": v} for v in (16, 8, 32)],
    "schedule": [{"train.epochs": e, "train.lr": lr} for e, lr in ((40, 0.001), (80, 0.001), (40, 0.0003))],
}
SCRATCH_AXES = ["pool", "window", "crop"]  # default: swept without pretraining (cost); confirm a change with it
SETS = ["synth-240", "realav"]
QUICK_AXES = {"attention": AXES["attention"], "pool": AXES["pool"][:2]}


def values(candidates: list[dict[str, object]], base: list[str]) -> list[tuple[str, list[str]]]:
    """``(label, overrides)`` per candidate, the reference (the one ``params.yaml`` + ``base`` already gives) first
    with no overrides, so its runs are shared by every axis and with the low-label study's journal."""
    p = config.load("params.yaml", base)
    out = []
    for c in candidates:
        overrides = [f"{k}={v}" for k, v in c.items() if config.lookup(p, k) != v]
        out.append((", ".join(f"{k.split('.')[-1]} {v}" for k, v in c.items()), overrides))
    refs = [v for v in out if not v[1]]
    if len(refs) != 1:
        raise SystemExit(f"the defaults ({[config.lookup(p, k) for k in candidates[0]]}) are not among {candidates}")
    return refs + [v for v in out if v[1]]


def sweep(name: str, base: list[str], axes: dict[str, list[dict[str, object]]], scratch: set[str],
          seeds: list[int], work: Path) -> dict:
    """Train every value of every axis (``lowlabel.study`` per configuration, all labels) and keep per-clip scores.

    Returns:
        ``{"dataset", "sizes", "axes": {axis: {"pretraining", "values": {label: {"val": [...], "test": [...],
        "seconds": [...]}}}}}`` with one per-clip bit string per seed.
    """
    objective = config.load("params.yaml", base).pretrain.objective
    out: dict = {"dataset": name, "axes": {}}
    for axis, candidates in axes.items():
        pre = "none" if axis in scratch else objective
        rows = {}
        for label, overrides in values(candidates, base):
            report = lowlabel.study(name, base + overrides, [pre], ["finetune"], ["all"], 1, seeds, work)
            runs = sorted((r for r in report["runs"] if "·" in r["method"]), key=lambda r: r["seed"])
            rows[label] = {"overrides": overrides, **{k: [r[k] for r in runs] for k in ("val", "test", "seconds")}}
            out["sizes"] = report["sizes"]
        out["axes"][axis] = {"pretraining": pre, "values": rows}
    return out


def _m(bits: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in b] for b in bits], dtype=float)  # (seeds, clips)


def choose(reports: list[dict], axis: str) -> tuple[str, str]:
    """The value kept for ``axis`` by the rule of the module docstring, and why, in words."""
    labels = list(reports[0]["axes"][axis]["values"])
    ref = labels[0]
    winners = []
    for label in labels[1:]:
        diffs = [intervals.bootstrap(_m(r["axes"][axis]["values"][label]["val"]), _m(r["axes"][axis]["values"][ref]["val"]))
                 for r in reports]
        if all(d.mean > 0 for d in diffs) and any(d.excludes_zero for d in diffs):
            winners.append((np.mean([d.mean for d in diffs]), label))
    if not winners:
        return ref, "no alternative better on val on both sets beyond noise: the reference stays"
    gain, label = max(winners)
    return label, f"better on val on both sets, beyond noise on at least one (+{gain:.3f} mean val gain)"


def table(reports: list[dict]) -> str:
    """Markdown: per axis and value, val and test top-1 per set, the paired test difference against the reference."""
    sets = [r["dataset"] for r in reports]
    sizes = ", ".join(f"{r['dataset']}: {r['sizes']['val']} val / {r['sizes']['test']} test clips" for r in reports)
    seeds = max(len(v["test"]) for a in reports[0]["axes"].values() for v in a["values"].values())
    out = [f"One axis at a time around the defaults; all labels; {seeds} seeds; {sizes}. Cells: test top-1, mean over "
           "seeds [95 % bootstrap interval over seeds and clips] (val: mean over seeds, the full val split). "
           "Δ test: paired difference against the axis's first (reference) value. **Rule**: the reference stays "
           "unless an alternative's paired val difference is positive on both sets and excludes 0 on at least one "
           "(then the best mean val); test only reports.", ""]
    head = " | ".join(f"{s} test (val) | {s} Δ test" for s in sets)
    for axis in reports[0]["axes"]:
        if not all(axis in r["axes"] for r in reports):
            continue
        kept, why = choose(reports, axis)
        pre = reports[0]["axes"][axis]["pretraining"]
        out += [f"**{axis}** ({'from scratch' if pre == 'none' else f'pretrained: {pre}'}): kept **{kept}** — {why}", "",
                f"| {axis} | {head} |", "|---|" + "---|---|" * len(sets)]
        labels = list(reports[0]["axes"][axis]["values"])
        for label in labels:
            cells = []
            for r in reports:
                v = r["axes"][axis]["values"]
                test, ref = _m(v[label]["test"]), _m(v[labels[0]]["test"])
                cells.append(f"{intervals.bootstrap(test)} ({_m(v[label]['val']).mean():.3f})")
                cells.append("reference" if label == labels[0] else lowlabel._diff(intervals.bootstrap(test, ref)))
            name = f"**{label}**" if label == kept else label
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    ap.add_argument("--axes", nargs="+", choices=list(AXES), help="default: all")
    ap.add_argument("--scratch-axes", nargs="*", default=SCRATCH_AXES, choices=list(AXES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="tiny real-content set, 1 seed, 2 small axes (CI)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (two sets side by side: 1 each)")
    ap.add_argument("--work", type=Path, help="work folder root (default: lowlabel's data/bench/lowlabel-<data>)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/defaults.json"))
    ap.add_argument("--table", action="store_true", help="only rewrite the Markdown of --out")
    args = ap.parse_args()
    if args.table:
        reports = json.loads(args.out.read_text())
    else:
        torch.set_num_threads(args.threads)
        axes = QUICK_AXES if args.quick else {a: AXES[a] for a in (args.axes or AXES)}
        sets = ["realav"] if args.quick else args.sets
        reports = []
        for s in sets:
            data = "synth" if s.startswith("synth") else "realav"
            work = (args.work / data if args.work else
                    Path("data/bench") / f"lowlabel-{data}{'-quick' if args.quick else ''}")
            work.mkdir(parents=True, exist_ok=True)
            prepared = (lowlabel.prepare_synth if data == "synth" else lowlabel.prepare_realav)(work, args.quick)
            base = prepared[s] + (lowlabel.QUICK if args.quick else [])
            reports.append(sweep(s, base, axes, set(args.scratch_axes), [0] if args.quick else args.seeds, work))
        if len(sets) < len(SETS) and not args.quick:  # one set of a side-by-side pair: its own file
            args.out = args.out.with_name(f"{args.out.stem}-{sets[0]}.json")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=1) + "\n")
    text = table(reports)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
