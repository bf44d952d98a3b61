"""``extract.fast_decode`` (#13): skipping non-reference frames samples the nearest decodable frame."""

import numpy as np
import pytest

from cmmvt import media


@pytest.mark.parametrize("size", [(64, 48), (48, 64)])
def test_fast_decode_stays_within_one_source_frame(tmp_path, size):
    w, h = size
    n, fps = 60, 30
    frames = np.repeat((np.arange(n, dtype=np.uint8) * 4)[:, None, None, None], 3, axis=3)  # frame i: grey 4·i
    frames = np.ascontiguousarray(np.broadcast_to(frames, (n, h, w, 3)))
    path = tmp_path / "ramp.mp4"
    media.encode_clip(path, frames, fps, None)  # x264 defaults: B-frames with a B-pyramid
    exact = [int(round(rgb.mean() / 4)) for rgb, _ in media.iter_frames(path, fps)]
    assert exact == list(range(n))  # every target shows its own frame
    fast = [(int(round(rgb.mean() / 4)), t) for rgb, t in media.iter_frames(path, fps, skip_nonref=True)]
    assert len(fast) == n
    lag = np.array([k - idx for k, (idx, _) in enumerate(fast)])  # how many source frames early
    assert lag.min() >= 0 and lag.max() <= 1  # the nearest decodable frame at or before the instant
    assert lag.sum() >= n // 4  # non-reference frames really were skipped
    np.testing.assert_allclose([t for _, t in fast], media.sample_times(n / fps, fps))
