"""Tests for cmmvt.features.cache: sharded crash-safe HDF5 embedding caches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cmmvt.features import cache
from cmmvt.features.cache import CacheError, CacheReader, CacheWriter, ClipFeatures, ParamsMismatch

D = 8
ATTRS = {"backbone": "resnet18", "weights": None, "dim": D, "fps": 4.0, "image_size": 224,
         "versions": {"python": "3.11", "h5py": h5py.__version__}}
REPO = Path(__file__).resolve().parents[1]


def make_clips(n: int, seed: int = 0) -> list[ClipFeatures]:
    """Ragged clips: lengths cycle through 3, 0 (no stream), 1, 5, 2 …"""
    rng = np.random.default_rng(seed)
    lengths = [3, 0, 1, 5, 2, 4, 7, 1]
    clips = []
    for i in range(n):
        T = lengths[i % len(lengths)]
        has = T > 0
        emb = rng.standard_normal((T, D)).astype(np.float32)  # (T, D)
        t = (np.arange(T, dtype=np.float32) + 0.5) / 4.0  # (T,)
        clips.append(ClipFeatures(f"vid{i:03d}", emb, t, has_stream=has, duration=T / 4.0 + 0.1 * i))
    return clips


def write(root: Path, clips: list[ClipFeatures], shard_size: int = 3, **kw) -> None:
    with CacheWriter(root, "video", ATTRS, shard_size=shard_size, **kw) as w:
        for c in clips:
            w.add(c)


def content(root: Path) -> dict[str, tuple]:
    with CacheReader(root) as r:
        return {k: (r[k].tobytes(), r.times(k).tobytes(), r.has_stream(k), r.duration(k)) for k in r}


def shard_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("shard-*"))


# ---------------------------------------------------------------------------------------------------------------


def test_roundtrip_ragged_multiple_shards(tmp_path: Path) -> None:
    clips = make_clips(8)
    write(tmp_path / "video", clips, shard_size=3)
    assert shard_names(tmp_path / "video") == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    with CacheReader(tmp_path, "video") as r:  # features root + modality
        assert len(r) == 8 and r.ids == [c.video_id for c in clips]
        assert r.dim == D and r.modality == "video"
        assert r.attrs == ATTRS
        assert r.n_rows == sum(len(c.emb) for c in clips)
        for c in clips:
            x = r[c.video_id]
            assert x.dtype == np.float32 and x.shape == c.emb.shape
            np.testing.assert_array_equal(x, c.emb.astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(r.times(c.video_id), c.t)
            assert r.has_stream(c.video_id) == (len(c.emb) > 0)
            got = r.clip(c.video_id)
            assert got.video_id == c.video_id and got.duration == pytest.approx(c.duration)
        # 0-row no-stream clip and 1-row clip
        assert r["vid001"].shape == (0, D) and not r.has_stream("vid001")
        assert r["vid002"].shape == (1, D) and r.has_stream("vid002")
        # Mapping semantics
        assert "vid000" in r and "nope" not in r
        assert r.get("nope") is None
        with pytest.raises(KeyError):
            r["nope"]
        assert set(r.keys()) == {c.video_id for c in clips}
        assert len(dict(r.items())) == 8
        # iter_rows covers all rows in shard order
        blocks = list(r.iter_rows(batch_rows=4))
        assert all(b.shape[0] <= 4 and b.dtype == np.float32 for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), np.concatenate([r[k] for k in r]))
    with h5py.File(tmp_path / "video" / "shard-00000.h5", "r") as f:
        assert f["emb"].dtype == np.float16 and f["emb"].compression is None and f["emb"].chunks is not None
        assert f["t"].dtype == np.float32
        assert f.attrs["schema_version"] == cache.SCHEMA_VERSION and f.attrs["modality"] == "video"
        assert f.attrs["backbone"] == "resnet18" and f.attrs["fps"] == 4.0
        assert json.loads(f.attrs["versions"]) == ATTRS["versions"]
        assert list(f["index/video_id"].asstr()[()]) == ["vid000", "vid001", "vid002"]
        np.testing.assert_array_equal(f["index/offset"][()], [0, 3, 3])
        np.testing.assert_array_equal(f["index/length"][()], [3, 0, 1])


def test_all_empty_shard_and_validation(tmp_path: Path) -> None:
    empty = ClipFeatures("a", np.zeros((0, D), np.float32), np.zeros(0, np.float32), has_stream=False, duration=1.0)
    with CacheWriter(tmp_path, "audio", ATTRS, shard_size=4) as w:
        w.add(empty)
        with pytest.raises(ValueError, match="already cached"):
            w.add(empty)
        with pytest.raises(ValueError, match="dimension"):
            w.add(ClipFeatures("b", np.zeros((2, D + 1)), np.zeros(2, np.float32)))
        with pytest.raises(ValueError, match="0 rows"):
            w.add(ClipFeatures("c", np.zeros((2, D)), np.zeros(2, np.float32), has_stream=False))
        with pytest.raises(ValueError, match="NaN/inf"):
            w.add(ClipFeatures("d", np.full((1, D), 1e6), np.zeros(1, np.float32)))
    with CacheReader(tmp_path) as r:
        assert r.modality == "audio" and list(r) == ["a"] and r["a"].shape == (0, D)
        assert list(r.iter_rows(10)) == []
    with pytest.raises(CacheError, match="video"):
        CacheReader(tmp_path, "video")


def test_tmp_never_read_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "video"
    write(root, make_clips(4), shard_size=2)
    before = content(root)
    (root / "shard-00002.h5.tmp").write_bytes(b"\x89HDF garbage: a shard in flight when the writer was killed")
    (root / "shard-00007.h5.tmp").write_bytes(b"")
    with CacheReader(root) as r:
        assert len(r.shards) == 2 and len(r) == 4
    assert content(root) == before
    assert cache.info(root)["video"]["shards"] == 2
    with CacheWriter(root, "video", ATTRS, shard_size=2) as w:  # the next writer deletes them
        assert not list(root.glob("*.tmp"))
        w.add(make_clips(5)[4])
    assert shard_names(root) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from cmmvt.features.cache import CacheWriter, ClipFeatures
    root, data, n = sys.argv[1], np.load(sys.argv[2], allow_pickle=False), int(sys.argv[3])
    attrs = {"backbone": "resnet18", "weights": None, "dim": 8, "fps": 4.0, "image_size": 224,
             "versions": {"python": "other", "h5py": "x"}}
    w = CacheWriter(root, "video", attrs, shard_size=2)
    for i in range(n):
        w.add(ClipFeatures(str(data[f"id{i}"]), data[f"emb{i}"], data[f"t{i}"], bool(data[f"has{i}"]),
                           float(data[f"dur{i}"])))
    w.add_failure("/v/bad.mp4", "bad", "decode", "moov atom not found")
    print("ready", flush=True)
    time.sleep(60)
""")


