"""Evaluate a trained classifier on the test split: metrics, per-class table, confusion matrix.

Writes into ``out`` (default ``reports/eval``)::

    metrics.json     top1, top5, mean_class_accuracy, macro_f1, clips     (dvc.yaml top-level ``metrics:``),
                     and order_pairs_top1 when the classes include an order-only pair of the synthetic set
    per_class.csv    class, support, accuracy, precision, f1
    predictions.csv  video_id, actual, predicted                        (a DVC ``confusion`` plot)
    confusion.png    the confusion matrix with class names

With several labels per clip (``train.task: multilabel``): metrics.json holds mAP, mean_auc, d_prime and clips
(:func:`cmmvt.eval.metrics.multilabel_metrics`), per_class.csv ``class, support, ap``, predictions.csv the labels
above the checkpoint's thresholds (chosen on val) ``;``-joined, and confusion.png each class's AP (a clip of
several labels has no single confusion cell).

Each test clip is classified whole, in one pass of up to ``model.max_frames`` rows (VTN's whole-video
inference, Neimark et al. 2021); a longer clip from evenly spaced views with averaged logits
(``evaluate.views``, by default as many as cover it). ``evaluate.max_frames`` caps the rows per view
(``16``: the 4-s centre crop that earlier versions evaluated on). ``order_pairs_top1`` is the top-1 accuracy on the test clips of
the synthetic classes that differ from a partner only in the temporal order of one modality
(:func:`cmmvt.data.synth_classes.order_only_pairs`): where an order-blind model must fail.

Under torchrun the ranks classify every N-th clip each and gather the logits (each clip once, no padding);
rank 0 writes the reports. The ``evaluate`` stage (:func:`stage`) is one call for ``stages/evaluate.py`` and
``cmmvt evaluate`` alike.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cmmvt import distributed
from cmmvt.data import manifest as manifest_mod
from cmmvt.data import records
from cmmvt.eval import metrics
from cmmvt.data import synth_classes
from cmmvt.config import Params
from cmmvt.distributed import World
from cmmvt.train.dataset import ClipDataset, Split, splits
from cmmvt.eval.inference import eval_frames, predict
from cmmvt.checkpoints import load_checkpoint


def stage(p: Params, world: World | None = None) -> dict[str, float]:
    """The ``evaluate`` stage, for ``stages/evaluate.py`` and ``cmmvt evaluate`` alike: the checkpoint at
    ``paths.classifier`` on the test split, reports into ``<paths.reports>/eval``, one summary line printed.

    Returns:
        The metrics, on every rank.
    """
    world = world or distributed.from_env()
    m = evaluate(p, p.paths.classifier, f"{p.paths.reports}/eval", world=world)
    if world.lead:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()),
              file=sys.stderr, flush=True)
    return m


def evaluate(p: Params, model_path: str | Path | None = None, out: str | Path | None = None,
             features: str | Path | None = None, split: str = "test", world: World | None = None) -> dict[str, float]:
    """Evaluate the checkpoint at ``model_path`` on ``split`` and write the reports (rank 0 of several).

    Args:
        p: Params (``data.manifest``, ``extract.out``, ``evaluate.*``).
        model_path: Checkpoint written by :func:`cmmvt.train.loop.train` (default ``paths.classifier``).
        out: Report folder (default ``<paths.reports>/eval``).
        features: Features root (default ``p.extract.out``).
        split: Which split to evaluate.
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        The metrics written to ``metrics.json``, on every rank.
    """
    world = world or distributed.from_env()
    with distributed.joined(world), distributed.sigterm_as_exit():
        distributed.share_cores(world)
        logits, s, names, ckpt = split_logits(p, model_path or p.paths.classifier, features, split, world)
        multilabel = "thresholds" in ckpt
        result = (metrics.multilabel_metrics(logits, np.asarray(s.labels)) | {"clips": len(s.ids)} if multilabel
                  else _metrics(logits, np.asarray(s.labels), names))
        if world.lead:
            _write(Path(out or f"{p.paths.reports}/eval"), result, logits, s, names, ckpt.get("thresholds"))
        distributed.barrier(world)  # the reports are written
    return result


def split_logits(p: Params, model_path: str | Path, features: str | Path | None, split: str, world: World
            ) -> tuple[np.ndarray, Split, list[str], dict]:
    """The (N, C) logits of the clips of ``split``, the split, the class names and the checkpoint."""
    model, ckpt = load_checkpoint(model_path)
    features = Path(features or p.extract.out)
    names: list[str] = ckpt["labels"]
    sp, manifest_names = splits(manifest_mod.read(p.data.manifest), features, model.modalities,
                                multilabel="thresholds" in ckpt)
    if manifest_names != names:
        raise ValueError(f"{model_path}: trained on classes {names}, the manifest has {manifest_names}")
    s = sp[split]
    if not s.ids:
        raise ValueError(f"no {split} clips in {p.data.manifest} with cached features under {features}")
    trained = Params.model_validate(ckpt["params"])
    frames = eval_frames(trained.model_copy(update={"evaluate": p.evaluate}))
    ds = ClipDataset(features, s.ids, s.labels, model.modalities, frames, views=p.evaluate.views)
    return predict(model, ds, world=world), s, names, ckpt  # (N, C)


def _metrics(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """metrics.json's content for (N, C) ``logits`` of clips with (N,) ``labels``."""
    result = metrics.classification_metrics(logits, labels, k=5) | {"clips": len(labels)}
    pairs = synth_classes.order_only_pairs()
    pair_classes = [names.index(c) for pair in pairs if set(pair) <= set(names) for c in pair]
    if np.isin(labels, pair_classes).any():
        result["order_pairs_top1"] = metrics.subset_accuracy(logits, labels, pair_classes)
    return result


