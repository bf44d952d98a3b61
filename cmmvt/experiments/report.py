"""The ablation report (``cmmvt report``): tables and a bar chart from the experiments of a grid.

Reads the experiments of the grid's baseline commit (``dvc exp show --json``; the baseline recorded by
``cmmvt ablate``, else HEAD) and writes ``reports/ablations.md`` and ``reports/ablations/top1.png``:

* one table per axis (attention, modality, pretraining objective): test top-1 over every successful run at
  that axis value (so each averages over the other axes and the seeds) with its 95 % interval, a bootstrap
  over the runs and the test clips (:mod:`cmmvt.eval.intervals`), from each experiment's committed
  ``reports/eval/predictions.csv``; and, where ``metrics.json`` has it, top-1 on the order-only class pairs,
  mean ± std (population, ddof 0) over the runs;
* for each axis, the **paired difference** of every value against the axis's reference (the value the
  defaults give, ``params.yaml``; else the first): run for run with the same seed and other axes, clip for
  clip, with its interval, and in words whether it is within noise (the interval holds 0);
* one table of every configuration, over its seeds;
* the best row by test top-1 in bold; where a run's predictions cannot be read, mean ± std instead;
* the grid's wall time from ``reports/ablations/grid-<name>.json`` and the stages the experiments ran;
* a "missing or failed" list: every experiment of the grid that is not a success with a test top-1 (not
  run, still queued or running, failed with the cause from its log, no metric, or params that differ
  from the grid's overrides).

It works on any subset of the grid that has run. :func:`update_results` puts the same body between
``<!-- ablations:begin -->`` and ``<!-- ablations:end -->`` in ``reports/RESULTS.md`` (``cmmvt report --results``),
where the published results live.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cmmvt.config import Params, PathParams, lookup
from cmmvt.eval import intervals
from cmmvt.experiments import provenance
from cmmvt.experiments.ablate import (AXES, MODALITY_VARIANTS, OUT_DIR, Experiment, Grid, Point, experiments,
                                      read_grid_record, upstream_reruns)

METRICS = {"top1": "test top-1", "order_pairs_top1": "order-only pairs top-1"}
AXIS_TITLES = {"attention": "attention", "modality": "modality", "objective": "pretraining objective"}
BEGIN, END = "<!-- ablations:begin -->", "<!-- ablations:end -->"
REPORT = Path("reports/ablations.md")
RESULTS = Path("reports/RESULTS.md")  # the published results, whose ablation block --results fills
CHART = OUT_DIR / "top1.png"
PREDICTIONS = f"{PathParams().reports}/eval/predictions.csv"  # per test clip: video_id, actual, predicted
PIPELINE = ("synth", "prepare", "extract@video", "extract@audio", "prototypes", "pretrain", "train", "evaluate")


class ReportError(ValueError):
    """A report that cannot be written as asked."""


@dataclass
class Row:
    """One table row: the axis values it stands for and the metric values of its runs."""

    label: tuple[str, ...]
    values: dict[str, list[float]]  # metric → one value per successful run
    expected: int  # runs the grid plans for this row
    scores: list[np.ndarray] = field(default_factory=list)  # per run with predictions: (N,) right / wrong per test clip

    def interval(self) -> intervals.Interval | None:
        """Test top-1 with its 95 % interval over runs and clips, when every run's predictions were read."""
        if not self.scores or len(self.scores) != len(self.values["top1"]):
            return None
        return intervals.bootstrap(np.stack(self.scores))  # (R, N)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        """Mean and population std of ``metric`` over the runs that have it (``None``: no run has it)."""
        v = self.values.get(metric, [])
        return (float(np.mean(v)), float(np.std(v))) if v else None


def failure(exp: Experiment) -> str:
    """Why an experiment failed: the last exception or DVC error line of its log, else DVC's message."""
    if exp.log and Path(exp.log).is_file():
        lines = Path(exp.log).read_text(errors="replace").splitlines()
        causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", ln)] or \
                 [ln for ln in lines if ln.startswith("ERROR:")]
        if causes:
            return causes[-1].strip()[:200]
    return exp.error or "failed"


def mismatch(point: Point, exp: Experiment) -> list[str]:
    """The grid overrides that the experiment's params do not carry (``[]``: it is the grid's point)."""
    wrong = []
    for override in point.overrides():
        key, value = override.split("=", 1)
        if exp.param(key) != yaml.safe_load(value):
            wrong.append(f"{key}={exp.param(key)!r}")
    return wrong