def test_resume_after_sigkill_equals_uninterrupted(tmp_path: Path) -> None:
    clips = make_clips(9)
    arrays = {}
    for i, c in enumerate(clips):
        arrays |= {f"id{i}": c.video_id, f"emb{i}": c.emb, f"t{i}": c.t, f"has{i}": c.has_stream,
                   f"dur{i}": c.duration}
    np.savez(tmp_path / "clips.npz", **arrays)
    root = tmp_path / "resumed" / "video"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(tmp_path / "clips.npz"), "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    # two complete shards survive; the 5th clip was buffered and is lost
    assert shard_names(root) == ["shard-00000.h5", "shard-00001.h5"]
    assert len(CacheReader(root)) == 4
    # a shard in flight at the kill
    (root / "shard-00002.h5.tmp").write_bytes(b"partial")
    with CacheWriter(root, "video", ATTRS, shard_size=2) as w:  # lock released by the kill; versions may differ
        done = w.done_ids()
        assert done == {c.video_id for c in clips[:4]}
        for c in clips:
            if c.video_id not in done:
                w.add(c)
    assert shard_names(root)[0] == "shard-00000.h5" and not list(root.glob("*.tmp"))
    ref = tmp_path / "ref" / "video"
    write(ref, clips, shard_size=4)
    assert content(root) == content(ref)
    # the failure appended before the kill survives and is still listed
    assert [f["video_id"] for f in CacheReader(root).failures()] == ["bad"]


