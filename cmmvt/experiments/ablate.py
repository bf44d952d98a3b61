"""Ablation grids as queued DVC experiments (``cmmvt ablate``).

A grid is the product of three axes and the seeds: ``model.attention`` (local, global) × the modality
variant (video, audio, av-late, av-early) × ``pretrain.objective`` (none, xdc, infonce) × seeds. Each
point becomes one ``dvc exp run --queue -n NAME -S key=value …``; ``dvc queue start -j N`` runs them.
The grid changes no ``data.*`` or ``extract.*`` key and ``seed`` is the experiment seed only (the data
has ``data.seed``), so every experiment checks the clips and feature caches out of the DVC cache and
runs ``prototypes`` (once per seed), ``pretrain``, ``train`` and ``evaluate`` only; ``pretrain`` ignores
``model.modalities``, so DVC's run-cache lets the video, audio and av-late variants of one seed,
attention and objective share one pretraining run. :func:`check_upstream` refuses to queue when the
workspace's ``synth``/``prepare``/``extract`` stages are stale (every experiment would re-extract), and
:func:`stage_runs` counts what the experiments actually ran, from their logs.

Names are deterministic, ``abl-<attention>-<modality>-<objective>-s<seed>`` (``-`` in a variant becomes
``_``: ``abl-local-av_early-xdc-s0``). Re-running ``ablate`` on the same baseline commit skips the
experiments that succeeded or are already queued or running and queues the failed ones again;
``force`` removes the succeeded ones (``dvc exp remove``) and queues them again. (Not ``dvc exp run -f``:
that also forces every stage to run, extraction included.)

With ``jobs`` > 1 each experiment gets ``cpus // jobs`` threads (``OMP_NUM_THREADS``, which torch
reads), passed through the environment of ``dvc queue start`` to the queue workers it spawns and on to
every stage; ``HDF5_USE_FILE_LOCKING=FALSE`` lets parallel runs read the caches. Workers that were
already running keep their own environment (:func:`start` says so).

Example:
    >>> [p.name for p in GRIDS["smoke"].points()]
    ['abl-local-video-none-s0', 'abl-local-av_late-none-s0']
    >>> GRIDS["default"].points()[0].overrides()
    ['model.attention=local', 'model.modalities=video', 'model.fusion=late', 'pretrain.objective=none', 'seed=0']
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cmmvt import config
from cmmvt.config import PathParams
from cmmvt.distributed import cores
from cmmvt.io import atomic_write_text

# Modality variant → overrides. Single-modality models cannot load an early-fusion pretrained checkpoint,
# so they use late fusion (a single encoder either way).
MODALITY_VARIANTS: dict[str, tuple[str, ...]] = {
    "video": ("model.modalities=video", "model.fusion=late"),
    "audio": ("model.modalities=audio", "model.fusion=late"),
    "av-late": ("model.modalities=av", "model.fusion=late"),
    "av-early": ("model.modalities=av", "model.fusion=early"),
}
AXES = ("attention", "modality", "objective")
METRICS_FILE = f"{PathParams().reports}/eval/metrics.json"  # as DVC names it in `dvc exp show`
UPSTREAM = ("synth", "prepare", "extract")  # stages an ablation must never run
OUT_DIR = Path("reports/ablations")
TERMINAL = ("success", "failed")


class AblateError(RuntimeError):
    """A grid that cannot be queued or run as asked; ``str()`` says what to do."""


@dataclass(frozen=True)
class Point:
    """One experiment of a grid: a configuration and a seed."""

    attention: str
    modality: str
    objective: str
    seed: int

    @property
    def config(self) -> tuple[str, str, str]:
        """The configuration without the seed: ``(attention, modality, objective)``."""
        return self.attention, self.modality, self.objective

    @property
    def name(self) -> str:
        """The DVC experiment name, e.g. ``abl-local-av_early-xdc-s0``."""
        parts = (self.attention, self.modality.replace("-", "_"), self.objective)
        return "abl-" + "-".join(parts) + f"-s{self.seed}"

    def overrides(self) -> list[str]:
        """The ``-S key=value`` params overrides of this experiment."""
        return [f"model.attention={self.attention}", *MODALITY_VARIANTS[self.modality],
                f"pretrain.objective={self.objective}", f"seed={self.seed}"]


@dataclass(frozen=True)
class Grid:
    """A named product of axis values and seeds."""

    name: str
    attention: tuple[str, ...]
    modality: tuple[str, ...]
    objective: tuple[str, ...]
    seeds: tuple[int, ...]

    def points(self) -> list[Point]:
        """Every experiment, seeds outermost: the first runs cover every configuration once, and variants
        that share a pretraining run (video, audio, av-late) are a few places apart, so the first has
        finished and filled the run-cache before the next starts."""
        return [Point(a, m, o, s) for s, a, m, o in
                itertools.product(self.seeds, self.attention, self.modality, self.objective)]

    def values(self, axis: str) -> tuple[str, ...]:
        """The values of one axis (``attention``, ``modality`` or ``objective``)."""
        return getattr(self, axis)


GRIDS: dict[str, Grid] = {g.name: g for g in (
    Grid("default", ("local", "global"), tuple(MODALITY_VARIANTS), ("none", "xdc", "infonce"), (0, 1, 2)),
    # the poster's next steps (local vs global attention, video vs audio vs audio-video) at the default pretraining
    Grid("poster", ("local", "global"), tuple(MODALITY_VARIANTS), ("infonce",), (0, 1, 2)),
    # one axis around the defaults (local attention, av-early, infonce)
    Grid("attention", ("local", "global"), ("av-early",), ("infonce",), (0, 1, 2)),
    Grid("modality", ("local",), tuple(MODALITY_VARIANTS), ("infonce",), (0, 1, 2)),
    Grid("objective", ("local",), ("av-early",), ("none", "xdc", "infonce"), (0, 1, 2)),
    Grid("smoke", ("local",), ("video", "av-late"), ("none",), (0,)),  # 2 runs sharing one pretrain run
)}


def get_grid(name: str) -> Grid:
    """The grid called ``name``.

    Raises:
        AblateError: No such grid (the message lists the known ones).
    """
    if name not in GRIDS:
        raise AblateError(f"--grid = {name!r} is not one of: {', '.join(GRIDS)}")
    return GRIDS[name]


@dataclass
class Experiment:
    """One DVC experiment as ``dvc exp show --json`` describes it."""

    name: str
    state: str  # queued | running | success | failed
    params: dict[str, Any] = field(default_factory=dict)  # params.yaml as the experiment ran it
    metrics: dict[str, Any] = field(default_factory=dict)  # reports/eval/metrics.json ({} when absent)
    error: str | None = None
    log: str | None = None  # the executor's log file, when DVC kept one
    timestamp: str = ""
    rev: str = ""  # the experiment's commit (its reports/eval/predictions.csv is read from there)

    def param(self, key: str) -> Any:
        """The params value at a dotted key (``None`` when absent)."""
        node: Any = self.params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node


_PRECEDENCE = {"success": 3, "running": 2, "queued": 1, "failed": 0}


def parse_exp_show(data: list[dict[str, Any]]) -> dict[str, Experiment]:
    """The named experiments of every baseline in ``dvc exp show --json`` output (DVC 3).

    A name can appear several times (a failed run, then a queued retry): the entry that matters wins,
    success over running over queued over failed, the newest among equals. A failed experiment carries
    its baseline's metrics in DVC's output; they are dropped here.
    """
    found: dict[str, Experiment] = {}
    for baseline in data:
        for exp in baseline.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            name = exp.get("name") or rev.get("name")
            if not name:
                continue
            executor = exp.get("executor") or {}
            error = (rev.get("error") or {}).get("msg")
            state = executor.get("state") or ("failed" if error else "success")
            state = "failed" if error and state == "success" else state
            body = rev.get("data") or {}
            e = Experiment(
                name=name, state=state, error=error, timestamp=body.get("timestamp") or "",
                params=(body.get("params") or {}).get("params.yaml", {}).get("data", {}),
                metrics={} if state == "failed" else
                (body.get("metrics") or {}).get(METRICS_FILE, {}).get("data", {}),
                log=(executor.get("local") or {}).get("log"), rev=rev.get("rev") or "",
            )
            old = found.get(name)
            if old is None or (_PRECEDENCE.get(e.state, -1), e.timestamp) > (_PRECEDENCE.get(old.state, -1),
                                                                              old.timestamp):
                found[name] = e
    return found


def dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m dvc ARGS`` in ``root`` (with ``env``, default: ours); return stdout.

    Raises:
        AblateError: A non-zero exit, with DVC's own message.
    """
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).replace("\n\n", "\n")
        raise AblateError(f"dvc {' '.join(args)} failed: {msg}")
    return proc.stdout


