"""Benchmark: training throughput (clips/s) and the share of step time spent waiting for data.

(a) cmmvt's default training loop: ClipDataset over the HDF5 caches, the global batches of cmmvt.train.loop
    (params.yaml's train.batch_size, shuffled; one process), the classifier of params.yaml's model section,
    AdamW, label-smoothed cross-entropy, gradient clipping; each step is timed as the wait in ``next(iter)``
    plus the compute (forward, backward, optimiser step);
(b) baseline in the same run: the same loop on batches pre-loaded into memory (no data wait).
Reports clips/s of both, (a)/(b), and the data-wait share of (a)'s step time (target ≤ 10 %).

    python benchmarks/train.py            # the default cache (data/features, data/manifest.csv) → reports/bench/train.json
    python benchmarks/train.py --quick    # a tiny random float16 cache made in a temp dir, for CI (no data/ needed)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmmvt import config
from cmmvt import runtime
from cmmvt.train import loop
from cmmvt.data import manifest as manifest_mod
from cmmvt.features.cache import CacheWriter, ClipFeatures
from cmmvt.distributed import World
from cmmvt.train.dataset import ClipDataset
from cmmvt.train.sampler import GlobalBatches
from cmmvt.models import MODALITIES, build_model


def make_tiny_cache(root: Path, clips: int = 24, rows: int = 16, dim: int = 1280, classes: int = 3) -> Path:
    """Random float16 video + audio caches under ``root/features`` and a manifest; returns the manifest path."""
    rng = np.random.default_rng(0)
    ids = [f"c{c}/clip_{i:03d}" for i in range(clips) for c in [i % classes]]
    splits = ["train", "train", "train", "val", "test"]
    for m in ("video", "audio"):
        attrs = {"backbone": "random", "dim": dim, "fps": 4.0}
        with CacheWriter(root / "features" / m, m, attrs) as w:
            for vid in ids:
                emb = rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16)
                w.add(ClipFeatures(vid, emb, np.arange(rows, dtype=np.float32) / 4.0, True, rows / 4.0))
    df = pd.DataFrame({"video_id": ids, "path": [f"{v}.mp4" for v in ids],
                       "label": [v.split("/")[0] for v in ids], "split": [splits[i % 5] for i in range(clips)]})
    path = root / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def run_loop(model: nn.Module, batches: Callable[[], Iterator[dict[str, torch.Tensor]]], steps: int,
             p: config.Params) -> dict[str, float]:
    """``steps`` training steps over the iterators ``batches()`` (called again as needed); times wait and compute."""
    opt = torch.optim.AdamW(model.parameters(), lr=p.train.lr, weight_decay=p.train.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=p.train.label_smoothing)
    model.train()
    wait = total = 0.0
    clips = done = 0
    while done < steps:
        it = batches()
        while done < steps:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss, _ = loop.train_step(model, batch, opt, loss_fn, p.train.grad_clip)
            loss.item()
            t2 = time.perf_counter()
            wait += t1 - t0
            total += t2 - t0
            clips += len(batch["label"])
            done += 1
    return {"steps": done, "clips": clips, "seconds": total, "wait_seconds": wait,
            "clips_per_s": clips / total, "wait_share": wait / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny random cache in a temp dir, for CI")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--epochs", type=int, default=3, help="measured epochs over the training split")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/train.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides: list[str] = []
        if args.quick:
            manifest = make_tiny_cache(Path(tmp))
            overrides = [f"data.manifest={manifest}", f"extract.out={Path(tmp) / 'features'}"]
        p = config.load(args.params, overrides)  # a missing file gives the defaults (= params.yaml's)
        epochs = 1 if args.quick else args.epochs
        runtime.seed_everything(p.seed)
        features = Path(p.extract.out)
        mods = MODALITIES[p.model.modalities]
        sp, names = loop._datasets(p, features, manifest_mod.read(p.data.manifest))
        ds = ClipDataset(features, sp["train"].ids, sp["train"].labels, mods, p.model.crop_frames, train=True,
                         seed=p.seed)
        sampler = GlobalBatches(len(ds), p.train.batch_size, World(), p.seed)
        steps = epochs * len(sampler)

        def loader() -> Iterator[dict[str, torch.Tensor]]:
            return (batch for _, batch in sampler.batches(ds, 0))

        def fresh_model() -> nn.Module:
            torch.manual_seed(p.seed)
            return build_model(p.model, ds.dims, len(names))

        run_loop(fresh_model(), loader, min(2, len(sampler)), p)  # warm-up (file handles, allocator)
        cmmvt = run_loop(fresh_model(), loader, steps, p)
        in_memory = list(loader())  # one epoch of batches, pre-loaded
        run_loop(fresh_model(), lambda: iter(in_memory), min(2, len(in_memory)), p)
        baseline = run_loop(fresh_model(), lambda: iter(in_memory), steps, p)
    report = {
        "quick": args.quick, "train_clips": len(ds), "batch_size": p.train.batch_size, "steps": steps,
        "modalities": list(mods), "dims": ds.dims,
        "crop_frames": p.model.crop_frames, "encoder": p.model.encoder, "attention": p.model.attention,
        "threads": torch.get_num_threads(), "machine": platform.machine(),
        "clips_per_s": {"cmmvt": round(cmmvt["clips_per_s"], 2), "in_memory": round(baseline["clips_per_s"], 2)},
        "data_wait_share": round(cmmvt["wait_share"], 4),
        "data_wait_ms_per_step": round(1000 * cmmvt["wait_seconds"] / cmmvt["steps"], 3),
        "step_ms": {"cmmvt": round(1000 * cmmvt["seconds"] / cmmvt["steps"], 3),
                    "in_memory": round(1000 * baseline["seconds"] / baseline["steps"], 3)},
        "ratio_cmmvt_over_in_memory": round(cmmvt["clips_per_s"] / baseline["clips_per_s"], 3),
        "targets": {"data_wait_share_max": 0.10},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