def classify(grid: Grid, found: dict[str, Experiment]) -> tuple[dict[Point, Experiment], list[tuple[Point, str]]]:
    """Split the grid's points into results (success with a test top-1) and problems (point, why)."""
    results: dict[Point, Experiment] = {}
    problems: list[tuple[Point, str]] = []
    for point in grid.points():
        exp = found.get(point.name)
        if exp is None:
            problems.append((point, "not run"))
        elif exp.state in ("queued", "running"):
            problems.append((point, exp.state))
        elif exp.state == "failed":
            problems.append((point, f"failed: {failure(exp)}"))
        elif wrong := mismatch(point, exp):
            problems.append((point, f"params differ from the grid: {', '.join(wrong)}"))
        elif not isinstance(exp.metrics.get("top1"), (int, float)):
            problems.append((point, "no top1 in reports/eval/metrics.json"))
        else:
            results[point] = exp
    return results, problems


def predictions(root: Path, exp: Experiment) -> dict[str, bool] | None:
    """Per test clip, right or wrong, from the ``predictions.csv`` committed with the experiment (``None``: none)."""
    if not exp.rev:
        return None
    shown = subprocess.run(["git", "show", f"{exp.rev}:{PREDICTIONS}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    df = pd.read_csv(io.StringIO(shown.stdout), dtype=str)
    return dict(zip(df["video_id"], df["actual"] == df["predicted"]))


def clip_scores(per_run: dict[Point, dict[str, bool] | None]) -> dict[Point, np.ndarray]:
    """(N,) scores per run on the test clips every run has, in one order (so runs pair clip for clip)."""
    read = {p: v for p, v in per_run.items() if v}
    if not read:
        return {}
    common = sorted(set.intersection(*(set(v) for v in read.values())))
    return {p: np.array([v[c] for c in common], dtype=float) for p, v in read.items()} if common else {}


def rows(grid: Grid, results: dict[Point, Experiment], axes: tuple[str, ...],
         scores: dict[Point, np.ndarray] | None = None) -> list[Row]:
    """One row per combination of the values of ``axes`` in grid order, pooling the other axes and seeds."""
    out: dict[tuple[str, ...], Row] = {}
    for point in grid.points():
        key = tuple(getattr(point, a) for a in axes)
        row = out.setdefault(key, Row(key, {m: [] for m in METRICS}, 0))
        row.expected += 1
        if point in results:
            for m in METRICS:
                if isinstance(v := results[point].metrics.get(m), (int, float)):
                    row.values[m].append(float(v))
            if scores and point in scores:
                row.scores.append(scores[point])
    return list(out.values())


def reference(grid: Grid, axis: str) -> str:
    """The value of ``axis`` the defaults give (``params.yaml`` equals :class:`Params`), else the grid's first."""
    p = Params()
    default = {"attention": p.model.attention, "objective": p.pretrain.objective,
               "modality": next((name for name, o in MODALITY_VARIANTS.items()
                                 if f"model.modalities={p.model.modalities}" in o
                                 and (p.model.modalities != "av" or f"model.fusion={p.model.fusion}" in o)), "")}[axis]
    values = grid.values(axis)
    return default if default in values else values[0]


def paired(grid: Grid, scores: dict[Point, np.ndarray], axis: str) -> list[tuple[str, intervals.Interval | None, int]]:
    """For each value of ``axis`` but the reference: (value, paired test top-1 difference value − reference with its
    interval, pairs), over the runs that differ from a reference run in ``axis`` only (same seed, other axes)."""
    ref = reference(grid, axis)
    out = []
    for value in grid.values(axis):
        if value == ref:
            continue
        pairs = [(scores[p], scores[q]) for p in grid.points() if getattr(p, axis) == value
                 if p in scores and (q := dataclasses.replace(p, **{axis: ref})) in scores]
        diff = intervals.bootstrap(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])) if pairs else None
        out.append((value, diff, len(pairs)))
    return out


def differences(grid: Grid, scores: dict[Point, np.ndarray]) -> str:
    """Markdown: the paired differences of every axis, and what they mean in words."""
    lines = ["| axis | value − reference | test top-1 difference [95 % interval] | pairs | reading |",
             "|---|---|---|---|---|"]
    for axis in AXES:
        if len(grid.values(axis)) < 2:
            continue
        ref = reference(grid, axis)
        for value, diff, n in paired(grid, scores, axis):
            if diff is None:
                lines.append(f"| {AXIS_TITLES[axis]} | {value} − {ref} | – | 0 | no pair has run |")
                continue
            reading = (f"{value} {'better' if diff.mean > 0 else 'worse'} than {ref}" if diff.excludes_zero
                       else "within noise: no difference")
            lines.append(f"| {AXIS_TITLES[axis]} | {value} − {ref} | {diff.signed()} | {n} | {reading} |")
    return "\n".join(lines)