def experiments(root: Path, rev: str | None = None) -> dict[str, Experiment]:
    """The named experiments of ``rev`` (default: HEAD) in the repo at ``root``."""
    return parse_exp_show(json.loads(dvc(root, "exp", "show", "--json", *(["--rev", rev] if rev else []))))


def check_upstream(root: Path) -> None:
    """Refuse to ablate while the data stages are stale.

    Raises:
        AblateError: ``synth``, ``prepare`` or ``extract@*`` is not up to date in the workspace (then every
            queued experiment would regenerate the clips or re-extract the features).
    """
    if config.load(root / "params.yaml").train.task == "multilabel":
        raise AblateError("train.task = 'multilabel': the ablation grids compare test top-1, which clips with several "
                          "labels do not have; compare mAP from `dvc exp show` instead")
    stale = json.loads(dvc(root, "status", "--json", *UPSTREAM) or "{}")
    if stale:
        raise AblateError(f"stages {', '.join(sorted(stale))} are not up to date, so every experiment would "
                          f"rerun them: run `dvc repro extract` first (and commit dvc.lock)")


def worker_env(jobs: int, base: dict[str, str] | None = None) -> tuple[dict[str, str], int | None]:
    """The environment for ``dvc queue start -j jobs`` and the torch threads per experiment.

    With one job the environment is left as it is (threads ``None``: torch's default). With more, each
    experiment gets ``cores() // jobs`` threads (at least 1) so parallel runs do not oversubscribe the cores.
    """
    env = dict(os.environ if base is None else base) | {"HDF5_USE_FILE_LOCKING": "FALSE"}
    if jobs <= 1:
        return env, None
    threads = max(1, cores() // jobs)
    return env | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}, threads