def test_bit_identical_files(tmp_path: Path) -> None:
    clips = make_clips(7)

    def run(root: Path) -> None:
        with CacheWriter(root, "video", ATTRS, shard_size=3) as w:
            for c in clips:
                w.add(c)
            w.add_failure("/v/x.mp4", "x", "decode", "broken, \"quoted\"\nreason")

    run(tmp_path / "a")
    time.sleep(1.1)  # HDF5 timestamps have 1 s resolution: they must not be stored
    run(tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != ".lock")
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir() if p.name != ".lock")
    assert "shard-00002.h5" in names and "failures.csv" in names and "cache.json" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_params_mismatch_and_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "video"
    write(root, make_clips(4), shard_size=2)
    # library versions are provenance: a different one resumes the same cache
    with CacheWriter(root, "video", ATTRS | {"versions": {"h5py": "0.0"}}) as w:
        assert len(w.done_ids()) == 4
    other = ATTRS | {"fps": 8.0, "image_size": 256}
    with pytest.raises(ParamsMismatch) as exc:
        CacheWriter(root, "video", other)
    msg = str(exc.value)
    assert "fps: 4.0 → 8.0" in msg and "image_size: 224 → 256" in msg and "backbone" not in msg
    assert "choose another --out or pass --overwrite" in msg.lower()
    with pytest.raises(ParamsMismatch, match="modality: 'video' → 'audio'"):
        CacheWriter(root, "audio", ATTRS)
    with pytest.raises(ParamsMismatch, match="n_mels: <missing> → 64"):
        CacheWriter(root, "video", ATTRS | {"n_mels": 64})
    assert len(CacheReader(root)) == 4  # nothing was touched
    with CacheWriter(root, "video", other, overwrite=True) as w:
        assert w.done_ids() == set()
        w.add(make_clips(1, seed=5)[0])
    with CacheReader(root) as r:
        assert r.attrs["fps"] == 8.0 and list(r) == ["vid000"] and len(r.shards) == 1
    assert json.loads((root / "cache.json").read_text())["attrs"]["image_size"] == 256


def test_failures_csv_and_info(tmp_path: Path) -> None:
    feats = tmp_path / "features"
    clips = make_clips(5)
    with CacheWriter(feats / "video", "video", ATTRS, shard_size=2) as w:
        for c in clips[:4]:
            w.add(c)
        w.add_failure("/v/4.mp4", "vid004", "decode", "no video stream")
        w.add_failure("/v/9.mp4", "vid009", "decode", "moov atom not found, truncated")
    text = (feats / "video" / "failures.csv").read_text()
    assert text.splitlines()[0] == "path,video_id,stage,reason"
    rows = CacheReader(feats / "video").failures()
    assert rows == [{"path": "/v/4.mp4", "video_id": "vid004", "stage": "decode", "reason": "no video stream"},
                    {"path": "/v/9.mp4", "video_id": "vid009", "stage": "decode",
                     "reason": "moov atom not found, truncated"}]
    # rerun: vid004 now succeeds, vid009 fails again with another reason → one row each, latest wins
    with CacheWriter(feats / "video", "video", ATTRS, shard_size=2) as w:
        assert "vid004" not in w.done_ids()  # failures are retried
        w.add(clips[4])
        w.add_failure("/v/9.mp4", "vid009", "embed", "OOM")
    rows = CacheReader(feats / "video").failures()
    assert rows == [{"path": "/v/9.mp4", "video_id": "vid009", "stage": "embed", "reason": "OOM"}]
    assert len((feats / "video" / "failures.csv").read_text().splitlines()) == 2
    audio_attrs = {"backbone": "resnet18", "dim": D, "fps": 4.0, "sample_rate": 16000, "n_mels": 64}
    with CacheWriter(feats / "audio", "audio", audio_attrs) as w:
        w.add(ClipFeatures("vid000", np.ones((2, D)), np.zeros(2, np.float32), True, 1.0))
        w.add(ClipFeatures("vid001", np.zeros((0, D)), np.zeros(0, np.float32), False, 1.0))
    assert (feats / "audio" / "failures.csv").read_text() == "path,video_id,stage,reason\n"

    both = cache.info(feats)
    assert set(both) == {"video", "audio"}
    v = both["video"]
    assert (v["modality"], v["videos"], v["rows"], v["dim"], v["shards"], v["failures"]) == \
        ("video", 5, sum(len(c.emb) for c in clips), D, 3, 1)
    assert v["no_stream"] == 1 and v["attrs"]["backbone"] == "resnet18" and v["bytes"] > 0
    assert both["audio"]["videos"] == 2 and both["audio"]["rows"] == 2 and both["audio"]["attrs"]["n_mels"] == 64
    assert cache.info(feats / "audio") == {"audio": both["audio"]}
    with pytest.raises(CacheError, match="no feature cache"):
        cache.info(tmp_path / "nothing")


def test_exception_in_with_block_keeps_buffered_clips_and_lock(tmp_path: Path) -> None:
    clips = make_clips(3)
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter(tmp_path, "video", ATTRS, shard_size=10) as w:
            for c in clips:
                w.add(c)
            with pytest.raises(CacheError, match="another extraction"):
                CacheWriter(tmp_path, "video", ATTRS)
            raise KeyboardInterrupt
    assert CacheReader(tmp_path).ids == [c.video_id for c in clips]
    with pytest.raises(CacheError, match="closed"):
        w.add(make_clips(4)[3])
    # a writer dropped without close loses its buffer (a crash), and its lock is released
    w2 = CacheWriter(tmp_path, "video", ATTRS, shard_size=10)
    w2.add(make_clips(4)[3])
    del w2
    with CacheWriter(tmp_path, "video", ATTRS) as w3:
        assert w3.done_ids() == {c.video_id for c in clips}


