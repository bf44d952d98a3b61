"""Several labels per clip on real content: cmmvt's multi-label classifier against a one-vs-rest logistic regression
on the same clip-mean features.

Builds the multi-label real-content set (:func:`realav.make_multilabel`: 10 objects; half the clips show and name
one object, half two; voices held out in val and test), extracts it with ``params.yaml``'s features, then

* **cmmvt**: ``params.yaml``'s model with ``train.task=multilabel`` from scratch (sigmoid + binary cross-entropy,
  val mAP selects the checkpoint, thresholds chosen on val), 3 seeds;
* **baseline**: one-vs-rest logistic regression on standardised clip means (video ⊕ audio), ``C`` chosen on val
  by mAP.

Reported on test (never used to choose): mAP, mean AUC and d′ (mean ± std over seeds), exact label sets at the
thresholds chosen on val, and the **paired** mAP difference with a 95 % bootstrap interval over test clips (each
replicate draws clips with replacement and recomputes both mAPs on them; cmmvt's is the mean over its seeds).

    python benchmarks/multilabel.py            # 240 / 80 / 80 clips → reports/bench/multilabel.{json,md}
    python benchmarks/multilabel.py --quick    # 4 objects, 16 / 8 / 8 clips, 1 seed (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmmvt import config
from cmmvt.data import manifest
from cmmvt.distributed import World
from cmmvt.eval import baselines, evaluate, metrics
from cmmvt.features import extract
from cmmvt.train import loop
from cmmvt.train.dataset import splits

import realav  # benchmarks/realav.py: this folder is on sys.path when a benchmark runs as a script

CS = (0.01, 0.1, 1.0, 10.0)


def logistic(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """One-vs-rest logistic regression on standardised features, ``C`` chosen on val by mAP: (N_test, C) scores and
    the chosen ``C``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in CS:
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)))
        clf.fit(x["train"], y["train"])
        val = metrics.multilabel_metrics(clf.decision_function(x["val"]), y["val"])["mAP"]
        if best is None or val > best[0]:
            best = (val, c, clf.decision_function(x["test"]))
    return best[2], best[1]


def paired_map(a: np.ndarray, b: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """mAP(a) − mAP(b) on the test clips and its 95 % percentile-bootstrap interval over clips.

    Args:
        a: (R, N, C) scores of R runs; their mAPs are averaged.
        b: (N, C) scores of the method compared against.
        y: (N, C) 0/1 targets.
    """
    def diff(idx: np.ndarray) -> float:
        return float(np.mean([metrics.mean_ap(r[idx], y[idx]) for r in a]) - metrics.mean_ap(b[idx], y[idx]))

    rng = np.random.default_rng(seed)
    stats = [diff(rng.integers(0, len(y), len(y))) for _ in range(n_boot)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return {"mean": diff(np.arange(len(y))), "low": float(low), "high": float(high)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", type=Path, help="keep the generated clips and features here (reused when present)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/multilabel.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    quick = args.quick
    seeds = range(1 if quick else args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        csv = data / "clips.csv"
        if not csv.is_file():
            realav.make_multilabel(data, counts=(16, 8, 8) if quick else (240, 80, 80), classes=4 if quick else 10,
                                   durations=(2.0, 3.0) if quick else (3.0, 5.0))
        base = ["data.source=csv", f"data.csv={csv}", f"data.root={data}", f"data.manifest={data}/manifest.csv",
                f"extract.out={data}/features", "train.task=multilabel", "train.init=scratch",
                *(["extract.image_size=64", "train.epochs=2", "train.min_steps=0"] if quick else [])]
        p = config.load("params.yaml", base)
        df = manifest.prepare(p.data, seed=p.data.seed).manifest
        items, _ = extract.discover(p.data.manifest)
        for s in extract.run(items, p.extract, overwrite=True, show_progress=False):
            if s.failed:
                raise RuntimeError(f"{s.failures}")
        sp, names = splits(df, p.extract.out, ("video", "audio"), multilabel=True)
        y = {k: np.asarray(sp[k].labels) for k in ("train", "val", "test")}  # (N, C) each
        x = {k: np.concatenate(list(baselines.clip_means(p.extract.out, sp[k].ids, ("video", "audio")).values()), 1)
             for k in y}  # (N, D_video + D_audio)
        lr, c = logistic(x, y)
        runs, scores = [], []
        for seed in seeds:
            ps = config.load("params.yaml", [*base, f"seed={seed}"])
            model = Path(tmp) / f"model-{seed}.pt"
            result = loop.train(ps, model, live_dir=None)
            m = evaluate.evaluate(ps, model, Path(tmp) / f"eval-{seed}")
            pred = pd.read_csv(Path(tmp) / f"eval-{seed}" / "predictions.csv", keep_default_na=False)
            logits, s, _, _ = evaluate.split_logits(ps, model, None, "test", World())
            scores.append(logits)
            runs.append(m | {"val_mAP": result.best_val_top1, "exact": float((pred.actual == pred.predicted).mean())})
            print(seed, runs[-1], flush=True)
        two = float(np.mean([";" in label for label in df.loc[df.split == "test", "label"]]))
        results = {"clips": {k: len(v) for k, v in y.items()}, "classes": names, "two_label_share_test": two,
                   "cmmvt": runs, "logistic": metrics.multilabel_metrics(lr, y["test"]) | {"C": c},
                   "paired_mAP": paired_map(np.stack(scores), lr, y["test"], n_boot=50 if quick else 1000),
                   "chance_mAP": float(y["test"].mean())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = report(results)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def report(r: dict) -> str:
    """The markdown table of a run."""
    n = r["clips"]
    runs = r["cmmvt"]

    def ms(key: str) -> str:
        v = np.array([x[key] for x in runs])
        return f"{v.mean():.3f} ± {v.std():.3f}"

    lr, d = r["logistic"], r["paired_mAP"]
    lines = [f"{n['train']} / {n['val']} / {n['test']} clips (train / val / test) of {len(r['classes'])} objects, "
             f"{r['two_label_share_test']:.0%} of test clips with two; chance mAP {r['chance_mAP']:.3f}; test only "
             f"(val chose C, checkpoints and thresholds); cmmvt: mean ± std over {len(runs)} seeds.", "",
             "| method | mAP | mean AUC | d′ | exact label sets |", "|---|---|---|---|---|",
             f"| cmmvt, train.task=multilabel (from scratch) | {ms('mAP')} | {ms('mean_auc')} | {ms('d_prime')} "
             f"| {ms('exact')} |",
             f"| one-vs-rest logistic regression on clip means (C={lr['C']}) | {lr['mAP']:.3f} | {lr['mean_auc']:.3f} "
             f"| {lr['d_prime']:.3f} | – |", "",
             f"Paired mAP difference (cmmvt − logistic regression, same test clips): {d['mean']:+.3f} "
             f"[{d['low']:+.3f}, {d['high']:+.3f}] — "
             + ("no difference (the interval holds 0)." if d["low"] <= 0 <= d["high"] else
                ("cmmvt better." if d["low"] > 0 else "logistic regression better."))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