def queue_command(point: Point) -> list[str]:
    """The ``dvc exp run --queue`` arguments of one experiment (what the README recipe types by hand)."""
    return ["exp", "run", "--queue", "-n", point.name, *(arg for o in point.overrides() for arg in ("-S", o))]


@dataclass
class Plan:
    """What ``ablate`` does with each point of a grid."""

    queue: list[Point]  # to queue now
    pending: list[Point]  # already queued or running: waited for, not queued again
    done: list[Point]  # succeeded on this baseline: skipped
    replace: list[str] = field(default_factory=list)  # succeeded experiments removed before queueing again


def plan(grid: Grid, existing: dict[str, Experiment], force: bool = False) -> Plan:
    """Split the grid's points by what already exists on the baseline (see the module docstring)."""
    out = Plan([], [], [])
    for point in grid.points():
        state = existing[point.name].state if point.name in existing else None
        if state in ("queued", "running"):
            out.pending.append(point)
        elif state == "success" and not force:
            out.done.append(point)
        else:
            out.queue.append(point)
            if state == "success":
                out.replace.append(point.name)
    return out


def enqueue(root: Path, points: list[Point], replace: Sequence[str] = (),
            on_queued: Callable[[int, int], None] | None = None) -> None:
    """``dvc exp remove`` the experiments to replace, then ``dvc exp run --queue`` each point (about a
    second each: DVC stashes the workspace every time)."""
    if replace:
        dvc(root, "exp", "remove", *replace)
    for i, point in enumerate(points):
        dvc(root, *queue_command(point))
        if on_queued:
            on_queued(i + 1, len(points))


