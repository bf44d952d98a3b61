"""Ablation grids and the report: grid definitions, `dvc exp show --json` parsing, queue planning, the
report on fixture experiments (a failed run, a missing metric, foreign params, a queued and an absent one),
and a two-experiment grid end to end in a tiny copy of the repo."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmmvt.experiments import ablate, report
from cmmvt.experiments.ablate import Grid, Point

FIXTURE = Path(__file__).parent / "fixtures/exp_show.json"  # real DVC 3.67 output, trimmed and extended
GRID = Grid("fixture", ("local", "global"), ("video", "av-late"), ("none",), (0, 1, 2))


def found() -> dict[str, ablate.Experiment]:
    return ablate.parse_exp_show(json.loads(FIXTURE.read_text()))


def test_default_grid_is_72_distinct_named_experiments():
    points = ablate.GRIDS["default"].points()
    assert len(points) == 72 and len({p.name for p in points}) == 72
    assert {p.seed for p in points[:24]} == {0}  # every configuration once before the seeds repeat
    assert Point("local", "av-early", "xdc", 0).name == "abl-local-av_early-xdc-s0"
    assert len(ablate.GRIDS["smoke"].points()) == 2


@pytest.mark.parametrize("modality", list(ablate.MODALITY_VARIANTS))
def test_single_modality_variants_use_late_fusion(modality):
    overrides = dict(o.split("=") for o in Point("global", modality, "infonce", 2).overrides())
    assert overrides["model.fusion"] == ("early" if modality == "av-early" else "late")
    assert overrides["model.modalities"] == {"video": "video", "audio": "audio"}.get(modality, "av")
    assert (overrides["model.attention"], overrides["pretrain.objective"], overrides["seed"]) == ("global", "infonce",
                                                                                                   "2")


def test_unknown_grid_names_the_known_ones():
    with pytest.raises(ablate.AblateError, match="not one of: default, poster, attention, modality, objective, smoke"):
        ablate.get_grid("defualt")


def test_parse_exp_show_states_and_precedence():
    f = found()
    assert f["abl-local-av_late-none-s0"].state == "success"  # an older failed run of the same name loses
    assert f["abl-local-av_late-none-s0"].metrics["top1"] == 0.9
    assert f["abl-global-video-none-s0"].state == "failed"
    assert f["abl-global-video-none-s0"].metrics == {}  # DVC shows the baseline's metrics for a failed run
    assert f["abl-global-av_late-none-s1"].state == "queued"
    assert f["abl-global-video-none-s1"].param("model.fusion") == "early"
    assert f["abl-local-video-none-s0"].param("model.nope") is None


def test_plan_skips_done_and_pending_requeues_failed():
    p = ablate.plan(GRID, found())
    names = lambda points: {q.name for q in points}  # noqa: E731
    assert names(p.pending) == {"abl-global-av_late-none-s1"}
    assert "abl-global-video-none-s0" in names(p.queue)  # failed: queued again
    assert "abl-local-av_late-none-s0" in names(p.done) and not p.replace
    forced = ablate.plan(GRID, found(), force=True)
    assert "abl-local-av_late-none-s0" in forced.replace and not forced.done
    assert "-f" not in ablate.queue_command(forced.queue[0])  # exp run -f would rerun every stage


def test_worker_env_splits_the_cores(monkeypatch):
    monkeypatch.setattr(ablate, "cores", lambda: 4)
    env, threads = ablate.worker_env(2, base={"PATH": "/bin"})
    assert threads == 2 and env["OMP_NUM_THREADS"] == "2" and env["PATH"] == "/bin"
    assert env["HDF5_USE_FILE_LOCKING"] == "FALSE"
    assert ablate.worker_env(8, base={})[1] == 1
    env, threads = ablate.worker_env(1, base={"OMP_NUM_THREADS": "3"})
    assert threads is None and env["OMP_NUM_THREADS"] == "3"  # one job: the user's settings stand


def test_wait_until_done_or_the_queue_has_no_workers(monkeypatch):
    polls = iter([{"a": {"failed", "queued"}, "b": {"running"}}, {"a": {"failed", "success"}, "b": {"failed"}}])
    monkeypatch.setattr(ablate, "queue_states", lambda root: next(polls))
    monkeypatch.setattr(ablate, "experiments", lambda root: {"a": ablate.Experiment("a", "success")})
    seen = []
    assert set(ablate.wait(Path("."), ["a", "b"], seen.append, interval=0)) == {"a"}
    assert seen == [{"queued": 1, "running": 1}, {"success": 1, "failed": 1}]
    monkeypatch.setattr(ablate, "queue_states", lambda root: {"a": {"queued"}})
    monkeypatch.setattr(ablate, "workers", lambda root: 0)
    with pytest.raises(ablate.AblateError, match="1 experiments are queued but no queue worker is running"):
        ablate.wait(Path("."), ["a"], interval=0)


def test_stage_runs_from_logs(tmp_path):
    log = tmp_path / "x.out"
    log.write_text("Stage 'synth' didn't change, skipping\nRunning stage 'pretrain':\n"
                   "Stage 'prototypes' is cached - skipping run, checking out outputs\nRunning stage 'train':\n")
    f = {"a": ablate.Experiment("a", "success", log=str(log)), "b": ablate.Experiment("b", "failed")}
    runs = ablate.stage_runs(f, ["a", "b", "c"])
    assert runs["ran"] == {"pretrain": 1, "train": 1} and runs["restored"] == {"prototypes": 1}
    assert ablate.upstream_reruns(runs["ran"]) == []
    assert ablate.upstream_reruns({"extract@audio": 1, "train": 3}) == ["extract@audio"]


def test_report_on_fixture_experiments(tmp_path):
    f = found()
    log = tmp_path / "failed.out"
    log.write_text("Running stage 'train':\ncmmvt.config.ConfigError: params.yaml: train.epochs = 0: input should "
                   "be greater than or equal to 1\nERROR: failed to reproduce 'train'\n")
    f["abl-global-video-none-s0"].log = str(log)
    run = {"started": "2026-11-24T15:00:00+00:00", "finished": "2026-11-24T15:52:30+00:00", "wall_s": 3150.0,
           "queue_s": 70.0, "jobs": 2, "threads_per_job": 1, "cpus": 2, "queued": ["x"] * 12, "waited_for": [],
           "skipped": [], "stages_run": {"train": 12, "pretrain": 4, "evaluate": 12},
           "stages_restored": {"pretrain": 8}}
    ablate.write_grid_record(tmp_path, {"grid": "fixture", "baseline": "abc1234", "runs": [run]})

    r = report.build(tmp_path, GRID, found=f)
    md = r.path.read_text()
    assert r.path == tmp_path / "reports/ablations.md" and (r.results, r.problems, r.wall_s) == (4, 8, 3150.0)
    assert "52 min 30 s for 12 experiments, 2 jobs × 1 thread on 2 CPUs" in md
    assert "Stages run by the experiments: pretrain 4, train 12, evaluate 12; restored from DVC's run-cache: " \
           "pretrain 8; synth, prepare and extract never ran." in md
    assert "| **global** | **0.700** | **–** | **1/6** |" in md  # by attention: 0.700 > local's 0.644
    assert "| local | 0.644 ± 0.235 | 0.700 ± 0.100 | 3/6 |" in md
    assert "| **local** | **av-late** | **none** | **0.800 ± 0.100** | **0.700 ± 0.100** | **2/3** |" in md
    assert "| global | video | none | – | – | 0/3 |" in md
    for line in ("- `abl-global-video-none-s0`: failed: cmmvt.config.ConfigError: params.yaml: train.epochs = 0",
                 "- `abl-local-video-none-s1`: no top1 in reports/eval/metrics.json",
                 "- `abl-global-video-none-s1`: params differ from the grid: model.fusion='early'",
                 "- `abl-global-av_late-none-s1`: queued",
                 "- `abl-global-video-none-s2`: not run"):
        assert line in md
    assert "lucky-dace" not in md and "![test top-1 by configuration](ablations/top1.png)" in md
    assert (tmp_path / "reports/ablations/top1.png").stat().st_size > 10_000


def _experiment(point: Point, right: dict[str, bool]) -> ablate.Experiment:
    """A successful experiment of ``point`` whose params carry the point's overrides."""
    params: dict = {}
    for override in point.overrides():
        key, value = override.split("=", 1)
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return ablate.Experiment(point.name, "success", params=params, metrics={"top1": float(np.mean(list(right.values())))})