def test_reader_in_forked_child(tmp_path: Path) -> None:
    write(tmp_path, make_clips(4), shard_size=2)
    r = CacheReader(tmp_path)
    want = r["vid003"].sum()  # opens a handle in the parent
    pid = os.fork()
    if pid == 0:  # child: must reopen, not reuse the parent's HDF5 handle
        ok = r["vid003"].sum() == want and r["vid000"].shape == (3, D)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert r["vid000"].shape == (3, D)
    r.close()


def test_missing_cache(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no feature cache"):
        CacheReader(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        CacheWriter(tmp_path, "video", {"modality": "video"})


# ------------------------------------------------------------------------------------------ several writers


def test_writers_share_a_folder_each_with_its_own_files(tmp_path: Path) -> None:
    clips = make_clips(6)
    w0 = CacheWriter(tmp_path, "video", ATTRS, shard_size=2)
    w1 = CacheWriter(tmp_path, "video", ATTRS, shard_size=2, writer=1)  # at the same time: no shared lock
    for i, c in enumerate(clips):
        (w0, w1)[i % 2].add(c)
    w1.add_failure("/v/bad.mp4", "bad", "decode", "moov atom not found")
    w0.close()
    w1.close()
    assert shard_names(tmp_path) == ["shard-00000-w1.h5", "shard-00000.h5", "shard-00001-w1.h5", "shard-00001.h5"]
    assert sorted(p.name for p in tmp_path.glob("failures*")) == ["failures-w1.csv", "failures.csv"]
    ref = tmp_path.parent / "ref"
    write(ref, clips)
    assert content(tmp_path) == content(ref)
    assert [f["video_id"] for f in CacheReader(tmp_path).failures()] == ["bad"]
    with CacheWriter(tmp_path, "video", ATTRS, shard_size=2, writer=1) as w:  # resumes after its own last shard
        assert w.done_ids() == {c.video_id for c in clips}  # every writer's clips count as cached
        w.add(make_clips(7)[6])
    assert "shard-00002-w1.h5" in shard_names(tmp_path) and len(CacheReader(tmp_path)) == 7


def test_retraction_by_another_writer_and_legacy_format(tmp_path: Path) -> None:
    old = ClipFeatures("x", np.ones((3, D), np.float32), np.zeros(3, np.float32))
    write(tmp_path, [old, *make_clips(2)])  # writer 0: shard-00000.h5
    with CacheWriter(tmp_path, "video", ATTRS, writer=2) as w:
        w.retract({"x"})  # x's rows live in writer 0's shard
        assert json.loads((tmp_path / "retracted-w2.json").read_text()) == {"x": ["shard-00000.h5"]}
        w.add(ClipFeatures("x", np.full((2, D), 2.0, np.float32), np.zeros(2, np.float32)))
    with CacheReader(tmp_path) as r:
        assert r["x"].tolist() == [[2.0] * D] * 2 and len(r) == 3
    # a retraction written before there were writers: {id: number}, rows in writer 0's lower shards are void
    (tmp_path / "retracted-w2.json").unlink()
    (tmp_path / "retracted.json").write_text(json.dumps({"x": 1}))
    with CacheReader(tmp_path) as r:
        assert r["x"].tolist() == [[2.0] * D] * 2


def test_tmp_files_of_stopped_writers_are_swept_live_ones_kept(tmp_path: Path) -> None:
    write(tmp_path, make_clips(2))
    live = CacheWriter(tmp_path, "video", ATTRS, writer=1)  # holds .lock-w1
    for name in ("shard-00003-w1.h5.tmp", "shard-00007-w3.h5.tmp", "failures-w3.csv.tmp", "shard-00009.h5.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    CacheWriter(tmp_path, "video", ATTRS).close()  # writer 0 sweeps its own and stopped writer 3's
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == ["shard-00003-w1.h5.tmp"]
    with pytest.raises(CacheError, match="writer 1"):  # replacing the cache while writer 1 runs: refused
        CacheWriter(tmp_path, "video", {**ATTRS, "fps": 8.0}, overwrite=True)
    live.close()
    CacheWriter(tmp_path, "video", {**ATTRS, "fps": 8.0}, overwrite=True).close()
    assert shard_names(tmp_path) == [] and not list(tmp_path.glob("*.tmp"))