def start(root: Path, jobs: int, env: dict[str, str]) -> int:
    """``dvc queue start -j jobs`` with ``env``; return how many workers were started.

    Fewer than ``jobs`` means some were already running: those keep the environment they started with.
    """
    out = dvc(root, "queue", "start", "-j", str(jobs), env=env)
    started = re.search(r"Started '(\d+)'", out)
    return int(started.group(1)) if started else 0


def queue_states(root: Path) -> dict[str, set[str]]:
    """The states of DVC's experiment tasks by name (``queued``, ``running``, ``success``, ``failed``).

    Read from the task queue, which costs a fraction of a second; ``dvc exp show`` reads every
    experiment's params and metrics (9 s of CPU for 74 experiments here), too much to poll with.
    A name can have several tasks (an old failure and its retry).
    """
    from dvc.repo import Repo

    states: dict[str, set[str]] = {}
    with Repo(str(root)) as repo:
        for task in repo.experiments.celery_queue.status():
            states.setdefault(task.get("name") or "", set()).add(str(task["status"]).lower())
    return states


def workers(root: Path) -> int:
    """Queue workers alive, active or idle."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return len(repo.experiments.celery_queue.worker_status())


def _progress_state(states: set[str]) -> str:
    """One state for a name while waiting: pending tasks win over finished ones."""
    return next((s for s in ("running", "queued", "success", "failed") if s in states), "missing")


def wait(root: Path, names: list[str], on_poll: Callable[[Counter[str]], None] | None = None,
         interval: float = 5.0) -> dict[str, Experiment]:
    """Poll the task queue until none of ``names`` is queued or running.

    Args:
        root: The repo.
        names: The experiments to wait for.
        on_poll: Called with the count of each state among ``names`` after every poll.
        interval: Seconds between polls.

    Returns:
        All experiments by name, from ``dvc exp show`` once the queue is done.

    Raises:
        AblateError: Experiments are still queued but no queue worker is left to run them.
    """
    idle_polls = 0
    while True:
        tasks = queue_states(root)
        states = Counter(_progress_state(tasks.get(n, set())) for n in names)
        if on_poll:
            on_poll(states)
        if states["queued"] + states["running"] == 0:
            return experiments(root)
        idle_polls = idle_polls + 1 if states["running"] == 0 else 0
        if idle_polls >= 3 and workers(root) == 0:
            raise AblateError(f"{states['queued']} experiments are queued but no queue worker is running: "
                              f"`dvc queue start` resumes them")
        time.sleep(interval)


_STAGE_LINE = re.compile(r"^(?:Running stage '([^']+)'|Stage '([^']+)' is cached - skipping run)")


def stage_runs(found: dict[str, Experiment], names: list[str]) -> dict[str, Counter[str]]:
    """How often the experiments ran each stage, and restored it from the run-cache, from their logs.

    Returns:
        ``{"ran": Counter(stage → runs), "restored": Counter(stage → run-cache restores)}``; experiments
        without a log file are left out.
    """
    ran: Counter[str] = Counter()
    restored: Counter[str] = Counter()
    for name in names:
        log = found[name].log if name in found else None
        if not log or not Path(log).is_file():
            continue
        for line in Path(log).read_text(errors="replace").splitlines():
            m = _STAGE_LINE.match(line)
            if m and m.group(1):
                ran[m.group(1)] += 1
            elif m:
                restored[m.group(2)] += 1
    return {"ran": ran, "restored": restored}


def upstream_reruns(runs: Counter[str]) -> list[str]:
    """The data stages among ``runs`` (``extract@video`` counts as ``extract``): these must never run."""
    return sorted(s for s in runs if s.split("@")[0] in UPSTREAM)


def grid_record_path(root: Path, grid: str) -> Path:
    """Where ``ablate`` records a grid's wall time and outcome: ``reports/ablations/grid-<name>.json``."""
    return root / OUT_DIR / f"grid-{grid}.json"


