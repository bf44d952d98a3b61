"""The ``cmmvt`` command line (Typer).

Every command only validates its options, resolves params (``params.yaml`` + ``--set key=value`` +
the command's own flags, in that order) and calls the library: the DVC stage scripts under
``stages/`` call the very same functions. Domain errors print one red line and exit 1; the hidden
``--traceback`` flag shows the full stack.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from cmmvt.experiments import ablate as ablate_mod
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
_state: dict[str, Any] = {"traceback": False, "who": ""}  # who: "rank 1 of 2" in a process of several

ReportsOpt = Annotated[Path | None, typer.Option(help="Reports root (paths.reports): the stage's metrics and curves "
                                                        "go into its folder there.")]
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (the one source of truth).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a params key, e.g. [cyan]-S extract.fps=8[/]. Repeatable."),
]


def _domain_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix: reported as one line, not a stack."""
    from cmmvt import media
    from cmmvt.experiments import ablate, presets, provenance, report
    from cmmvt.features import cache
    from cmmvt.data import manifest

    errors: list[type[BaseException]] = [config.ConfigError, media.MediaError, manifest.ManifestError,
                                         cache.CacheError, ablate.AblateError, report.ReportError,
                                         provenance.ProvenanceError, presets.PresetError, FileNotFoundError]
    try:
        from cmmvt.features import backbones

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
        who = f"{_state['who']}: " if _state["who"] else ""
        console.print(f"[bold red]error:[/] {who}{exc}", highlight=False)
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
    _state["traceback"], _state["who"] = traceback, ""


@app.command()
def synth(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: paths.synth).")] = None,
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
    from cmmvt.data import synth as synth_mod

    p = _params(params, set_, {"data.synth.classes": classes, "data.synth.clips_per_class": clips_per_class,
                               "data.seed": seed})
    root = out or Path(p.paths.synth)
    paths = _run(lambda: synth_mod.make_dataset(root, p.data.synth, seed=p.data.seed, progress=True))
    console.print(f"wrote {len(paths)} clips to {root}")


