"""Benchmark: the frozen CNN's CPU inference engines — ONNX Runtime, a frozen TorchScript trace, eager torch.

Issue #27 asked whether the TorchScript trace engine earns its keep beside ONNX Runtime (the default
``extract.engine``) and eager torch (what a GPU, and every model ONNX cannot run, uses). Per backbone and input:

* **rows/s** of (a) ONNX Runtime (:class:`cmmvt.features.engines.OnnxRunner`, as ``extract.engine: onnxruntime``
  makes it), (b) the frozen TorchScript trace (``torch.jit.trace`` + ``torch.jit.freeze`` of the eager model,
  as ``extract.engine: torch`` made it on CPU up to #27; built here by :func:`trace`), (c) eager torch
  (``torch.inference_mode``, ``channels_last``, the model as :func:`cmmvt.features.backbones.create` builds it),
  each through :meth:`Backbone.embed_images` at ``extract.batch_size`` rows per call, in interleaved rounds
  (A B C A B C …) so background load hits all alike; the median round and each engine's ratio to eager in the
  same run;
* **start cost**: building the eager model, tracing + freezing it, exporting the ONNX graph + opening the session,
  and loading each from its cached file (``.pt`` / ``.onnx``);
* **max abs diff** of (a) and (b) against (c) on the same inputs (and relative to the output's largest value);
* **cases**: which engine each kind of model actually runs under (built-in CNNs, a timm CNN, a timm ViT).

Inputs: video frames are crops of scikit-learn's two bundled photographs at several offsets and zooms (uint8,
360×640, through :meth:`Backbone.preprocess`), audio inputs the log-mel images of the default
``extract.audio`` params (128×192, ``window`` norm) of a synthetic 10-s sound (harmonic chirps, onsets, noise).
torch runs with ``--threads`` intra-op threads (ONNX Runtime takes the same count).

    python benchmarks/engines.py            # 224- and 128-px frames → reports/bench/engines.{json,md}
    python benchmarks/engines.py --quick    # efficientnet_lite0 at 64 px only, 2 rounds (CI)

resnet18 and mobilenet_v3_large run with random weights (their ImageNet files are not cached on this machine and
nothing is downloaded): the same graph, so the same speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cmmvt.config import AudioParams, ExtractParams
from cmmvt.features import backbones, logmel

ENGINES = ("onnxruntime", "torchscript", "torch")  #: (a), (b), (c)
DECISION = (  # what #27 decided from these numbers (reports/bench/engines.md; see cmmvt/features/engines.py)
    "**Decision (#27): the trace is dropped.** It beat eager torch by 1.4–1.9× on efficientnet_lite0 and "
    "mobilenet_v3_large (1.05–1.1× on resnet18), but it only ever ran under the non-default `extract.engine: torch` "
    "on the CPU — never by default, never on a GPU, never for a timm model — and each model it ran, ONNX Runtime "
    "(the default, a required dependency) ran faster still: 1.1–1.9× the trace, 1.2–3.3× eager. `engine: torch` "
    "now means eager torch on every device: on the CPU that costs efficientnet_lite0 1.4–1.9× the CNN time of the "
    "trace (and a later start builds the eager model, 0.1–0.3 s plus importing timm, instead of loading a .pt in "
    "0.01–0.02 s); in return one engine and its .pt cache fewer (`torch.jit` is deprecated). Before #27, the "
    "last row of the cases table read `torchscript`.")


def trace(model: torch.nn.Module, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The frozen TorchScript copy ``extract.engine: torch`` ran on CPU before #27 (traced on one image)."""
    probe = torch.zeros(1, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        return torch.jit.freeze(torch.jit.trace(model, probe, check_trace=False))


def frames(n: int, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    """``n`` uint8 RGB frames ``(n, H, W, 3)``: crops of scikit-learn's photographs at several offsets and zooms."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1)[None].float() for p in load_sample_images().images]  # (1, 3, 427, 640)
    out = []
    for i in range(n):
        p = photos[i % 2]
        zoom = 1.0 + 0.1 * (i % 5)  # 1.0–1.4: the crop moves over the photo
        big = torch.nn.functional.interpolate(p, scale_factor=zoom, mode="bilinear", antialias=True)
        top, left = (7 * i) % (big.shape[2] - size[0] + 1), (13 * i) % (big.shape[3] - size[1] + 1)
        out.append(big[0, :, top : top + size[0], left : left + size[1]].permute(1, 2, 0))
    return np.stack([f.clamp(0, 255).round().to(torch.uint8).numpy() for f in out])


def audio_images(n: int, p: AudioParams) -> torch.Tensor:
    """``n`` log-mel CNN inputs ``(n, 3, H, W)`` of the default audio params, from a 10-s synthetic sound."""
    rng = np.random.default_rng(0)
    sr, dur = p.sample_rate, 10.0
    t = np.arange(int(sr * dur)) / sr
    wave = sum(0.2 / k * np.sin(2 * np.pi * k * (150 + 40 * t) * t) for k in range(1, 6))  # a gliding harmonic tone
    env = np.zeros_like(t)
    for onset in np.arange(0.3, dur, 0.7):  # percussive onsets
        m = t >= onset
        env[m] += np.exp(-(t[m] - onset) * 12)
    wave = wave * (0.4 + env) + 0.02 * rng.standard_normal(len(t))
    times = np.linspace(0.5, dur - 0.5, n)
    win = logmel.clip_windows((0.5 * wave / np.abs(wave).max()).astype(np.float32), times, p)
    return logmel.to_images(win, p.image and tuple(p.image), p.norm)  # (n, 3, H, W)


def weights_file(name: str, folder: Path) -> str | None:
    """A random-weights state dict for a torchvision backbone (its ImageNet file is not cached here), else None."""
    if name not in ("resnet18", "resnet50", "mobilenet_v3_large"):
        return None
    import torchvision

    path = folder / f"{name}.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)
    return str(path)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def start_costs(name: str, weights: str | None, image_size: int, folder: Path) -> tuple[dict[str, float], dict]:
    """Seconds to get each engine ready, fresh and from its cached file; and the three backbones (built fresh)."""
    os.environ["CMMVT_CACHE_DIR"] = str(folder / f"cache-{name}-{image_size}")
    cost: dict[str, float] = {}
    cost["eager_build_s"], eager = _timed(lambda: backbones.create(name, weights, image_size=image_size,
                                                                    optimize=False))
    cost["trace_freeze_s"], traced_fn = _timed(lambda: trace(eager.model, image_size))
    pt = folder / f"{name}-{image_size}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced_fn, str(pt))
        cost["trace_load_cached_s"], _ = _timed(lambda: torch.jit.load(str(pt), map_location="cpu"))
    cost["onnx_create_fresh_s"], ort = _timed(lambda: backbones.create(name, weights, image_size=image_size,
                                                                        engine="onnxruntime"))
    cost["onnx_create_cached_s"], _ = _timed(lambda: backbones.create(name, weights, image_size=image_size,
                                                                       engine="onnxruntime"))
    cost["trace_fresh_s"] = cost["eager_build_s"] + cost["trace_freeze_s"]  # what engine torch did on a first start
    traced = copy.copy(eager)
    traced.runner, traced.engine = traced_fn, "torchscript"
    return {k: round(v, 3) for k, v in cost.items()}, {"onnxruntime": ort, "torchscript": traced, "torch": eager}


def measure(bbs: dict, x: torch.Tensor, batch: int, rounds: int, batches: int) -> dict[str, object]:
    """Interleaved rounds of ``batches`` calls of ``batch`` rows per engine: rows/s per round, median, ratios, diffs."""
    xs = [x[i : i + batch] for i in range(0, batches * batch, batch)]
    for b in bbs.values():  # warm-up (first-call allocations, ORT arena, oneDNN primitives)
        b.embed_images(xs[0])
    runs: dict[str, list[float]] = {e: [] for e in bbs}
    for _ in range(rounds):
        for e, b in bbs.items():  # A B C A B C …
            t, _ = _timed(lambda b=b: [b.embed_images(xi) for xi in xs])
            runs[e].append(batches * batch / t)
    median = {e: statistics.median(v) for e, v in runs.items()}
    ref = torch.cat([bbs["torch"].embed_images(xi) for xi in xs])
    scale = float(ref.abs().max())
    diff = {}
    for e in ("onnxruntime", "torchscript"):
        got = torch.cat([bbs[e].embed_images(xi) for xi in xs])
        d = float((got - ref).abs().max())
        diff[e] = {"max_abs": float(f"{d:.3g}"), "relative_to_max": float(f"{d / scale:.3g}")}
    return {"input": list(x.shape[1:]), "rows_per_round": batches * batch,
            "rows_per_s_median": {e: round(v, 1) for e, v in median.items()},
            "ratio_to_eager_median": {e: round(v / median["torch"], 3) for e, v in median.items()},
            "ratio_to_eager_median_of_rounds": {  # each round's ratio: robust to load that moves between rounds
                e: round(statistics.median(a / b for a, b in zip(runs[e], runs["torch"], strict=True)), 3)
                for e in bbs},
            "ratio_to_eager_per_round": {e: [round(a / b, 3) for a, b in zip(runs[e], runs["torch"], strict=True)]
                                         for e in bbs},
            "rows_per_s_runs": {e: [round(v, 1) for v in vs] for e, vs in runs.items()},
            "output_max": round(scale, 3), "diff_vs_eager": diff}


def cases(folder: Path) -> list[dict[str, str]]:
    """Which engine each kind of model runs under, per requested engine, on CPU (random-weight timm test models)."""
    import timm

    out = []
    for arch, kind in (("test_resnet.r160_in1k", "timm CNN"), ("test_vit.r160_in1k", "timm ViT")):
        torch.manual_seed(0)
        path = folder / f"{arch}.pth"
        torch.save(timm.create_model(arch, pretrained=False).state_dict(), path)
        for engine in backbones.ENGINES:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bb = backbones.create(f"timm:{arch}", str(path), engine=engine)
            note = next((str(w.message)[:140] for w in caught if "cannot run it" in str(w.message)), "")
            out.append({"model": f"timm:{arch} ({kind})", "requested": engine, "runs": bb.engine, "note": note})
    bb = backbones.create("none", image_size=64, engine="torch")
    out.append({"model": "none (built-in CNN)", "requested": "torch", "runs": bb.engine, "note": ""})
    return out


def markdown(report: dict) -> str:
    lines = ["# CNN inference engines on CPU (#27)\n",
             f"`{report['command']}` — {report['machine']}, torch {report['torch']}, onnxruntime "
             f"{report['onnxruntime']}, {report['threads']} torch/ORT threads, batch {report['batch_size']}, "
             f"{report['rounds']} interleaved rounds (A B C …) of {report['batches']} batches; median round. "
             f"{report['note']}\n",
             "Ratios: of the median rows/s (and, in parentheses, the median of the per-round ratios).\n",
             "| backbone | input | ONNX Runtime rows/s | trace rows/s | eager rows/s | ORT / eager | trace / eager "
             "| trace / eager per round | max abs diff ORT / trace vs eager (÷ output max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        m, q, d = r["rows_per_s_median"], r["ratio_to_eager_median"], r["diff_vs_eager"]
        qr = r["ratio_to_eager_median_of_rounds"]
        per = " ".join(f"{v:.2f}" for v in r["ratio_to_eager_per_round"]["torchscript"])
        lines.append(f"| {r['backbone']} | {r['modality']} {'×'.join(map(str, r['input'][1:]))} | {m['onnxruntime']} "
                     f"| {m['torchscript']} | {m['torch']} | **{q['onnxruntime']:.2f}×** ({qr['onnxruntime']:.2f}×) "
                     f"| **{q['torchscript']:.2f}×** ({qr['torchscript']:.2f}×) "
                     f"| {per} | {d['onnxruntime']['max_abs']:.2g} / {d['torchscript']['max_abs']:.2g} "
                     f"({d['onnxruntime']['relative_to_max']:.1g} / {d['torchscript']['relative_to_max']:.1g}) |")
    lines += ["", "Start cost (seconds, fresh process state except imports; eager build = model + weights):", "",
              "| backbone | size | eager build | trace + freeze | first start: trace path (build + trace) "
              "| first start: ONNX (build + export + session) | later start: trace (load .pt) "
              "| later start: ONNX (load .onnx) |", "|---|---|---|---|---|---|---|---|"]
    for s in report["start"]:
        c = s["cost"]
        lines.append(f"| {s['backbone']} | {s['image_size']} | {c['eager_build_s']} | {c['trace_freeze_s']} "
                     f"| {c['trace_fresh_s']:.3f} | {c['onnx_create_fresh_s']} | {c['trace_load_cached_s']} "
                     f"| {c['onnx_create_cached_s']} |")
    lines += ["", "Cases (CPU; a GPU always runs eager torch):", "", "| model | engine asked | runs | why |",
              "|---|---|---|---|"]
    lines += [f"| {c['model']} | {c['requested']} | {c['runs']} | {c['note']} |" for c in report["cases"]]
    if report.get("decision"):
        lines += ["", report["decision"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet18", "mobilenet_v3_large"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 128],
                    help="video input sides: 224 (real data), 128 (params.yaml); audio images are measured at the first")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=3, help="batches per engine per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--note", default="Other engineers' jobs (tests, editors) ran on the same 2 cores during the run.")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/engines.json"))
    args = ap.parse_args()
    if args.quick:
        args.backbones, args.sizes, args.rounds, args.batches = args.backbones[:1], [64], 2, 1
    torch.set_num_threads(args.threads)
    p = ExtractParams()
    batch = p.batch_size
    import onnxruntime

    report: dict[str, object] = {
        "command": "python benchmarks/engines.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "threads": args.threads, "batch_size": batch,
        "rounds": args.rounds, "batches": args.batches, "note": args.note, "decision": DECISION, "results": [],
        "start": []}
    n = batch * args.batches
    rgb = frames(n)
    audio = audio_images(n, p.audio)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.backbones:
            weights = weights_file(name, folder)
            for size in args.sizes:
                cost, bbs = start_costs(name, weights, size, folder)
                report["start"].append({"backbone": name, "image_size": size, "cost": cost})
                inputs = {"video": bbs["torch"].preprocess(rgb)}
                if size == args.sizes[0]:
                    inputs["audio"] = audio  # any size: the same graph
                for modality, x in inputs.items():
                    r = measure(bbs, x, batch, args.rounds, args.batches)
                    report["results"].append({"backbone": name, "image_size": size, "modality": modality, **r})
                    print(json.dumps(report["results"][-1]["rows_per_s_median"]), name, size, modality, flush=True)
        report["cases"] = cases(folder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