def read_grid_record(root: Path, grid: str) -> dict[str, Any] | None:
    """The last ``ablate`` record of ``grid`` (``None`` if it never ran here)."""
    path = grid_record_path(root, grid)
    return json.loads(path.read_text()) if path.is_file() else None


def write_grid_record(root: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to :func:`grid_record_path` (atomically: tmp file, then rename)."""
    path = grid_record_path(root, record["grid"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def head(root: Path) -> str:
    """The commit the experiments are queued on."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def dirty(root: Path) -> list[str]:
    """Tracked files with uncommitted changes: DVC puts them into every queued experiment."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return [line[3:] for line in out.splitlines()]


def now() -> str:
    """Local time, ISO 8601 to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def run_grid(root: Path, grid: Grid, jobs: int = 1, force: bool = False, say: Callable[[str], None] = print,
             on_queued: Callable[[int, int], None] | None = None,
             on_poll: Callable[[Counter[str]], None] | None = None, interval: float = 5.0) -> dict[str, Any]:
    """Queue ``grid`` on HEAD, run it with ``jobs`` queue workers, wait, and record the run.

    The record (:func:`grid_record_path`) keeps one entry per ``ablate`` run on the same baseline commit:
    start and end time, wall time (queueing included), what was queued and skipped, successes, failures
    and the stages the experiments ran. Nothing is recorded when every experiment had already succeeded.

    Args:
        root: The repo.
        grid: The grid to run.
        jobs: Queue workers (experiments in parallel).
        force: Queue the experiments that already succeeded again too.
        say: Prints one informational line.
        on_queued: Called with (queued so far, to queue) after each experiment is queued.
        on_poll: Called with the count of each state among the grid's experiments while waiting.
        interval: Seconds between polls.

    Returns:
        The record of this run.

    Raises:
        AblateError: Stale data stages, a DVC command that failed, or a queue left without workers.
    """
    if jobs < 1:
        raise AblateError(f"--jobs = {jobs}: must be at least 1")
    check_upstream(root)
    baseline = head(root)
    p = plan(grid, experiments(root), force)
    if not p.queue and not p.pending:
        say(f"all {len(p.done)} experiments of grid '{grid.name}' already succeeded on {baseline[:7]}: "
            f"nothing to run (--force runs them again)")
        return {}
    if changed := dirty(root):
        say(f"uncommitted changes go into every experiment: {', '.join(changed)}")
    t0, started = time.perf_counter(), now()
    enqueue(root, p.queue, p.replace, on_queued)
    queued_s = time.perf_counter() - t0
    env, threads = worker_env(jobs)
    run: dict[str, Any] = {
        "started": started, "finished": None, "wall_s": None, "queue_s": round(queued_s, 1),
        "jobs": jobs, "threads_per_job": threads, "cpus": cores(),
        "queued": [q.name for q in p.queue], "waited_for": [q.name for q in p.pending],
        "skipped": [q.name for q in p.done],
    }
    record = read_grid_record(root, grid.name) or {}
    record = {"grid": grid.name, "baseline": baseline,
              "runs": record.get("runs", []) if record.get("baseline") == baseline else []}
    record["runs"].append(run)  # updated in place below, once the queue is done
    write_grid_record(root, record)
    if start(root, jobs, env) < jobs:
        say("some queue workers were already running: they keep their own thread settings")
    names = run["queued"] + run["waited_for"]
    found = wait(root, names, on_poll, interval)
    runs = stage_runs(found, names)
    run |= {
        "finished": now(), "wall_s": round(time.perf_counter() - t0, 1),
        "succeeded": [n for n in names if n in found and found[n].state == "success"],
        "failed": [n for n in names if n not in found or found[n].state != "success"],
        "stages_run": dict(runs["ran"]), "stages_restored": dict(runs["restored"]),
    }
    write_grid_record(root, record)
    if bad := upstream_reruns(runs["ran"]):
        say(f"warning: experiments ran {', '.join(bad)}: the features were not reused")
    return run