def _cell(row: Row, metric: str) -> str:
    if metric == "top1" and (iv := row.interval()) is not None:
        return str(iv)
    stat, n = row.mean_std(metric), len(row.values[metric])
    if stat is None:
        return "–"
    return f"{stat[0]:.3f}" if n == 1 else f"{stat[0]:.3f} ± {stat[1]:.3f}"


def table(header: list[str], table_rows: list[Row], metrics: list[str]) -> str:
    """A markdown table: the label columns, one column per metric, and runs done / planned; best top-1 bold."""
    means = [r.mean_std("top1") for r in table_rows]
    best = max((m[0] for m in means if m), default=None)
    lines = ["| " + " | ".join(header + [METRICS[m] for m in metrics] + ["runs"]) + " |",
             "|" + "---|" * (len(header) + len(metrics) + 1)]
    for r, mean in zip(table_rows, means):
        n = len(r.values["top1"])
        cells = [*r.label, *(_cell(r, m) for m in metrics), f"{n}/{r.expected}"]
        if best is not None and mean is not None and np.isclose(mean[0], best):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """``52 min 30 s``."""
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def _run_line(run: dict[str, Any]) -> str:
    """One ``ablate`` run: wall time, experiments, jobs and threads, start → end."""
    wall = duration(run["wall_s"]) if run.get("wall_s") is not None else "unfinished"
    count = len(run["queued"]) + len(run.get("waited_for", []))
    threads = f" × {run['threads_per_job']} thread{'s' * (run['threads_per_job'] > 1)}" \
        if run.get("threads_per_job") else ""
    start, end = run["started"][:16].replace("T", " "), (run.get("finished") or "…")[:16].replace("T", " ")
    skipped = f", {len(run['skipped'])} skipped (already done)" if run.get("skipped") else ""
    return (f"{wall} for {count} experiments, {run['jobs']} job{'s' * (run['jobs'] > 1)}{threads} on "
            f"{run['cpus']} CPUs ({start} → {end}{skipped})")


def _listed(counts: Counter[str]) -> str:
    """``stage n, …`` in pipeline order."""
    order = {s: i for i, s in enumerate(PIPELINE)}
    return ", ".join(f"{s} {n}" for s, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order))))


def timing(record: dict[str, Any] | None, grid: Grid) -> str:
    """Wall time of every ``ablate`` run of the grid on this baseline and the stages its experiments ran."""
    if not record or not record.get("runs"):
        return f"Wall time: not recorded (no `cmmvt ablate --grid {grid.name}` run of this commit here)."
    runs = record["runs"]
    ran: Counter[str] = Counter()
    restored: Counter[str] = Counter()
    for run in runs:
        ran.update(run.get("stages_run", {}))
        restored.update(run.get("stages_restored", {}))
    if len(runs) == 1:
        text = f"Wall time of grid `{grid.name}`: **{_run_line(runs[0])}**."
    else:
        total = sum(r["wall_s"] for r in runs if r.get("wall_s") is not None)
        text = f"Wall time of grid `{grid.name}`: **{duration(total)}** in {len(runs)} `cmmvt ablate` runs:\n\n"
        text += "\n".join(f"- {_run_line(r)}" for r in runs) + "\n\n"
    if ran or restored:
        bad = upstream_reruns(ran)
        text += (f" Stages run by the experiments: {_listed(ran) or 'none'}"
                 + (f"; restored from DVC's run-cache: {_listed(restored)}" if restored else "")
                 + (f". **Data stages reran: {', '.join(bad)}.**" if bad else
                    "; synth, prepare and extract never ran."))
    return text.replace("\n\n ", "\n\n")