def test_report_intervals_and_paired_differences_on_a_constructed_grid(tmp_path):
    """200 test clips. local gets clips 0–139 right (0.70); global the same and 140–179 too (0.90, +0.20 on the same
    clips); video = av-early with two clips swapped (a difference of 0, within noise). Runs list their clips in other
    orders and one run has an extra clip: scores are paired by clip id on the clips every run has."""
    grid = Grid("constructed", ("local", "global"), ("av-early", "video"), ("none",), (0, 1, 2))
    ids = [f"c{i:03d}" for i in range(200)]
    per_run, found = {}, {}
    for p in grid.points():
        right = {c: i < (180 if p.attention == "global" else 140) for i, c in enumerate(ids)}
        if p.modality == "video":
            right[ids[0]], right[ids[199]] = False, True  # same count, other clips
        if p.seed == 1:
            right = dict(reversed(list(right.items()))) | {"extra": True}
        per_run[p], found[p.name] = right, _experiment(p, right)
    r = report.build(tmp_path, grid, found=found, per_run=per_run)
    md = r.path.read_text()
    assert r.results == 12 and "Test split (200 clips read from 12 runs' predictions)" in md

    by_attention = report.rows(grid, report.classify(grid, found)[0], ("attention",), report.clip_scores(per_run))
    local, glob = (row.interval() for row in by_attention)
    assert local.low < 0.70 < local.high and glob.low < 0.90 < glob.high and local.high < glob.low
    assert f"| local | {local} |" in md and f"| **global** | **{glob}** |" in md

    (diff,) = [d for v, d, n in report.paired(grid, report.clip_scores(per_run), "attention") if v == "global"]
    assert diff.mean == pytest.approx(0.20) and 0.10 < diff.low < diff.high < 0.30  # paired: tighter than unpaired
    assert report.reference(grid, "attention") == "local" and report.reference(grid, "modality") == "av-early"
    assert f"| attention | global − local | {diff.signed()} | 6 | global better than local |" in md
    (same,) = [d for _, d, _ in report.paired(grid, report.clip_scores(per_run), "modality")]
    assert same.mean == pytest.approx(0.0) and not same.excludes_zero
    assert "| modality | video − av-early | " in md and "| 6 | within noise: no difference |" in md


