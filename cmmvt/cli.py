"""The ``cmmvt`` command line (Typer).

Every command only validates its options, resolves params (``params.yaml`` + ``--set key=value`` +
the command's own flags, in that order) and calls the library: the DVC stage scripts under
``stages/`` call the very same functions. Domain errors print one red line and exit 1; the hidden
``--traceback`` flag shows the full stack.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from cmmvt import config

app = typer.Typer(
    name="cmmvt",
    help="Contrastive Multi-Modal Video Transformer: audio-visual video classification on cached features.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
_state = {"traceback": False}

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (the one source of truth).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a params key, e.g. [cyan]-S extract.fps=8[/]. Repeatable."),
]


def _domain_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix: reported as one line, not a stack."""
    from cmmvt import cache, manifest, media

    errors: list[type[BaseException]] = [config.ConfigError, media.MediaError, manifest.ManifestError,
                                         cache.CacheError, FileNotFoundError]
    try:
        from cmmvt import backbones

        errors.append(backbones.BackboneError)
    except ImportError:  # torch-free installs still get the other commands
        pass
    return tuple(errors)


def _run(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; turn a domain error into one red line and exit status 1."""
    try:
        return fn()
    except _domain_errors() as exc:
        if _state["traceback"]:
            raise
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _params(path: Path, sets: list[str] | None, flags: dict[str, Any] | None = None) -> config.Params:
    """Resolve params: file, then ``--set`` overrides, then the command's own flags."""
    overrides = list(sets or []) + [f"{k}={_yaml(v)}" for k, v in (flags or {}).items() if v is not None]
    return _run(lambda: config.load(path, overrides))


def _yaml(value: Any) -> str:
    """Render a flag value so that YAML parses it back unchanged."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


@app.callback()
def _main(
    traceback: Annotated[bool, typer.Option("--traceback", hidden=True, help="Show full stack traces.")] = False,
) -> None:
    _state["traceback"] = traceback


@app.command()
def synth(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: data.root).")] = None,
    classes: Annotated[int | None, typer.Option(help="Number of classes (≤ 10).")] = None,
    clips_per_class: Annotated[int | None, typer.Option(help="Clips per class.")] = None,
    seed: Annotated[int | None, typer.Option(help="Dataset seed (default: params data.seed).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Generate the embedded synthetic audio-visual dataset (real H.264 + AAC MP4, folder-per-class).

    Examples:
        cmmvt synth
        cmmvt synth --out /tmp/clips --classes 4 --clips-per-class 3
    """
    from cmmvt import synth as synth_mod

    p = _params(params, set_, {"data.synth.classes": classes, "data.synth.clips_per_class": clips_per_class,
                               "data.seed": seed})
    root = out or Path(p.data.root)
    paths = _run(lambda: synth_mod.make_dataset(root, p.data.synth, seed=p.data.seed, progress=True))
    console.print(f"wrote {len(paths)} clips to {root}")


@app.command()
def manifest(
    source: Annotated[str | None, typer.Option(help="synth | folder | kinetics | csv (default: data.source).")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder of clips (default: data.root).")] = None,
    csv: Annotated[Path | None, typer.Option(help="Kinetics-style or plain CSV, for those sources.")] = None,
    out: Annotated[Path | None, typer.Option(help="Manifest to write (default: data.manifest).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Write the manifest (video_id, path, label, split) from a folder tree, a CSV or the synthetic set.

    Missing, duplicate and skipped files are counted and listed in manifest_issues.csv beside it.

    Examples:
        cmmvt manifest
        cmmvt manifest --source folder --root ~/ucf101 --out data/manifest.csv
        cmmvt manifest --source kinetics --csv k400/train.csv --root k400/videos
    """
    from cmmvt import manifest as manifest_mod

    p = _params(params, set_, {"data.source": source, "data.root": _str(root), "data.csv": _str(csv),
                               "data.manifest": _str(out)})
    report = _run(lambda: manifest_mod.prepare(p.data, seed=p.data.seed))
    console.print(manifest_mod.summary(report, p.data.manifest))


@app.command()
def extract(
    videos: Annotated[Path | None, typer.Option(help="Folder of videos (recursive) — no manifest needed.")] = None,
    manifest_: Annotated[Path | None, typer.Option("--manifest", help="A manifest CSV instead of a folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Features root (default: extract.out).")] = None,
    modality: Annotated[str, typer.Option(help="video | audio | both.")] = "both",
    fps: Annotated[float | None, typer.Option(help="Frames sampled per second.")] = None,
    backbone: Annotated[str | None, typer.Option(help="efficientnet_lite0 | resnet18 | resnet50 | "
                                                      "mobilenet_v3_large | none.")] = None,
    weights: Annotated[Path | None, typer.Option(help="A state-dict file for the backbone.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cpu or cuda.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Frames per CNN batch.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache made with other feature params.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Extract frozen-CNN video and log-mel audio embeddings into resumable HDF5 caches.

    Rerunning skips clips already cached; broken files go to failures.csv and the run goes on.
    Exits 1 only when nothing succeeded.

    Examples:
        cmmvt extract --videos ~/clips --out data/features
        cmmvt extract --manifest data/manifest.csv --modality audio --fps 8
        cmmvt extract --videos ~/clips --backbone resnet18 --weights resnet18-f37072fd.pth
    """
    from cmmvt import extract as extract_mod

    if modality not in ("video", "audio", "both"):
        _fail(f"--modality = {modality!r} is not one of: video, audio, both")
    if (videos is None) == (manifest_ is None):
        _fail("give exactly one of --videos PATH or --manifest CSV")
    p = _params(params, set_, {"extract.fps": fps, "extract.backbone": backbone, "extract.weights": _str(weights),
                               "extract.device": device, "extract.batch_size": batch_size,
                               "extract.workers": workers, "extract.out": _str(out)})
    items, skipped = _run(lambda: extract_mod.discover(videos or manifest_))
    for path, reason in skipped:
        console.print(f"[dim]skipped {path}: {reason}[/]", highlight=False)
    summaries = _run(lambda: extract_mod.run(items, p.extract, modality=modality, overwrite=overwrite))
    for s in summaries:
        for path, reason in s.failures:
            console.print(f"[yellow]failed[/] {path}: {reason}", highlight=False)
        console.print(s.line(), highlight=False)
    if items and all(s.succeeded == 0 and s.cached == 0 for s in summaries):
        raise typer.Exit(1)


cache_app = typer.Typer(help="Inspect feature caches.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(
    path: Annotated[Path, typer.Argument(help="A features root (video/, audio/) or one modality folder.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print videos, rows, dim, feature params and failures of a cache.

    Examples:
        cmmvt cache info data/features
        cmmvt cache info data/features/audio --json
    """
    import json

    from cmmvt import cache

    summary = _run(lambda: cache.info(path))
    if json_:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    out = Console(soft_wrap=True)
    for mod, s in summary.items():
        out.print(f"[bold]{mod}[/] {s['path']}: {s['videos']} videos ({s['no_stream']} without stream), "
                  f"{s['rows']} rows × {s['dim']}, {s['shards']} shards, {s['bytes'] / 1e6:.1f} MB, "
                  f"{s['failures']} failures", highlight=False)
        for k, v in s["attrs"].items():
            out.print(f"  {k}: {v}", highlight=False)


@app.command()
def prototypes(
    out: Annotated[Path, typer.Option(help="Prototypes file to write.")] = Path("data/prototypes.h5"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """k-means prototypes of the cached video and audio embeddings (the `prototypes` stage).

    NMI and purity against the labels are printed for insight only; labels never reach training.

    Examples:
        cmmvt prototypes
        cmmvt prototypes -S prototypes.k_audio=20 -S prototypes.frame_level=true --out /tmp/p.h5
    """
    from cmmvt.selfsup import prototypes as prototypes_mod

    p = _params(params, set_)
    m = _run(lambda: prototypes_mod.build(p, out, metrics_path=None))
    console.print(", ".join(f"{k} {v:.3f}" for k, v in m.items()))


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Pretrained encoders to write.")] = Path("models/pretrain.pt"),
    prototypes_: Annotated[Path, typer.Option("--prototypes", help="k-means prototypes (xdc, protonce).")] = Path(
        "data/prototypes.h5"),
    objective: Annotated[str | None, typer.Option(help="xdc | infonce | protonce | combined.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Cross-modal self-supervised pretraining of the encoders, without labels (the `pretrain` stage).

    Examples:
        cmmvt pretrain --objective infonce
        cmmvt pretrain --objective combined -S pretrain.weights.xdc=0.5 -S pretrain.epochs=50
    """
    from cmmvt.selfsup import pretrain as pretrain_mod

    p = _params(params, set_, {"pretrain.objective": objective})
    r = _run(lambda: pretrain_mod.pretrain(p, out, prototypes_, live_dir=None))
    console.print(pretrain_mod.describe(r))


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("models/classifier.pt"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train the temporal classifier on cached features (the `train` stage).

    Examples:
        cmmvt train
        cmmvt train -S model.attention=global -S model.modalities=video --out /tmp/video.pt
    """
    from cmmvt import training

    p = _params(params, set_)
    r = _run(lambda: training.train(p, out))
    console.print(f"best val top-1 {r.best_val_top1:.3f} at epoch {r.best_epoch}; saved {out}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/classifier.pt"),
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/eval"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint on the test split: metrics.json, per-class CSV, confusion matrix.

    Examples:
        cmmvt evaluate
        cmmvt evaluate --model /tmp/video.pt --out /tmp/eval -S evaluate.views=3
    """
    from cmmvt import evaluate as evaluate_mod

    p = _params(params, set_)
    m = _run(lambda: evaluate_mod.evaluate(p, model, out))
    console.print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))


@app.command()
def predict(
    videos: Annotated[list[Path], typer.Argument(help="Video files.")],
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/classifier.pt"),
    top_k: Annotated[int, typer.Option(help="Labels per video.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify videos: features on the fly with the checkpoint's backbone, then top-k labels.

    Examples:
        cmmvt predict clip.mp4
        cmmvt predict a.mp4 b.webm --top-k 3 --json
    """
    import json

    from cmmvt import predict as predict_mod

    results = _run(lambda: predict_mod.predict(videos, model, top_k=top_k))
    if json_:
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                console.print(f"[red]{r['path']}[/]: {r['error']}", highlight=False)
                continue
            typer.echo(f"{r['path']}: " + ", ".join(f"{label} {prob:.2f}" for label, prob in r["top"]))
    if all("error" in r for r in results):
        raise typer.Exit(1)


def _fail(message: str) -> None:
    """Report a usage problem as one red line and exit 1."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main() -> None:  # pragma: no cover - console entry for `python -m cmmvt`
    app(prog_name="cmmvt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
