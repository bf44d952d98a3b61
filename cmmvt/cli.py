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
console = Console(stderr=True)
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
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
    seed: Annotated[int | None, typer.Option(help="Random seed (default: params seed).")] = None,
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
                               "seed": seed})
    root = out or Path(p.data.root)
    paths = _run(lambda: synth_mod.make_dataset(root, p.data.synth, seed=p.seed, progress=True))
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
    report = _run(lambda: manifest_mod.prepare(p.data, seed=p.seed))
    console.print(manifest_mod.summary(report, p.data.manifest))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main() -> None:  # pragma: no cover - console entry for `python -m cmmvt`
    app(prog_name="cmmvt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