def render(grid: Grid, baseline: str, results: dict[Point, Experiment], problems: list[tuple[Point, str]],
           record: dict[str, Any] | None, chart: str | None, scores: dict[Point, np.ndarray] | None = None) -> str:
    """The report body in markdown (no title), ``chart`` the image path relative to the document."""
    metrics = [m for m in METRICS if any(m in e.metrics for e in results.values())]
    total = len(grid.points())
    scores = scores or {}
    clips = len(next(iter(scores.values()))) if scores else 0
    out = [f"Grid `{grid.name}` on baseline commit `{baseline[:7]}`: {len(results)} of {total} experiments "
           f"have a result. Test split ({clips} clips read from {len(scores)} runs' predictions): top-1 mean over "
           "the runs [95 % bootstrap interval over runs and test clips]; mean ± std (population) where a run's "
           "predictions could not be read, and for the order-only pairs; runs = done / planned; **bold**: best "
           "test top-1.", "", timing(record, grid), ""]
    if chart and results:
        out += [f"![test top-1 by configuration]({chart})", ""]
    for axis in AXES:
        if len(grid.values(axis)) > 1:
            out += [f"**By {AXIS_TITLES[axis]}** (pooled over the other axes and seeds)", "",
                    table([axis], rows(grid, results, (axis,), scores), metrics), ""]
    if any(len(grid.values(a)) > 1 for a in AXES):
        out += ["**Paired differences** (each value against the axis's reference, the default: run for run with the "
                "same seed and other axes, clip for clip; an interval holding 0 is no difference)", "",
                differences(grid, scores), ""]
    out += ["**Every configuration** (over seeds)", "", table(list(AXES), rows(grid, results, AXES, scores), metrics),
            ""]
    if problems:
        out += [f"**Missing or failed** ({len(problems)} of {total})", ""]
        out += [f"- `{point.name}`: {why}" for point, why in problems] + [""]
    else:
        out += ["Nothing missing: every experiment of the grid has a result.", ""]
    return "\n".join(out)


def plot(grid: Grid, results: dict[Point, Experiment], path: Path, scores: dict[Point, np.ndarray] | None = None) -> None:
    """Bar chart with 95 % interval bars (std where predictions are missing): one panel per axis with several
    values, then every configuration (bars grouped by modality and objective, one colour per attention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [a for a in AXES if len(grid.values(a)) > 1]
    groups = rows(grid, results, ("modality", "objective"), scores)
    fig = plt.figure(figsize=(max(8.0, 0.9 * len(groups) + 2), 7))
    grid_spec = fig.add_gridspec(2, max(1, len(axes)))
    for i, axis in enumerate(axes):
        ax = fig.add_subplot(grid_spec[0, i])
        axis_rows = rows(grid, results, (axis,), scores)
        _bars(ax, [axis_rows], [""], [r.label[0] for r in axis_rows])
        ax.set_title(f"by {AXIS_TITLES[axis]}", fontsize=10)
    ax = fig.add_subplot(grid_spec[1, :])
    configs = {r.label: r for r in rows(grid, results, AXES, scores)}
    _bars(ax, [[configs[(a, *g.label)] for g in groups] for a in grid.attention], list(grid.attention),
          ["\n".join(g.label) for g in groups])
    ax.set_title("every configuration (attention by colour)", fontsize=10)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, loc="upper right", ncol=len(grid.attention))
    fig.suptitle(f"grid {grid.name}: test top-1, mean and 95 % interval (runs × clips)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, series: list[list[Row]], names: list[str], ticks: list[str]) -> None:
    """Side-by-side bars of top-1 mean with interval (else std) error bars: one series per name, one group per tick."""
    width = 0.8 / len(series)
    for i, (s, name) in enumerate(zip(series, names)):
        stats = []  # (mean, below, above)
        for r in s:
            iv, ms = r.interval(), r.mean_std("top1")
            stats.append((iv.mean, iv.mean - iv.low, iv.high - iv.mean) if iv else (ms[0], ms[1], ms[1]) if ms
                         else (np.nan, 0.0, 0.0))
        x = np.arange(len(s)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, [m for m, _, _ in stats], width, yerr=np.array([[lo for _, lo, _ in stats], [hi for _, _, hi in stats]]),
               capsize=3, label=name or None)
    ax.set_xticks(np.arange(len(ticks)), ticks, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test top-1", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


@dataclass
class Report:
    """What :func:`build` wrote."""

    body: str  # markdown without title; the block of reports/RESULTS.md
    path: Path
    chart: Path | None
    results: int
    problems: int
    wall_s: float | None  # the grid's recorded wall time, all ablate runs of its commit together


def build(root: Path, grid: Grid, rev: str | None = None, out: Path = REPORT,
          found: dict[str, Experiment] | None = None,
          per_run: dict[Point, dict[str, bool] | None] | None = None) -> Report:
    """Write the report of ``grid`` (markdown at ``root/out``, chart at ``root/reports/ablations/top1.png``).

    Args:
        root: The repo.
        grid: The grid whose experiments to report; anything missing is listed.
        rev: Baseline commit of the experiments (default: the one ``cmmvt ablate`` recorded, else HEAD).
        out: The markdown file, relative to ``root``.
        found: The experiments by name (default: ``dvc exp show --json`` of ``rev``).
        per_run: Per successful run, right / wrong per test clip id (default: each experiment's committed
            ``predictions.csv``, :func:`predictions`).
    """
    record = read_grid_record(root, grid.name)
    rev = rev or (record or {}).get("baseline") or "HEAD"
    if found is None:
        found = experiments(root, rev)
    if record and record.get("baseline") != rev:
        record = None  # measured on another commit: its wall time is not this report's
    results, problems = classify(grid, found)
    if per_run is None:
        per_run = {p: predictions(root, e) for p, e in results.items()}
    scores = clip_scores({p: v for p, v in per_run.items() if p in results})
    chart = root / CHART if results else None
    if chart:
        plot(grid, results, chart, scores)
    baseline = subprocess.run(["git", "rev-parse", rev], cwd=root, capture_output=True, text=True).stdout.strip()
    body = provenance.marker(code_commit(root, baseline or rev)[:7], f"{dataset(root, baseline or rev)}/grid-{grid.name}"
                             ) + "\n" + render(
        grid, baseline or rev, results, problems, record, os.path.relpath(CHART, out.parent) if chart else None, scores)
    (root / out).parent.mkdir(parents=True, exist_ok=True)
    (root / out).write_text("# Ablations\n\n" + body)
    walls = [r["wall_s"] for r in (record or {}).get("runs", []) if r.get("wall_s") is not None]
    return Report(body, root / out, chart, len(results), len(problems), sum(walls) if walls else None)


def _git(root: Path, *args: str) -> str | None:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def _params_only(changed: str) -> bool:
    """A commit that wrote params and the pipeline's results only (``params.yaml``, ``dvc.lock``, ``reports/``)."""
    return all(f in ("params.yaml", "dvc.lock") or f.startswith("reports/") for f in changed.split())


