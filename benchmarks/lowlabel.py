"""Low-label study: does cross-modal pretraining pay off when labels are few, with test sets that can see 5 points?

Datasets (each with an unlabelled pool for pretraining; the test split is never pretrained on):

* ``synth-240`` / ``synth-1200``: the synthetic set at a benchmark size — 90 labelled clips per class split
  18 / 18 / 54 (train / val / test: **540 test clips**) — with a pool of 240 or 1,200 unlabelled clips (the
  240 are a seeded subset of the 1,200; same features);
* ``realav``: the real-content set of ``benchmarks/realav.py`` (objects shown and their names spoken), 20 / 10
  / 30 labelled clips per class (**300 test clips**, voices held out) and a pool of 1,200.

Protocol, the same for every method (**paired**): 1, 2, 5 and all labels per class; for 1, 2 and 5, ``--draws``
label draws (``train.label_draw``) × ``--seeds`` model seeds, every method seeing the same labelled clips and
the same test clips; validation inside training keeps as many labels per class as training
(:func:`cmmvt.train.loop._datasets`). The full val split only scores the finished models, to choose defaults
on; the test split only reports. Methods:

* frozen CNN clip-mean features (SimpleShot's CL2N, :mod:`cmmvt.eval.baselines`): nearest-centroid, kNN
  (k = 5, or the labels there are), logistic-regression probe (C = 1);
* the transformer (the product's defaults, ``params.yaml``) from scratch and from each pretraining objective,
  transferred by ``finetune``, ``lp_ft`` and ``probe`` (``train.transfer``); pretraining runs once per objective
  and seed, on train + val + the pool, labels unused.

Every comparison is a paired bootstrap over runs and test clips (:mod:`cmmvt.eval.intervals`) with its 95 %
interval; order-only pairs of the synthetic set (where a bag of frames must fail) are reported apart.

An interrupted study resumes: clips, features, pretrained encoders and every finished run (``runs-*.jsonl``,
keyed by the dataset's overrides) stay in ``--work``; delete them there after changing the training code. The
synthetic pools, or the labels counts of one dataset, can run side by side (``--pools synth-240`` in one
process, ``--pools synth-1200`` in another, then ``--data synth`` gathers both from their journals; each
process trains into its own model file).

    python benchmarks/lowlabel.py --data synth           # → reports/bench/lowlabel-synth.{json,md} (both pools)
    python benchmarks/lowlabel.py --data realav          # → reports/bench/lowlabel-realav.{json,md}
    python benchmarks/lowlabel.py --quick                # tiny real-content set, 1 seed, 2 draws (CI)
    python benchmarks/lowlabel.py --table reports/bench/lowlabel-synth.json   # only rewrite the Markdown
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cmmvt import config
from cmmvt.checkpoints import load_checkpoint
from cmmvt.data import manifest, synth
from cmmvt.eval import baselines, intervals
from cmmvt.eval.inference import eval_frames, predict
from cmmvt.features import extract
from cmmvt.selfsup import pretrain as pt
from cmmvt.selfsup import prototypes as protos
from cmmvt.train import loop
from cmmvt.train.dataset import ClipDataset, Split, per_class_subset, splits

LABELS = ["1", "2", "5", "all"]  # labels per class
TRANSFERS = ["finetune", "lp_ft", "probe"]
FROZEN = {"nearest-centroid": lambda x, y, q: baselines.nearest_centroid(x, y, q),
          "kNN": lambda x, y, q: baselines.knn(x, y, q, k=5),
          "logistic probe": lambda x, y, q: baselines.linear_probe(x, y, q, C=1.0)}
SYNTH = ["data.source=synth", "data.synth.clips_per_class=90", "data.synth.unlabelled_clips_per_class=120",
         "data.splits.train=0.2", "data.splits.val=0.2", "data.splits.test=0.6"]
SYNTH_QUICK = ["data.source=synth", "data.synth.classes=4", "data.synth.clips_per_class=6",
               "data.synth.unlabelled_clips_per_class=3", "data.synth.duration=2.0", "data.synth.size=64",
               "data.splits.train=0.34", "data.splits.val=0.33", "data.splits.test=0.33", "extract.image_size=64"]
QUICK = ["pretrain.epochs=2", "train.epochs=2", "train.min_steps=0", "train.lp_steps=2"]


def _pool_manifest(full: Path, pool: int, out: Path) -> None:
    """``full`` with only ``pool`` of its unlabelled clips (a seeded choice: a subset of the bigger pool)."""
    df = manifest.read(full)
    unlabelled = np.flatnonzero((df["split"] == manifest.UNLABELLED).to_numpy())
    drop = np.random.default_rng(0).permutation(unlabelled)[pool:]
    df.drop(index=df.index[drop]).to_csv(out, index=False)


def _extract_once(p: config.Params, work: Path) -> None:
    """Extract both modalities (resuming an interrupted run) unless a finished extraction is already there: the
    study then reads the features it was started with, whatever changed in ``cmmvt.features`` since."""
    done = work / "features" / "extracted"
    if not done.is_file():
        items, _ = extract.discover(p.data.manifest)
        extract.run(items, p.extract, "both", show_progress=False)
        done.write_text("complete\n")


def prepare_synth(work: Path, quick: bool) -> dict[str, list[str]]:
    """Generate, extract and cluster the benchmark-size synthetic set (reused when ``work`` has it).

    Returns:
        ``{dataset name: params overrides}`` for the pool sizes.
    """
    root = work / "clips"
    base = (SYNTH_QUICK if quick else SYNTH) + [f"data.root={root}", f"paths.synth={root}",
                                                f"data.manifest={work}/manifest.csv", f"extract.out={work}/features"]
    p = config.load("params.yaml", base)
    if not (work / "manifest.csv").is_file():
        synth.make_dataset(root, p.data.synth, seed=p.data.seed, progress=True)
        manifest.prepare(p.data, seed=p.data.seed)
    _extract_once(p, work)
    pools = [p.data.synth.unlabelled_clips_per_class * p.data.synth.classes] if quick else [240, 1200]
    out = {}
    for pool in pools:
        _pool_manifest(work / "manifest.csv", pool, work / f"manifest-{pool}.csv")
        out[f"synth-{pool}"] = base + [f"data.manifest={work}/manifest-{pool}.csv",
                                       f"paths.prototypes={work}/prototypes-{pool}.h5"]
    return out


def prepare_realav(work: Path, quick: bool) -> dict[str, list[str]]:
    """Generate (or reuse), extract and cluster the real-content set with its pool."""
    import realav  # benchmarks/realav.py: this folder is on sys.path when a benchmark runs as a script

    csv = work / "clips.csv"
    if not csv.is_file():
        realav.make(work, classes=4 if quick else 10, unlabelled=3 if quick else 120,
                    counts=(2, 2, 3) if quick else (20, 10, 30), durations=(2.0, 3.0) if quick else (3.0, 5.0))
    base = ["data.source=csv", f"data.csv={csv}", f"data.root={work}", f"data.manifest={work}/manifest.csv",
            f"extract.out={work}/features", f"paths.prototypes={work}/prototypes.h5",
            *(["extract.image_size=64"] if quick else [])]
    p = config.load("params.yaml", base)
    if not (work / "manifest.csv").is_file():
        manifest.prepare(p.data, seed=p.data.seed)
    _extract_once(p, work)
    return {"realav": base}


def _bits(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in correct)


def _scores(p: config.Params, model_path: Path, s: Split) -> str:
    """Per-clip right (1) / wrong (0) of a checkpoint on the clips of ``s``, whole clips as ``evaluate`` reads them."""
    model, _ = load_checkpoint(model_path)
    ds = ClipDataset(p.extract.out, s.ids, s.labels, model.modalities, eval_frames(p), views=p.evaluate.views)
    return _bits(predict(model, ds).argmax(1) == np.asarray(s.labels))


def _draws(n: str, draws: int) -> list[int]:
    return [0] if n == "all" else list(range(draws))


def frozen_runs(p: config.Params, sp: dict[str, Split], labels: list[str], draws: int) -> list[dict]:
    """The frozen-feature baselines for every (labels per class, draw): deterministic, so no seeds."""
    mods = ("video", "audio")
    means = {s: baselines.clip_means(p.extract.out, sp[s].ids, mods) for s in ("train", "val", "test")}
    x = {s: baselines.cl2n(means[s], means["train"]) for s in means}  # centred on the training split (no labels)
    runs = []
    for n in labels:
        for d in _draws(n, draws):
            keep = per_class_subset(sp["train"], None if n == "all" else int(n), d)
            rows = [sp["train"].ids.index(v) for v in keep.ids]
            for name, fit in FROZEN.items():
                pred = {s: fit(x["train"][rows], np.asarray(keep.labels), x[s]) for s in ("val", "test")}
                runs.append({"method": name, "labels": n, "draw": d, "seed": None,
                             **{s: _bits(pred[s] == np.asarray(sp[s].labels)) for s in ("val", "test")}})
    return runs


def _digest(obj: object) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=4).hexdigest()


def _pretrain_key(p: config.Params) -> str:
    """What a pretraining depends on (its params, the model, the prototypes, the data and the seed), hashed."""
    return _digest([p.seed, p.pretrain.model_dump(), p.model.model_dump(), p.prototypes.model_dump(),
                    p.data.manifest, p.extract.out])


def _objective(objective: str) -> list[str]:
    """Overrides for one objective of ``--objectives``; ``a+b`` is ``combined`` with weight 1 on a and b, 0 elsewhere."""
    parts = objective.split("+")
    if len(parts) == 1:
        return [f"pretrain.objective={objective}"]
    weights = config.ObjectiveWeights.model_fields
    unknown = [o for o in parts if o not in weights]
    if unknown:
        raise SystemExit(f"--objectives: {unknown} not among {list(weights)}")
    return ["pretrain.objective=combined"] + [f"pretrain.weights.{w}={float(w in parts)}" for w in weights]


def _transformer_run(base: list[str], objective: str, transfer: str, n: str, draw: int, seed: int,
                     encoder: Path | None, sp: dict[str, Split], model_path: Path) -> dict:
    """Train one transformer (from ``encoder`` when pretrained) and score it clip by clip on val and test."""
    t0 = time.perf_counter()
    p = config.load("params.yaml", base + _objective(objective) + [
        f"seed={seed}", f"train.transfer={transfer}",
        f"train.labels_per_class={'null' if n == 'all' else n}", f"train.label_draw={draw}"])
    r = loop.train(p, model_path, live_dir=None, pretrained=encoder)
    return {"method": f"{'scratch' if objective == 'none' else objective} · {transfer}", "labels": n, "draw": draw,
            "seed": seed, "seconds": time.perf_counter() - t0, "selection_val_top1": r.best_val_top1,
            "best_epoch": r.best_epoch, **{s: _scores(p, model_path, sp[s]) for s in ("val", "test")}}


def study(name: str, base: list[str], objectives: list[str], transfers: list[str], labels: list[str], draws: int,
          seeds: list[int], work: Path) -> dict:
    """Pretrain each objective per seed, then train and score every method, labels count, draw and seed."""
    p0 = config.load("params.yaml", base)
    sp, names = splits(manifest.read(p0.data.manifest), p0.extract.out, ("video", "audio"))
    if not Path(p0.paths.prototypes).is_file():  # (a resumed study keeps its prototypes)
        protos.build(p0, metrics_path=work / f"prototypes-{name}.json")
    report = {"dataset": name, "overrides": base, "labels": labels, "draws": draws, "seeds": seeds, "classes": names,
              "test_labels": sp["test"].labels, "val_labels": sp["val"].labels,
              "sizes": {s: len(sp[s].ids) for s in sp}, "pretraining": {}, "runs": frozen_runs(p0, sp, labels, draws)}
    order = {c for pair in synth.order_only_pairs() for c in pair}
    report["order_pair_clips"] = [i for i, y in enumerate(sp["test"].labels) if names[y] in order]
    encoders = {}
    for objective in [o for o in objectives if o != "none"]:
        for seed in seeds:
            pp = config.load("params.yaml", base + _objective(objective) + [f"seed={seed}"])
            enc = work / f"enc-{name}-{objective}-{seed}-{_pretrain_key(pp)}.pt"
            t0 = time.perf_counter()
            if enc.is_file():  # the same pretraining in an earlier run of the study (train.* variants)
                saved = torch.load(enc, weights_only=True)
                metrics, seconds, loss = saved["metrics"], saved["bench"]["seconds"], saved["bench"]["final_loss"]
            else:
                result = pt.pretrain(pp, enc, live_dir=None)
                metrics, seconds, loss = result.metrics, time.perf_counter() - t0, result.final_loss
                saved = torch.load(enc, weights_only=True)
                torch.save(saved | {"bench": {"seconds": seconds, "final_loss": loss}}, enc)
            report["pretraining"].setdefault(objective, []).append(
                metrics | {"seed": seed, "seconds": seconds, "final_loss": loss})
            encoders[objective, seed] = enc
            print(name, objective, seed, report["pretraining"][objective][-1], flush=True)
    journal = work / f"runs-{name}-{_digest(base)}.jsonl"  # finished runs: an interrupted study resumes
    done = {}
    if journal.is_file():
        for line in journal.read_text().splitlines():
            r = json.loads(line)
            done[r["method"], r["labels"], r["draw"], r["seed"]] = r
    for n in labels:
        for d in _draws(n, draws):
            for seed in seeds:
                for objective in objectives:
                    for transfer in transfers:
                        method = f"{'scratch' if objective == 'none' else objective} · {transfer}"
                        run = done.get((method, n, d, seed))
                        if run is None:
                            run = _transformer_run(base, objective, transfer, n, d, seed, encoders.get((objective, seed)),
                                                   sp, work / f"model-{name}-{os.getpid()}.pt")
                            with journal.open("a") as fh:
                                fh.write(json.dumps(run) + "\n")
                        report["runs"].append(run)
                        print(name, n, d, seed, method, f"test {np.mean([c == '1' for c in run['test']]):.3f}",
                              f"val {np.mean([c == '1' for c in run['val']]):.3f}", f"{run['seconds']:.0f} s", flush=True)
    return report


# ------------------------------------------------------------------------------------------------ tables


def matrix(report: dict, method: str, n: str, split: str = "test") -> np.ndarray:
    """(R, N) per-clip scores of ``method`` at ``n`` labels per class, runs ordered by (draw, seed); a frozen
    baseline (no seed) is repeated over the seeds so that it pairs with every transformer run."""
    runs = {(r["draw"], r["seed"]): r[split] for r in report["runs"] if r["method"] == method and r["labels"] == n}
    keys = sorted({(d, s) for r in report["runs"] if r["labels"] == n and r["seed"] is not None
                   for d, s in [(r["draw"], r["seed"])]})
    rows = [runs.get(k, runs.get((k[0], None))) for k in keys]
    return np.array([[c == "1" for c in row] for row in rows], np.float64)


def methods(report: dict) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in report["runs"]))


def chosen(report: dict, n: str) -> str:
    """The pretrained method with the best mean full-val top-1 at ``n`` labels per class (test never looked at)."""
    pre = [m for m in methods(report) if "·" in m and not m.startswith("scratch")]
    return max(pre, key=lambda m: matrix(report, m, n, "val").mean()) if pre else ""


def table(report: dict) -> str:
    """Markdown: test top-1 [95 % CI] per method and labels count; paired differences; order-only pairs."""
    labels, names = report["labels"], methods(report)
    sizes = report["sizes"]
    head = (f"**{report['dataset']}**: {sizes['test']} test clips, {sizes['val']} val clips, "
            f"{sizes['unlabelled']} unlabelled, {report['draws']} label draws × {len(report['seeds'])} seeds "
            "(paired; 'all': seeds only). Test top-1, mean over runs [95 % bootstrap interval over runs and clips]; "
            "val = the full val split, used to choose.\n")
    cols = " | ".join(f"{n} / class" for n in labels)
    out = [head, f"| method | {cols} |", "|---|" + "---|" * len(labels)]
    for m in names:
        cells = []
        for n in labels:
            x = matrix(report, m, n)
            cells.append(f"{intervals.bootstrap(x)} (val {matrix(report, m, n, 'val').mean():.3f})" if x.size else "–")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += ["", "Paired differences of test top-1 (pretrained method chosen on val at each count − reference):", "",
            f"| comparison | {cols} |", "|---|" + "---|" * len(labels)]
    refs = [("scratch, same transfer", lambda m: "scratch · " + m.split(" · ")[1]),
            ("nearest-centroid", lambda m: "nearest-centroid"), ("scratch · finetune", lambda m: "scratch · finetune")]
    for what, ref in refs:
        cells = []
        for n in labels:
            m = chosen(report, n)
            if not m or ref(m) not in names:
                cells.append("–")
                continue
            d = intervals.bootstrap(matrix(report, m, n), matrix(report, ref(m), n))
            cells.append(f"{m}: {_diff(d)}")
        out.append(f"| vs {what} | " + " | ".join(cells) + " |")
    if report.get("order_pair_clips"):
        idx = report["order_pair_clips"]
        out += ["", f"Order-only pairs ({len(idx)} test clips whose class differs from another only in temporal "
                    "order), test top-1:", "", f"| method | {cols} |", "|---|" + "---|" * len(labels)]
        for m in names:
            out.append(f"| {m} | " + " | ".join(str(intervals.bootstrap(matrix(report, m, n)[:, idx]))
                                                for n in labels) + " |")
    pre = report.get("pretraining", {})
    if pre:
        out += ["", "| objective | seeds | video→audio R@1 (test clips) | chance@1 | final loss | pretraining (s) |",
                "|---|---|---|---|---|---|"]
        for objective, runs in pre.items():
            out.append(f"| {objective} | {len(runs)} | {np.mean([r.get('retrieval/recall@1', np.nan) for r in runs]):.3f}"
                       f" | {np.mean([r.get('retrieval/chance@1', np.nan) for r in runs]):.3f}"
                       f" | {np.mean([r['final_loss'] for r in runs]):.3f} | {np.mean([r['seconds'] for r in runs]):.0f} |")
    return "\n".join(out) + "\n"


def _diff(d: intervals.Interval) -> str:
    return d.signed() + ("" if d.excludes_zero else " (no difference)")


def summary(reports: list[dict]) -> str:
    """One compact Markdown table over datasets: per labels count, the frozen nearest-centroid, scratch (the best
    transfer on val), the pretrained method chosen on val and its paired difference to scratch with the same
    transfer and to nearest-centroid (95 % intervals; "no difference" where one holds 0)."""
    out = ["| dataset | labels / class | nearest-centroid | scratch (transfer chosen on val) | pretrained (chosen on "
           "val) | pretrained − scratch, same transfer | pretrained − nearest-centroid |", "|---|---|---|---|---|---|---|"]
    for r in reports:
        names = methods(r)
        for n in r["labels"]:
            scratch = max((m for m in names if m.startswith("scratch")), key=lambda m: matrix(r, m, n, "val").mean())
            m = chosen(r, n)
            ref = "scratch · " + m.split(" · ")[1]
            d, e = (intervals.bootstrap(matrix(r, m, n), matrix(r, b, n)) for b in (ref, "nearest-centroid"))
            out.append(f"| {r['dataset']} | {n} | {matrix(r, 'nearest-centroid', n).mean():.3f} | "
                       f"{matrix(r, scratch, n).mean():.3f} ({scratch.split(' · ')[1]}) | "
                       f"{matrix(r, m, n).mean():.3f} ({m}) | {_diff(d)} | {_diff(e)} |")
    return "\n".join(out) + "\n"


def write(reports: list[dict], out: Path) -> None:
    """The reports as JSON and their tables as Markdown beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reports, indent=1) + "\n")
    text = "\n".join(table(r) for r in reports)
    out.with_suffix(".md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["synth", "realav"], default="synth")
    ap.add_argument("--quick", action="store_true", help="tiny set, 1 seed, 2 draws, 1 and all labels (CI)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--objectives", nargs="+", default=["none", "order"], help="none = scratch; a+b: both losses (combined)")
    ap.add_argument("--transfers", nargs="+", default=["finetune", "lp_ft"], choices=TRANSFERS)
    ap.add_argument("--labels", nargs="+", default=LABELS)
    ap.add_argument("--pools", nargs="+", help="synth: which datasets (synth-240, synth-1200)")
    ap.add_argument("--work", type=Path, help="keep clips, features and encoders here (reused)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="extra params, key=value")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (two studies side by side: 1 each)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, help="only rewrite the Markdown of this JSON report")
    ap.add_argument("--summary", type=Path, nargs="+", help="print one compact table over these JSON reports")
    ap.add_argument("--prepare", action="store_true", help="only generate and extract the data (into --work)")
    args = ap.parse_args()
    if args.table:
        return write(json.loads(args.table.read_text()), args.table)
    if args.summary:
        return print(summary([r for path in args.summary for r in json.loads(path.read_text())]))
    out = args.out or Path(f"reports/bench/lowlabel-{args.data}.json")
    torch.set_num_threads(args.threads)
    work = args.work or Path("data/bench") / f"lowlabel-{args.data}{'-quick' if args.quick else ''}"
    work.mkdir(parents=True, exist_ok=True)
    data = (prepare_synth if args.data == "synth" else prepare_realav)(work, args.quick)
    if args.prepare:
        return None
    reports = []
    for name, base in data.items():
        if args.pools and name not in args.pools:
            continue
        reports.append(study(name, base + (QUICK if args.quick else []) + args.overrides, args.objectives,
                             args.transfers, ["1", "all"] if args.quick else args.labels, 2 if args.quick else args.draws,
                             [0] if args.quick else args.seeds, work))
    write(reports, out)


if __name__ == "__main__":
    main()
