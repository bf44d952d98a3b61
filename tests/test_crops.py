"""Frame views (#11): which crop keeps a subject at the edge of real encoded 16:9 footage; views are averaged."""

from pathlib import Path

import numpy as np
import pytest

from cmmvt import media
from cmmvt.config import ExtractParams
from cmmvt.features import backbones, cache, extract, views

RED = np.array([230, 20, 20])


def red_pixels(views: np.ndarray) -> np.ndarray:
    """Per view, how many pixels are clearly the red subject."""
    x = views.astype(int)
    return ((x[..., 0] > 160) & (x[..., 1] < 90) & (x[..., 2] < 90)).sum(axis=(-1, -2))


def edge_subject_clip(path: Path, size: tuple[int, int], left: bool) -> Path:
    """A grey ``size`` (W, H) H.264 clip with a red square touching its left (or top) edge."""
    w, h = size
    frames = np.full((8, h, w, 3), 128, np.uint8)
    side = min(w, h) // 4
    mid = (h - side) // 2 if left else (w - side) // 2
    if left:
        frames[:, mid : mid + side, :side] = RED
    else:
        frames[:, :side, mid : mid + side] = RED
    path.parent.mkdir(parents=True, exist_ok=True)
    media.encode_clip(path, frames, 8, None)
    return path


@pytest.mark.parametrize(("size", "left"), [((640, 360), True), ((360, 640), False)])
def test_subject_at_the_edge_survives_full_and_three_and_is_cut_by_centre(tmp_path, size, left):
    clip = edge_subject_clip(tmp_path / "edge.mp4", size, left)
    s = 64
    rgb, _ = next(media.iter_frames(clip, 4.0, short_side=s))
    assert min(rgb.shape[:2]) == s
    assert red_pixels(views.frame_views(rgb, s, "centre"))[0] == 0  # the centre square cuts it away
    three = red_pixels(views.frame_views(rgb, s, "three"))
    assert three[0] > 0.04 * s * s and three[1] == 0 and three[2] == 0  # the first crop holds it
    full_rgb, _ = next(media.iter_frames(clip, 4.0, long_side=s))
    assert max(full_rgb.shape[:2]) == s
    full = views.frame_views(full_rgb, s, "full")
    assert full.shape == (1, s, s, 3) and red_pixels(full)[0] > 0.01 * s * s  # kept, smaller
    pad = full[0, 0, s // 2] if left else full[0, s // 2, 0]  # letterbox bars: the ImageNet mean colour
    np.testing.assert_array_equal(pad, views.PAD_RGB)


def test_flip_views_are_mirrors():
    rgb = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    v = views.frame_views(rgb, 48, "three", flip=True)
    assert v.shape == (6, 48, 48, 3)
    np.testing.assert_array_equal(v[3:], v[:3, :, ::-1])
    np.testing.assert_array_equal(v[1], rgb[:, 16:64])


def test_extracted_rows_average_the_views_and_the_cache_records_the_crop(tmp_path):
    clip = edge_subject_clip(tmp_path / "clips" / "edge.mp4", (160, 90), left=True)
    items, _ = extract.discover(tmp_path / "clips")
    bb = backbones.create("none", image_size=48)
    p = ExtractParams(out=str(tmp_path / "f"), backbone="none", image_size=48, fps=4.0, crop="three", flip=True)
    extract.run_modality(items, p, "video", bb)
    with cache.CacheReader(tmp_path / "f", "video") as r:
        rows = r["edge"]
        assert r.attrs["crop"] == "three" and r.attrs["flip"] is True
    frames = [views.frame_views(rgb, 48, "three", flip=True) for rgb, _ in media.iter_frames(clip, 4.0, short_side=48)]
    want = np.stack([bb.embed(v).mean(0) for v in frames])  # (T, D): each frame's 6 views, averaged
    np.testing.assert_allclose(rows, want, rtol=1e-3, atol=1e-5)  # the cache holds float16
    with pytest.raises(cache.ParamsMismatch, match="crop"):
        extract.run_modality(items, p.model_copy(update={"crop": "centre", "flip": False}), "video", bb)


def test_three_crops_of_a_square_frame_are_one_view(tmp_path):
    """A square frame has one square: ``three`` costs no more than ``centre`` there and gives the same rows."""
    assert views.frame_views(np.zeros((64, 64, 3), np.uint8), 64, "three").shape == (1, 64, 64, 3)
    clips = tmp_path / "clips"
    edge_subject_clip(clips / "square.mp4", (96, 96), left=True)
    edge_subject_clip(clips / "wide.mp4", (160, 90), left=True)
    items, _ = extract.discover(clips)
    bb = backbones.create("none", image_size=48)
    rows = {}
    for crop in ("centre", "three"):
        p = ExtractParams(out=str(tmp_path / crop), backbone="none", image_size=48, fps=4.0, crop=crop)
        extract.run_modality(items, p, "video", bb)  # square and wide clips share CNN batches
        with cache.CacheReader(tmp_path / crop, "video") as r:
            rows[crop] = {i.video_id: r[i.video_id] for i in items}
    np.testing.assert_array_equal(rows["three"]["square"], rows["centre"]["square"])
    assert not np.allclose(rows["three"]["wide"], rows["centre"]["wide"], atol=1e-3)