def _write(out: Path, result: dict[str, float], logits: np.ndarray, s: Split, names: list[str],
           thresholds: list[float] | None = None) -> None:
    """Write metrics.json, per_class.csv, predictions.csv and confusion.png into ``out``."""
    labels = np.asarray(s.labels)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if thresholds is not None:  # several labels per clip
        ap = metrics.per_class_ap(logits, labels)
        pd.DataFrame({"class": names, "support": labels.sum(0).astype(int), "ap": ap}).to_csv(
            out / "per_class.csv", index=False, float_format="%.4f")
        above = 1 / (1 + np.exp(-logits)) >= np.asarray(thresholds)  # (N, C)
        pd.DataFrame({"video_id": s.ids, "actual": [_joined(names, r > 0) for r in labels],
                      "predicted": [_joined(names, r) for r in above]}).to_csv(out / "predictions.csv", index=False)
        plot_ap(ap, names, out / "confusion.png")
        return
    pd.DataFrame(metrics.per_class(logits, labels, names)).to_csv(out / "per_class.csv", index=False,
                                                                  float_format="%.4f")
    pred = logits.argmax(1)
    pd.DataFrame({"video_id": s.ids, "actual": [names[i] for i in labels],
                  "predicted": [names[i] for i in pred]}).to_csv(out / "predictions.csv", index=False)
    plot_confusion(metrics.confusion(logits, labels, len(names)), names, out / "confusion.png")


def _joined(names: list[str], on: np.ndarray) -> str:
    """The names where ``on`` (C,) is true, ``;``-joined."""
    return records.join_labels(n for n, x in zip(names, on) if x)


def plot_ap(ap: np.ndarray, names: list[str], path: str | Path) -> None:
    """Save each class's average precision as a bar chart PNG (multi-label clips have no confusion matrix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2 + 0.4 * len(names), 3.5))
    ax.bar(range(len(names)), np.nan_to_num(ap))
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("average precision (test)")
    ax.set_title(f"mAP {np.nanmean(ap):.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, names: list[str], path: str | Path) -> None:
    """Save the (C, C) confusion counts as a labelled heat map PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.5 * n, 1.5 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