@app.command()
def manifest(
    source: Annotated[str | None, typer.Option(help="synth | folder | kinetics | csv | audioset | vggsound "
                                               "(default: data.source).")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder of clips (default: data.root).")] = None,
    csv: Annotated[Path | None, typer.Option(help="The source's CSV (Kinetics-style, plain, AudioSet segments, "
                                             "vggsound.csv).")] = None,
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
        cmmvt manifest --source vggsound --csv vggsound.csv --root vggsound/videos
        cmmvt manifest --source audioset --csv eval_segments.csv --root audioset/videos \\
            -S data.class_index=class_labels_indices.csv
    """
    from cmmvt.data import manifest as manifest_mod

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
                                                      "mobilenet_v3_large | none | timm:<model name>.")] = None,
    weights: Annotated[Path | None, typer.Option(help="A state-dict file for the backbone.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cpu or cuda.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Frames per CNN batch.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start afresh, as the extract stage does: replace a cache made "
                                                "with other feature params and wipe a completed run first (an "
                                                "interrupted one still resumes).")] = False,
    shard: Annotated[str | None, typer.Option(help="i/N: extract only share i of N, as one of N independent "
                                                   "processes (e.g. a SLURM job array).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Extract frozen-CNN video and log-mel audio embeddings into resumable HDF5 caches.

    Rerunning skips clips already cached; broken files go to failures.csv and the run goes on.
    Exits 1 only when every clip failed. Under torchrun (or with extract.procs > 1, which relaunches the
    command under torchrun) each process extracts its share into its own shard files and rank 0 prints the
    job's summary; --shard i/N does the same without torchrun. The DVC stage extract@video is
    `cmmvt extract --manifest data/manifest.csv --modality video --overwrite`: one code path.

    Examples:
        cmmvt extract --videos ~/clips --out data/features
        cmmvt extract --manifest data/manifest.csv --modality audio --fps 8
        cmmvt extract --videos ~/clips --backbone resnet18 --weights resnet18-f37072fd.pth
        cmmvt extract --videos ~/clips --backbone timm:vit_base_patch16_clip_224.openai --device cuda
        torchrun --standalone --nproc_per_node 4 $(which cmmvt) extract --videos ~/clips
        cmmvt extract --videos ~/clips --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
    """
    from cmmvt.features import extract as extract_mod

    world = _world(shard)
    if modality not in ("video", "audio", "both"):
        _fail(f"--modality = {modality!r} is not one of: video, audio, both")
    if (videos is None) == (manifest_ is None):
        _fail("give exactly one of --videos PATH or --manifest CSV")
    p = _params(params, set_, {"extract.fps": fps, "extract.backbone": backbone, "extract.weights": _str(weights),
                               "extract.device": device, "extract.batch_size": batch_size,
                               "extract.workers": workers, "extract.out": _str(out)})
    ranks = world if shard else None  # None: the stage may relaunch itself as extract.procs torchrun processes
    if not _run(lambda: extract_mod.stage(p.extract, videos or manifest_, modality, overwrite, ranks)):
        raise typer.Exit(1)


cache_app = typer.Typer(help="Inspect feature caches.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(
    path: Annotated[Path, typer.Argument(help="A features root (video/, audio/) or one modality folder.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print videos, rows, dim, feature params, failures and stale entries (changed source files) of a cache.

    Examples:
        cmmvt cache info data/features
        cmmvt cache info data/features/audio --json
    """
    import json

    from cmmvt.features import cache

    summary = _run(lambda: cache.info(path))
    if json_:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    out = Console(soft_wrap=True)
    for mod, s in summary.items():
        out.print(f"[bold]{mod}[/] {s['path']}: {s['videos']} videos ({s['no_stream']} without stream), "
                  f"{s['rows']} rows × {s['dim']}, {s['shards']} shards, {s['bytes'] / 1e6:.1f} MB, "
                  f"{s['failures']} failures, {s['stale']} stale (source changed since extraction: "
                  f"the next extract redoes them)", highlight=False)
        for k, v in s["attrs"].items():
            out.print(f"  {k}: {v}", highlight=False)


@app.command()
def prototypes(
    out: Annotated[Path | None, typer.Option(help="Prototypes file to write (paths.prototypes).")] = None,
    reports: ReportsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """k-means prototypes of the cached video and audio embeddings (the `prototypes` stage, same files).

    NMI and purity against the labels are printed for insight only; labels never reach training.

    Examples:
        cmmvt prototypes
        cmmvt prototypes -S prototypes.k_audio=20 -S prototypes.frame_level=true --out /tmp/p.h5
    """
    from cmmvt.selfsup import prototypes as prototypes_mod

    p = _params(params, set_, {"paths.prototypes": _str(out), "paths.reports": _str(reports)})
    _run(lambda: prototypes_mod.stage(p))


@app.command()
def pretrain(
    out: Annotated[Path | None, typer.Option(help="Pretrained encoders to write (paths.pretrained).")] = None,
    prototypes_: Annotated[Path | None, typer.Option("--prototypes", help="k-means prototypes for xdc and protonce "
                                                                            "(paths.prototypes).")] = None,
    objective: Annotated[str | None, typer.Option(help="xdc | infonce | protonce | sync | mask | order | combined.")] = None,
    reports: ReportsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Cross-modal self-supervised pretraining of the encoders, without labels (the `pretrain` stage, same files).

    Under torchrun the processes share each batch of pretrain.batch_size clips; rank 0 writes and reports.

    Examples:
        cmmvt pretrain --objective sync
        cmmvt pretrain --objective combined -S pretrain.weights.xdc=0.5 -S pretrain.epochs=50
        torchrun --standalone --nproc_per_node 4 $(which cmmvt) pretrain --objective infonce
    """
    from cmmvt.selfsup import pretrain as pretrain_mod

    world = _world()
    p = _params(params, set_, {"pretrain.objective": objective, "paths.pretrained": _str(out),
                               "paths.prototypes": _str(prototypes_), "paths.reports": _str(reports)})
    _run(lambda: pretrain_mod.stage(p, world))


@app.command()
def train(
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (paths.classifier; its resolved params "
                                                  "go beside it, paths.classifier_params).")] = None,
    reports: ReportsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train the temporal classifier on cached features (the `train` stage: the same files and checkpoint).

    Under torchrun the processes train one model data-parallel (DDP): train.batch_size stays the global
    batch, split over them; rank 0 writes the checkpoint and reports.

    Examples:
        cmmvt train
        cmmvt train -S model.attention=global -S model.modalities=video --out /tmp/video.pt --reports /tmp/video-reports
        torchrun --standalone --nproc_per_node 4 $(which cmmvt) train
    """
    from cmmvt.train import loop

    world = _world()
    beside = None if out is None else str(out.with_suffix(".params.yaml"))
    p = _params(params, set_, {"paths.classifier": _str(out), "paths.classifier_params": beside,
                               "paths.reports": _str(reports)})
    _run(lambda: loop.stage(p, world))


@app.command()
def evaluate(
    model: Annotated[Path | None, typer.Option(help="Checkpoint (paths.classifier).")] = None,
    reports: ReportsOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint on the test split: metrics.json, per-class CSV, confusion matrix in
    <reports>/eval (the `evaluate` stage, same files).

    Under torchrun the processes share the clips (each counted once); rank 0 writes and reports.

    Examples:
        cmmvt evaluate
        cmmvt evaluate --model /tmp/video.pt --reports /tmp/video-reports -S evaluate.views=3
        torchrun --standalone --nproc_per_node 4 $(which cmmvt) evaluate
    """
    from cmmvt.eval import evaluate as evaluate_mod

    world = _world()
    p = _params(params, set_, {"paths.classifier": _str(model), "paths.reports": _str(reports)})
    _run(lambda: evaluate_mod.stage(p, world))


@app.command()
def predict(
    videos: Annotated[list[Path] | None, typer.Argument(help="Video files.")] = None,
    model: Annotated[Path | None, typer.Option(help="Checkpoint (default: paths.classifier).")] = None,
    top_k: Annotated[int, typer.Option(help="Labels per video.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeline: Annotated[bool, typer.Option("--timeline", help="Where in the video: probabilities over time from "
                                                              "sliding windows, merged segments, CSV/JSON/PNG.")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache", help="--timeline: the feature cache to read (with --ids or "
                                                                   "every clip in it), or to extract VIDEOS into and "
                                                                   "keep (default: a temporary one).")] = None,
    ids: Annotated[list[str] | None, typer.Option(help="--timeline --cache: clips of the cache. Repeatable.")] = None,
    window: Annotated[float | None, typer.Option(help="--timeline: seconds per window (default: half the model's "
                                                      "training crop).")] = None,
    stride: Annotated[float | None, typer.Option(help="--timeline: seconds between windows (default: half a "
                                                      "window).")] = None,
    smooth: Annotated[float, typer.Option(help="--timeline: seconds of moving average over the probabilities.")] = 0.0,
    min_segment: Annotated[float, typer.Option(help="--timeline: shorter segments join a neighbour (0: keep "
                                                     "all).")] = 0.0,
    explain: Annotated[bool, typer.Option("--explain", help="Which rows decided: attention rollout over the rows "
                                                            "(of each window with --timeline, else of the whole "
                                                            "clip), in the PNG and a rows CSV.")] = False,
    out: Annotated[Path, typer.Option(help="--timeline: folder for the CSV, JSON and PNG files.")] = Path("reports/timeline"),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Classify videos: features on the fly with the checkpoint's backbone, then top-k labels; or, with
    --timeline, label them over time.

    Examples:
        cmmvt predict clip.mp4
        cmmvt predict a.mp4 b.webm --top-k 3 --json
        cmmvt predict lecture.mp4 --timeline --stride 1 --cache data/lecture-features
        cmmvt predict --timeline --cache data/features --ids match_01
        cmmvt predict clip.mp4 --explain
    """
    import json

    from cmmvt.eval import predict as predict_mod

    model = model or Path(_params(params, None).paths.classifier)
    if timeline or explain:
        options = dict(window=window, stride=stride, smooth=smooth, min_segment=min_segment, explain=explain,
                       whole=not timeline)
        return _timeline(videos or [], model, cache_dir, ids, out, json_, options)
    if not videos or cache_dir or ids:
        console.print("[bold red]error:[/] give VIDEOS (--cache and --ids go with --timeline or --explain)", highlight=False)
        raise typer.Exit(2)
    results = _run(lambda: predict_mod.predict(videos, model, top_k=top_k))
    if json_:
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                console.print(f"[red]{r['path']}[/]: {r['error']}", highlight=False)
                continue
            shown = f"labels {';'.join(r['labels']) or '(none above threshold)'} · top " if "labels" in r else ""
            typer.echo(f"{r['path']}: {shown}" + ", ".join(f"{label} {prob:.2f}" for label, prob in r["top"]))
    if all("error" in r for r in results):
        raise typer.Exit(1)


def _timeline(videos: list[Path], model: Path, cache_dir: Path | None, ids: list[str] | None, out: Path,
              json_: bool, options: dict[str, Any]) -> None:
    """``predict --timeline`` / ``--explain``: from files (extracted into ``cache_dir`` or a temporary cache) or
    from a cache."""
    import json

    from cmmvt.eval import timeline as tl_mod

    if videos and ids:
        console.print("[bold red]error:[/] give VIDEOS or --ids, not both", highlight=False)
        raise typer.Exit(2)
    if not videos and not cache_dir:
        console.print("[bold red]error:[/] give VIDEOS, or --cache (with --ids or for every clip)", highlight=False)
        raise typer.Exit(2)
    if videos:
        results = _run(lambda: tl_mod.from_files(videos, model, cache_dir, show_progress=not json_, **options))
    else:
        results = _run(lambda: tl_mod.from_cache(cache_dir, ids, model, **options))
    report = []
    for r in results:
        if isinstance(r, dict):
            console.print(f"[red]{r['path']}[/]: {r['error']}", highlight=False)
            report.append(r)
            continue
        files = tl_mod.write(r, out)
        report.append({"video_id": r.video_id, "segments": [vars(s) for s in r.segments],
                        "files": {k: str(v) for k, v in files.items()}})
        if not json_:
            typer.echo(f"{r.video_id}: {r.duration:.1f} s, {len(r.starts)} windows, {len(r.segments)} segments → "
                       f"{files['png']}")
            for s in r.segments:
                typer.echo(f"  {s.start:8.1f} – {s.end:8.1f} s  {s.label}  {s.probability:.2f}")
    if json_:
        typer.echo(json.dumps(report, indent=2))
    if all("error" in r for r in report):
        raise typer.Exit(1)


@app.command()
def ablate(
    grid: Annotated[str, typer.Option(help="The grid: " + ", ".join(
        f"{g.name} ({len(g.points())} runs)" for g in ablate_mod.GRIDS.values()) + ".")] = "default",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Experiments in parallel; each gets cores // jobs "
                                                           "torch threads.")] = 1,
    force: Annotated[bool, typer.Option(help="Also rerun the experiments that already succeeded.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the dvc commands; queue nothing.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between progress polls.", hidden=True)] = 5.0,
) -> None:
    """Run an ablation grid as queued DVC experiments, wait for it and record its wall time.

    Each point is a `dvc exp run --queue` (attention × modality × pretraining objective × seed); only
    prototypes, pretrain, train and evaluate run, never synth, prepare or extract (the command refuses
    while those are stale). Experiments that already succeeded on this commit are skipped; failed ones
    are queued again. The record goes to reports/ablations/grid-<grid>.json; then run `cmmvt report`.

    Examples:
        cmmvt ablate --grid smoke
        cmmvt ablate --jobs 2
        cmmvt ablate --grid attention --dry-run
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    root = Path.cwd()
    g = _run(lambda: ablate_mod.get_grid(grid))
    if dry_run:
        _run(lambda: ablate_mod.check_upstream(root))
        p = _run(lambda: ablate_mod.plan(g, ablate_mod.experiments(root), force))
        if p.replace:
            typer.echo("dvc exp remove " + " ".join(p.replace))
        for point in p.queue:
            typer.echo("dvc " + " ".join(ablate_mod.queue_command(point)))
        env, threads = ablate_mod.worker_env(jobs, base={})
        prefix = " ".join(f"{k}={v}" for k, v in env.items())
        typer.echo(f"{prefix} dvc queue start -j {jobs}")
        console.print(f"{len(p.queue)} to queue, {len(p.pending)} already queued or running, "
                      f"{len(p.done)} done", highlight=False)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        queueing = bar.add_task("queueing", total=None, visible=False)
        running = bar.add_task("running", total=len(g.points()), visible=False)

        def on_poll(states: Counter[str]) -> None:
            done = states["success"] + states["failed"] + states["missing"]
            bar.update(queueing, visible=False)
            bar.update(running, visible=True, total=sum(states.values()), completed=done,
                       description=f"running ({states['running']} now, {states['failed']} failed)")

        try:
            run = _run(lambda: ablate_mod.run_grid(root, g, jobs, force, say=bar.console.print,
                                                   on_queued=lambda done, total: bar.update(
                                                       queueing, visible=True, completed=done, total=total),
                                                   on_poll=on_poll, interval=interval))
        except KeyboardInterrupt:
            console.print("interrupted: the queued experiments keep running (`dvc queue status`, "
                          "`dvc queue kill`); `cmmvt report` shows what has finished", highlight=False)
            raise typer.Exit(130) from None
    if run:
        console.print(f"grid '{g.name}': {len(run['succeeded'])} succeeded, {len(run['failed'])} failed, "
                      f"{len(run['skipped'])} skipped in {run['wall_s']:.0f} s; stages run: "
                      + (", ".join(f"{s} {n}" for s, n in run["stages_run"].items()) or "none")
                      + "; next: cmmvt report", highlight=False)
    if run and run["failed"]:
        raise typer.Exit(1)


@app.command()
def report(
    grid: Annotated[str, typer.Option(help="The grid to report; what it lacks is listed.")] = "default",
    rev: Annotated[str | None, typer.Option(help="Baseline commit of the experiments (default: the one "
                                                 "`cmmvt ablate` recorded, else HEAD).")] = None,
    out: Annotated[Path, typer.Option(help="The markdown report.")] = Path("reports/ablations.md"),
    results: Annotated[bool, typer.Option("--results", help="Also fill the <!-- ablations:begin --> block of "
                                                            "reports/RESULTS.md.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only check the results blocks of README.md, "
                                                        "reports/RESULTS.md and docs/*.md: exit 1 naming each one "
                                                        "measured before the last change to the code its numbers "
                                                        "depend on.")] = False,
) -> None:
    """Build the ablation report from the experiments' params and metrics (`dvc exp show --json`).

    One table per axis and one per configuration (test top-1 with a 95 % bootstrap interval over runs and
    test clips, read from each experiment's predictions.csv; best in bold), each axis's paired differences
    against its default value (within noise or not, in words), a bar chart with the intervals
    (reports/ablations/top1.png), the grid's wall time, and what is missing or failed. Works on any part of a
    grid that has run.

    Examples:
        cmmvt report
        cmmvt report --grid attention --out reports/attention.md
        cmmvt report --grid poster --results
        cmmvt report --check
    """
    from cmmvt.experiments import report as report_mod

    root = Path.cwd()
    if check:
        return _check_blocks(root)
    g = _run(lambda: ablate_mod.get_grid(grid))
    r = _run(lambda: report_mod.build(root, g, rev, out))
    if results:
        _run(lambda: report_mod.update_results(root / report_mod.RESULTS, r.body))
    console.print(f"{r.path}: {r.results} of {r.results + r.problems} experiments of grid '{g.name}' have a "
                  f"result" + (f", {r.problems} missing or failed (listed there)" if r.problems else "")
                  + (f"; grid wall time {report_mod.duration(r.wall_s)}" if r.wall_s is not None else "")
                  + (f"; {report_mod.RESULTS} updated" if results else ""), highlight=False)


@app.command()
def preset(
    name: Annotated[str, typer.Argument(help="grid | default")],
    params: Annotated[Path, typer.Option(help="The params file written in place.")] = Path("params.yaml"),
) -> None:
    """Write a params preset into params.yaml in place, comments kept.

    `grid` sizes the synthetic set so that the ablation grid's test split resolves its differences (60 clips per
    class, 40/20/40 % splits: 240 test clips); `default` writes the defaults back. Then `dvc repro` renders and
    extracts the data once, commit, and `cmmvt ablate` queues the grid on it.

    Examples:
        cmmvt preset grid && dvc repro && git commit -qam "grid preset" && cmmvt ablate
        cmmvt preset default
    """
    from cmmvt.experiments import presets

    changed = _run(lambda: presets.apply(params, name))
    for key, (old, new) in changed.items():
        console.print(f"{params}: {key} {old} → {new}", highlight=False)
    console.print(f"{params}: preset {name}" + (", nothing to change" if not changed else
                                                "; next: dvc repro (renders and extracts the clips once)"),
                  highlight=False)


def _check_blocks(root: Path) -> None:
    """``report --check``: each results block of README.md, reports/RESULTS.md and docs/*.md under ``root`` measured
    before a change to the code it depends on, as ``<file>:<line>``."""
    from cmmvt.experiments import provenance

    checked = _run(lambda: provenance.check_files(root))
    total = stale_n = 0
    for path, (blocks, stale) in checked.items():
        total, stale_n = total + len(blocks), stale_n + len(stale)
        for s in stale:
            b = s.block
            console.print(f"[red]{path.relative_to(root).as_posix()}:{b.line}[/]: measured on {b.commit} ({b.data}); "
                          f"{len(s.changes)} later commit(s) change {', '.join(b.depends)}, newest: "
                          f"{s.changes[0][:72]}", highlight=False)
    files = ", ".join(f"{p.relative_to(root).as_posix()} {len(b)}" for p, (b, _) in checked.items() if b)
    typer.echo(f"{total - stale_n} of {total} results blocks current" + (f" ({files})" if files else ""))
    if stale_n:
        raise typer.Exit(1)


def _world(shard: str | None = None) -> Any:  # cmmvt.distributed.World, imported lazily (torch)
    """This process among torchrun's, or rank i of N by ``--shard i/N``, else one process; its errors name its
    rank from here on."""
    from cmmvt import distributed

    try:
        world = distributed.from_env(shard)
    except ValueError as exc:
        _fail(str(exc))
    _state["who"] = world.label()
    return world


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