def code_commit(root: Path, rev: str) -> str:
    """``rev``, or its nearest first-parent ancestor where ``rev`` and the commits between only wrote a params preset
    and its ``dvc repro`` (:func:`_params_only`): the commit whose code the numbers measure, which the results
    block's marker names."""
    while (changed := _git(root, "diff", "--name-only", f"{rev}^", rev)) and _params_only(changed):
        rev = (_git(root, "rev-parse", f"{rev}^") or rev).strip()
    return rev


def dataset(root: Path, rev: str) -> str:
    """``synth-params`` (the synthetic set as the baseline's ``params.yaml`` defines it), or ``synth-preset-<name>``
    when it carries every value of a params preset (:mod:`cmmvt.experiments.presets`) but ``default``."""
    from cmmvt.experiments.presets import PRESETS

    text = _git(root, "show", f"{rev}:params.yaml")
    if text is None:
        return "synth-params"
    params = Params.model_validate(yaml.safe_load(text))
    found = [name for name, values in PRESETS.items() if name != "default"
             and all(lookup(params, k) == v for k, v in values.items())]
    return f"synth-preset-{found[0]}" if found else "synth-params"


def update_results(results: Path, body: str,
                   chart: str | None = os.path.relpath(CHART, RESULTS.parent).replace(os.sep, "/")) -> None:
    """Replace the text between the ``<!-- ablations:begin -->`` and ``<!-- ablations:end -->`` lines of the results
    file (``reports/RESULTS.md``) with ``body``.

    Only markers that stand on lines of their own count, so the file may quote them in prose.

    Args:
        results: The Markdown file that carries the block.
        body: The report body (:attr:`Report.body`), whose chart link is relative to the report.
        chart: The chart's path relative to ``results`` (default: ``reports/ablations/top1.png`` seen from
            ``reports/``).

    Raises:
        ReportError: The file is absent or lacks the markers.
    """
    if not results.is_file():
        raise ReportError(f"{results}: no such file (it carries the {BEGIN} … {END} block to fill)")
    text = results.read_text()
    # markers on lines of their own: the same strings quoted in prose (`<!-- … -->`) are not the block
    begin = re.search(rf"^{re.escape(BEGIN)}[ \t]*$", text, re.M)
    end = re.search(rf"^{re.escape(END)}[ \t]*$", text[begin.end():] if begin else "", re.M)
    if begin is None or end is None:
        raise ReportError(f"{results} has no {BEGIN} … {END} block (each marker on a line of its own) to fill")
    if chart:
        body = re.sub(r"!\[([^\]]*)\]\([^)]*\)", lambda m: f"![{m.group(1)}]({chart})", body)
    results.write_text(text[: begin.end()] + "\n" + body.strip() + "\n" + text[begin.end() + end.start():])