def test_report_without_results_or_record(tmp_path):
    r = report.build(tmp_path, ablate.GRIDS["smoke"], rev="HEAD", found={})
    md = r.path.read_text()
    assert r.results == 0 and r.chart is None and "Wall time: not recorded" in md
    assert "- `abl-local-video-none-s0`: not run" in md


def test_update_results_replaces_only_the_marked_block(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# x\n\n{report.BEGIN}\nplaceholder\n{report.END}\n\nafter\n")
    report.update_results(results, "table\n\n![chart](ablations/top1.png)\n", chart="ablations/top1.png")
    text = results.read_text()
    assert text == f"# x\n\n{report.BEGIN}\ntable\n\n![chart](ablations/top1.png)\n{report.END}\n\nafter\n"
    report.update_results(results, "table\n\n![chart](x.png)\n")  # default: the chart seen from reports/
    assert "![chart](ablations/top1.png)" in results.read_text()
    results.write_text("no markers")
    with pytest.raises(report.ReportError, match="ablations:begin"):
        report.update_results(results, "table")
    with pytest.raises(report.ReportError, match="no such file"):
        report.update_results(tmp_path / "none.md", "table")


def test_update_results_skips_markers_quoted_in_prose(tmp_path):
    """A file may quote the markers in a sentence; only the block whose markers stand alone is filled."""
    prose = f"`--results` fills the `{report.BEGIN}` and `{report.END}` markers below.\n"
    results = tmp_path / "RESULTS.md"
    results.write_text(f"{prose}\n## Ablation grid\n{report.BEGIN}\nNot run yet.\n{report.END}\ntail\n")
    report.update_results(results, "the table", chart=None)
    assert results.read_text() == f"{prose}\n## Ablation grid\n{report.BEGIN}\nthe table\n{report.END}\ntail\n"
    copy = tmp_path / "repo-RESULTS.md"
    copy.write_text((Path(__file__).resolve().parents[1] / report.RESULTS).read_text())
    report.update_results(copy, "GENERATED", chart=None)
    text = copy.read_text()
    assert text.count("GENERATED") == 1 and text.index("GENERATED") > text.index("## Ablation grid")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert report.BEGIN not in readme  # the published grid lives in reports/RESULTS.md only


@pytest.mark.slow
def test_smoke_grid_end_to_end(repo, run, dvc_cmd):
    """`cmmvt ablate --grid smoke` in a tiny repo: both experiments run downstream stages only (one
    pretraining shared through the run-cache) with the queue workers' environment; `cmmvt report` lists both."""
    run(dvc_cmd("repro"), repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)
    cli = [sys.executable, "-m", "cmmvt.cli"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # must reach the stages through `dvc queue start`'s workers
    out = run(cli + ["ablate", "--grid", "smoke", "--jobs", "1", "--interval", "2"], repo, env)
    assert "2 succeeded, 0 failed" in out, out

    record = json.loads((repo / "reports/ablations/grid-smoke.json").read_text())
    last = record["runs"][-1]
    assert last["succeeded"] == [p.name for p in ablate.GRIDS["smoke"].points()] and last["wall_s"] > 0
    assert last["stages_run"] == {"pretrain": 1, "train": 2, "evaluate": 2}  # no synth, prepare, extract
    assert last["stages_restored"] == {"pretrain": 1}  # video and av-late share one pretraining
    logs = [e.log for e in ablate.experiments(repo).values()]
    assert all("torch threads: 1" in Path(log).read_text() for log in logs)

    assert "nothing to run" in run(cli + ["ablate", "--grid", "smoke"], repo, env)
    plan = run(cli + ["ablate", "--dry-run"], repo)  # the default grid reuses the smoke grid's two experiments
    assert "70 to queue, 0 already queued or running, 2 done" in plan
    assert "dvc exp run --queue -n abl-global-av_early-infonce-s2 -S model.attention=global" in plan

    (repo / report.RESULTS).parent.mkdir(parents=True, exist_ok=True)  # the tiny repo copies no reports/
    (repo / report.RESULTS).write_text((Path(__file__).resolve().parents[1] / report.RESULTS).read_text())
    out = run(cli + ["report", "--grid", "smoke", "--results"], repo)
    assert "grid wall time" in out and "reports/RESULTS.md updated" in out
    md = (repo / "reports/ablations.md").read_text()
    assert all(f"| local | {m} | none |" in md or f"| **local** | **{m}** | **none** |" in md
               for m in ("video", "av-late"))
    assert "Nothing missing" in md and "synth, prepare and extract never ran" in md
    assert "clips read from 2 runs' predictions" in md  # each experiment's committed predictions.csv, via git
    assert "| modality | av-late − video | " in md and "| 1 |" in md  # the one seed's pair
    results = (repo / report.RESULTS).read_text()
    assert "Grid `smoke`" in results and "![test top-1 by configuration](ablations/top1.png)" in results



def test_preset_grid_writes_params_in_place_and_default_writes_them_back(tmp_path):
    """`cmmvt preset grid` changes only the preset's values (comments and layout kept); the manifest it gives has
    at least 200 test clips; `cmmvt preset default` restores the file byte for byte; a wrong name lists the known."""
    from typer.testing import CliRunner

    from cmmvt import config
    from cmmvt.cli import app
    from cmmvt.data import manifest

    params = tmp_path / "params.yaml"
    original = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    params.write_text(original)
    out = CliRunner().invoke(app, ["preset", "grid", "--params", str(params)])
    assert out.exit_code == 0, out.output
    assert "data.synth.clips_per_class 24 → 60" in out.output and "next: dvc repro" in out.output
    changed = [(a, b) for a, b in zip(original.splitlines(), params.read_text().splitlines()) if a != b]
    assert len(changed) == 2 and "clips_per_class: 60" in changed[1][1] and "# used only where" in changed[0][1]
    p = config.load(params)
    clips = tmp_path / "clips"
    for c in range(p.data.synth.classes):  # the grid preset's labelled clips as files (empty: prepare reads names)
        (clips / f"class{c}").mkdir(parents=True)
        for i in range(p.data.synth.clips_per_class):
            (clips / f"class{c}" / f"clip_{i:03d}.mp4").write_bytes(b"")
    df = manifest.prepare(p.data.model_copy(update={"source": "folder", "root": str(clips),
                                                    "manifest": str(tmp_path / "m.csv")}), seed=0)
    assert (manifest.read(tmp_path / "m.csv")["split"] == "test").sum() >= 200, df
    assert "nothing to change" in CliRunner().invoke(app, ["preset", "grid", "--params", str(params)]).output
    assert CliRunner().invoke(app, ["preset", "default", "--params", str(params)]).exit_code == 0
    assert params.read_text() == original
    bad = CliRunner().invoke(app, ["preset", "big", "--params", str(params)])
    assert bad.exit_code == 1 and "preset 'big' is not one of: grid, default" in bad.output


def test_report_marker_names_the_code_commit_under_a_preset_commit(tmp_path):
    """A grid run on a commit that only wrote the grid preset (params.yaml, dvc.lock) is marked with the commit of the
    code it measured and the preset's dataset name, so `report --check` reads it against the code's history."""
    import subprocess

    from cmmvt.experiments import presets

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "code")
    code = git("rev-parse", "HEAD")
    assert report.dataset(tmp_path, code) == "synth-params"
    presets.apply(tmp_path / "params.yaml", "grid")
    git("commit", "-qam", "grid preset")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/metrics.json").write_text("{}\n")
    git("add", "-A")
    git("commit", "-qm", "dvc repro on the preset")
    preset = git("rev-parse", "HEAD")
    assert report.code_commit(tmp_path, preset) == code and report.dataset(tmp_path, preset) == "synth-preset-grid"
    (tmp_path / "code.py").write_text("x = 2\n")
    git("commit", "-qam", "code change")
    assert report.code_commit(tmp_path, git("rev-parse", "HEAD")) == git("rev-parse", "HEAD")


def test_ablate_refuses_multilabel_in_one_line(tmp_path):
    """The grids compare test top-1, which several labels per clip do not have: refused before anything runs."""
    (tmp_path / "params.yaml").write_text("train:\n  task: multilabel\n")
    with pytest.raises(ablate.AblateError, match="train.task = 'multilabel'.*compare mAP"):
        ablate.check_upstream(tmp_path)
