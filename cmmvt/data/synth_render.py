"""How a clip of a synthetic class is drawn: its frames, its audio and their synchronised events.

What the classes, patterns and events are is described in :mod:`cmmvt.data.synth_classes`; writing the
dataset is :mod:`cmmvt.data.synth`.

Example:
    >>> from cmmvt.config import DataParams, SynthParams
    >>> from cmmvt.data.synth_classes import CLASSES
    >>> frames, audio = render_clip(CLASSES[0], clip_rng(0, 0, 0), SynthParams(size=64, duration=1.0))
    >>> frames.shape, frames.dtype, audio.shape, audio.dtype
    ((25, 64, 64, 3), dtype('uint8'), (16000,), dtype('float32'))
    >>> p = SynthParams(size=64, duration=4.0)
    >>> *_, events = render_clip(CLASSES[0], clip_rng(0, 0, 0), p, return_events=True)
    >>> bool(2 <= len(events) <= 5 and np.all(np.diff(events) >= MIN_EVENT_GAP))
    True
"""

from __future__ import annotations

import colorsys

import numpy as np

from cmmvt.config import SynthParams
from cmmvt.data.synth_classes import REVERSED_SOUND, REVERSED_VISUAL, SOUNDS, VISUALS, ClassSpec

__all__ = [
    "EVENT_SECONDS",
    "EVENT_TAIL",
    "MIN_EVENT_GAP",
    "clip_rng",
    "event_frames",
    "event_times",
    "render_audio",
    "render_clip",
    "render_video",
]

# Synchronised events (see :mod:`cmmvt.data.synth_classes`).
MIN_EVENTS, MAX_EVENTS = 2, 5  # events per clip, uniform count (fewer when a short clip cannot fit them)
MIN_EVENT_GAP = 0.4  # seconds between onsets
FIRST_ONSET = 0.1  # earliest onset, seconds
EVENT_TAIL = 0.35  # the last onset is at most duration - EVENT_TAIL (the audio burst has decayed by then)
EVENT_SECONDS = 0.25  # visual flash length: one sampling interval at extract.fps 4
FLASH = 0.75  # white composited over the object's coverage during a flash
BURST_GAIN = 3.5  # audio burst peak relative to the clip's level
BURST_ATTACK, BURST_TAU = 0.002, 0.06  # seconds: linear attack, exponential decay
CLICK_GAIN, CLICK_TAU = 1.0, 0.004  # broadband click at the onset, relative to the clip's level


def clip_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The generator for one clip, independent of every other clip and of the dataset size.

    Args:
        seed: Dataset seed.
        class_index: Index of the class in :data:`~cmmvt.data.synth_classes.CLASSES`.
        index: Clip index within the class.
    """
    return np.random.default_rng([int(seed), int(class_index), int(index)])


# --------------------------------------------------------------------------------------- events


def event_times(rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    """Draw one clip's synchronised event onsets.

    A uniform count in ``[MIN_EVENTS, MAX_EVENTS]``, placed uniformly at random subject to onsets in
    ``[FIRST_ONSET, duration - EVENT_TAIL]`` and at least ``MIN_EVENT_GAP`` apart. A clip too short for
    the count gets as many as fit (possibly none); this never fails.

    Args:
        rng: The clip's event generator.
        p: Duration.

    Returns:
        ``(n,)`` float64 onsets in seconds, sorted.

    Example:
        >>> from cmmvt.config import DataParams, SynthParams
        >>> t = event_times(np.random.default_rng(0), SynthParams(duration=4.0))
        >>> bool(2 <= len(t) <= 5 and t[0] >= 0.1 and t[-1] <= 3.65 and np.all(np.diff(t) >= 0.4))
        True
        >>> event_times(np.random.default_rng(0), SynthParams(duration=0.3)).tolist()
        []
    """
    n = int(rng.integers(MIN_EVENTS, MAX_EVENTS + 1))
    span = float(p.duration) - EVENT_TAIL - FIRST_ONSET  # room for the onsets
    if span < 0:
        return np.zeros(0)
    n = min(n, int(span / MIN_EVENT_GAP + 1e-9) + 1)
    slack = span - (n - 1) * MIN_EVENT_GAP  # >= 0: free room once the gaps are reserved
    # n sorted uniform points in [0, slack], each pushed right by the gaps before it: uniform over all
    # placements that respect the minimum gap.
    return FIRST_ONSET + np.sort(rng.uniform(0.0, slack, size=n)) + MIN_EVENT_GAP * np.arange(n)


def _n_frames(p: SynthParams) -> int:
    return max(1, int(round(p.duration * p.fps)))


def event_frames(events: np.ndarray | tuple[float, ...], p: SynthParams) -> np.ndarray:
    """Which frames show an event flash.

    Frame ``k`` is displayed over ``[k / fps, (k + 1) / fps)``; it flashes when that interval overlaps
    ``[onset, onset + EVENT_SECONDS)`` for some onset, so the flash is on screen during the whole event
    (a sampler picking the frame displayed at any instant of the event sees it).

    Args:
        events: Onsets in seconds.
        p: Frame rate and duration.

    Returns:
        ``(T,)`` bool.

    Example:
        >>> from cmmvt.config import DataParams, SynthParams
        >>> np.flatnonzero(event_frames([0.5], SynthParams(duration=1.0, fps=10))).tolist()
        [5, 6, 7]
    """
    T = _n_frames(p)
    k = np.arange(T)
    on = np.zeros(T, dtype=bool)
    for t0 in np.asarray(events, dtype=np.float64).reshape(-1):
        first = int(np.floor(t0 * p.fps + 1e-9))
        end = int(np.ceil((t0 + EVENT_SECONDS) * p.fps - 1e-9))  # exclusive
        on |= (k >= first) & (k < end)
    return on


# --------------------------------------------------------------------------------------- video


_WHITE = np.full(3, 255.0, dtype=np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An HSV colour as float32 RGB in [0, 255]."""
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _over(canvas: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """Alpha-composite ``color`` onto ``canvas`` in place (float32 throughout).

    Args:
        canvas: ``(T, H, W, 3)`` float32 (or a view of a sub-window of it).
        alpha: ``(T, H, W)`` (or broadcastable) coverage in [0, 1].
        color: ``(3,)`` float32.
    """
    a = np.asarray(alpha, dtype=np.float32)[..., None]
    canvas += a * (np.asarray(color, dtype=np.float32) - canvas)


def _span(c: np.ndarray, half: float, size: int) -> tuple[int, int]:
    """Pixel range ``[lo, hi)`` covering ``c ± half`` for every frame, clipped to ``[0, size)``."""
    lo = int(np.floor(float(c.min()) - half))
    hi = int(np.ceil(float(c.max()) + half)) + 1
    return max(lo, 0), min(hi, size)


def render_video(
    visual: str, rng: np.random.Generator, p: SynthParams, events: np.ndarray | tuple[float, ...] = ()
) -> np.ndarray:
    """Render one visual pattern with random nuisance and the clip's event flashes.

    The flashes draw nothing from ``rng``: the same ``rng`` seed with and without events gives frames
    that differ only on the :func:`event_frames`. A reversed pattern (``disk_rl``) is its base pattern
    rendered with the flash mask mirrored and then reversed, so its flashes fall on the clip's own event
    frames; without events it is exactly the base clip reversed.

    Args:
        visual: One of :data:`VISUALS`.
        rng: The clip's video generator.
        p: Size, frame rate and duration.
        events: Event onsets in seconds (:func:`event_times`); none by default.

    Returns:
        ``(T, H, W, 3)`` uint8 frames, ``T = round(duration * fps)``, ``H = W = size``.
    """
    flash = event_frames(events, p)  # (T,)
    if visual in REVERSED_VISUAL:
        return np.ascontiguousarray(_render_video(REVERSED_VISUAL[visual], rng, p, flash[::-1])[::-1])
    if visual not in VISUALS:
        raise ValueError(f"unknown visual pattern {visual!r}; expected one of {VISUALS}")
    return _render_video(visual, rng, p, flash)


def _render_video(visual: str, rng: np.random.Generator, p: SynthParams, flash: np.ndarray) -> np.ndarray:
    """:func:`render_video` of a forward pattern; ``flash`` ``(T,)`` bool marks the frames that flash."""

    # Everything below stays float32: random scalars are converted to Python floats (NumPy scalars
    # would upcast the big arrays to float64 and double the cost).
    def uni(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def sign() -> float:
        return 1.0 if rng.random() < 0.5 else -1.0

    S = int(p.size)
    T = _n_frames(p)
    D = T / p.fps
    t = (np.arange(T, dtype=np.float32) / np.float32(p.fps))[:, None, None]  # (T, 1, 1) seconds
    u = (t + np.float32(0.5 / p.fps)) / np.float32(D)  # (T, 1, 1) clip progress in (0, 1)
    yy = np.arange(S, dtype=np.float32)[None, :, None] + np.float32(0.5)  # (1, H, 1) pixel centres
    xx = np.arange(S, dtype=np.float32)[None, None, :] + np.float32(0.5)  # (1, 1, W)

    # Background: dark coloured linear gradient in a random direction (+0.5 rounds at the end).
    hue = float(rng.random())
    c0 = _hsv(hue, uni(0.2, 0.6), uni(0.15, 0.4))
    c1 = _hsv(hue + uni(-0.15, 0.15), uni(0.2, 0.6), uni(0.15, 0.4))
    ang = uni(0.0, 2 * np.pi)
    g = ((xx[0] - S / 2) * np.cos(ang) + (yy[0] - S / 2) * np.sin(ang)) / S + 0.5  # (H, W)
    g = np.clip(g, 0.0, 1.0)[..., None]  # (H, W, 1)
    bg = c0 * (1.0 - g) + c1 * g + 0.5  # (H, W, 3)
    canvas = np.broadcast_to(bg.astype(np.float32), (T, S, S, 3)).copy()  # (T, H, W, 3)

    # Distractors: 1-2 faint blurry blobs drifting slowly (never a crisp shape).
    for _ in range(int(rng.integers(1, 3))):
        sig = S * uni(0.03, 0.06)
        px, py = S * uni(0.1, 0.9), S * uni(0.1, 0.9)
        vx, vy = S * float(rng.normal(0.0, 0.06)), S * float(rng.normal(0.0, 0.06))  # drift per clip
        bx = px + vx * (u - 0.5)  # (T, 1, 1)
        by = py + vy * (u - 0.5)
        peak, bcol = uni(0.35, 0.6), _hsv(float(rng.random()), 0.3, uni(0.5, 0.7))
        # Composite only inside the blob's bounding box (±3 sigma over the whole path).
        x0, x1 = _span(bx, 3 * sig, S)
        y0, y1 = _span(by, 3 * sig, S)
        if x1 > x0 and y1 > y0:
            gx = np.exp(-((xx[..., x0:x1] - bx) ** 2) / (2 * sig * sig))  # (T, 1, w)
            gy = np.exp(-((yy[:, y0:y1] - by) ** 2) / (2 * sig * sig))  # (T, h, 1)
            _over(canvas[:, y0:y1, x0:x1], gy * gx * peak, bcol)

    # The class object: bright and saturated, so it always contrasts with the background.
    col = _hsv(float(rng.random()), uni(0.6, 1.0), uni(0.85, 1.0))
    scale = uni(0.8, 1.2)
    if visual == "disk_lr":
        r = 0.15 * S * scale
        speed = uni(0.8, 1.2)  # fraction of a full traversal
        offset = uni(-0.08, 0.08)  # start offset
        prog = 0.5 + speed * (u - 0.5) + offset  # (T, 1, 1); 0 = touching left edge, 1 = right edge
        cx = r + prog * (S - 2 * r)  # (T, 1, 1)
        cy = S * uni(0.3, 0.7) + S * uni(-0.05, 0.05) * (u - 0.5)  # (T, 1, 1)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)  # (T, H, W)
        alpha = np.clip(r + 0.5 - d, 0.0, 1.0)
        _over(canvas, alpha, col)
        obj = canvas, alpha
    elif visual == "square":
        h0 = 0.2 * S * scale  # half side
        cx, cy = S * (0.5 + uni(-0.12, 0.12)), S * (0.5 + uni(-0.12, 0.12))
        rot = uni(-0.35, 0.35)
        freq, ph = uni(0.8, 1.2), uni(0.0, 2 * np.pi)
        h = h0 * (1.0 + 0.25 * np.sin((2 * np.pi * freq) * t + ph))  # (T, 1, 1)
        dx, dy = xx - cx, yy - cy  # (1, 1, W), (1, H, 1)
        a = np.abs(dx * np.cos(rot) + dy * np.sin(rot))  # (1, H, W)
        b = np.abs(dy * np.cos(rot) - dx * np.sin(rot))
        alpha = np.clip(h + 0.5 - np.maximum(a, b), 0.0, 1.0)  # (T, H, W)
        _over(canvas, alpha, col)
        obj = canvas, alpha
    elif visual == "stripes":
        hw, hh = S * scale * uni(0.28, 0.4), S * scale * uni(0.28, 0.4)  # half extents
        cx, cy = S * (0.5 + uni(-0.08, 0.08)), S * (0.5 + uni(-0.08, 0.08))
        theta = uni(0.0, np.pi)
        period = S * 0.12 * uni(0.8, 1.2)
        drift = sign() * uni(0.5, 1.0)  # periods per second, random direction
        phase = (2 * np.pi) * (drift * t + float(rng.random()))  # (T, 1, 1)
        x0, x1 = _span(np.float32(cx), hw + 1, S)
        y0, y1 = _span(np.float32(cy), hh + 1, S)
        xs, ys = xx[..., x0:x1], yy[:, y0:y1]
        box = np.clip(hw + 0.5 - np.abs(xs - cx), 0.0, 1.0) * np.clip(hh + 0.5 - np.abs(ys - cy), 0.0, 1.0)
        proj = (xs - S / 2) * np.cos(theta) + (ys - S / 2) * np.sin(theta)  # (1, h, w)
        stripe = np.clip(3.0 * np.sin((2 * np.pi / period) * proj - phase), -1.0, 1.0) * 0.5 + 0.5
        win = canvas[:, y0:y1, x0:x1]
        _over(win, box, col * uni(0.05, 0.2))  # dark panel
        _over(win, stripe * box, col)  # bright stripes, (T, h, w)
        obj = win, box  # the whole panel flashes (its dark stripes too)
    else:  # triangle
        R = 0.24 * S * scale  # circumradius; the inradius of an equilateral triangle is R / 2
        cx, cy = S * (0.5 + uni(-0.12, 0.12)), S * (0.5 + uni(-0.12, 0.12))
        omega = sign() * 2 * np.pi * uni(0.25, 0.5)  # rad/s, random direction
        th = uni(0.0, 2 * np.pi) + omega * t  # (T, 1, 1)
        x0, x1 = _span(np.float32(cx), R + 1, S)
        y0, y1 = _span(np.float32(cy), R + 1, S)
        dx, dy = xx[..., x0:x1] - cx, yy[:, y0:y1] - cy
        dist = None
        for k in range(3):  # signed distance to each edge along its outward normal
            phi = th + (np.pi + 2 * np.pi * k / 3)
            e = dx * np.cos(phi) + dy * np.sin(phi) - R / 2  # (T, h, w)
            dist = e if dist is None else np.maximum(dist, e)
        win = canvas[:, y0:y1, x0:x1]
        alpha = np.clip(0.5 - dist, 0.0, 1.0)  # (T, h, w)
        _over(win, alpha, col)
        obj = win, alpha

    # Event flashes: white over the object's own coverage, only on the flash frames (no rng drawn).
    if flash.any():
        win, alpha = obj  # a view of canvas (T, h, w, 3) and the object's coverage, broadcastable to (T, h, w)
        lit = win[flash]  # (F, h, w, 3) copy
        _over(lit, np.broadcast_to(alpha, win.shape[:3])[flash] * np.float32(FLASH), _WHITE)
        win[flash] = lit

    canvas += rng.standard_normal((T, S, S, 1), dtype=np.float32) * np.float32(uni(2.0, 6.0))
    np.clip(canvas, 0.0, 255.0, out=canvas)
    return canvas.astype(np.uint8)  # (T, H, W, 3)


# --------------------------------------------------------------------------------------- audio


def _gate(t: np.ndarray, rate: float, duty: float, phase: float, edge: float) -> np.ndarray:
    """A periodic on/off envelope with raised-cosine edges of ``edge`` seconds. ``(N,)`` in [0, 1]."""
    period = 1.0 / rate
    pos = np.mod(t + phase * period, period)  # seconds into the current period
    on = duty * period
    rise = np.clip(pos / edge, 0.0, 1.0)
    fall = np.clip((on - pos) / edge, 0.0, 1.0)
    env = np.minimum(rise, fall)
    return (0.5 - 0.5 * np.cos(np.pi * env)).astype(np.float32)


def render_audio(
    sound: str, rng: np.random.Generator, p: SynthParams, events: np.ndarray | tuple[float, ...] = ()
) -> np.ndarray:
    """Render one sound pattern with random nuisance and the clip's event bursts.

    The pattern, its level, the background noise and the click noise are drawn from ``rng`` whatever
    the events, then reversed for ``chirp_down``; the bursts are added last, forward in time, so their
    sharp onsets fall at the event times. Without events ``chirp_down`` is exactly ``chirp_up`` reversed;
    with events the two differ only within ``EVENT_TAIL`` after each onset.

    Args:
        sound: One of :data:`SOUNDS`.
        rng: The clip's audio generator.
        p: Sample rate and duration.
        events: Event onsets in seconds (:func:`event_times`); none by default.

    Returns:
        ``(N,)`` float32 mono in [-0.9, 0.9], ``N = round(duration * sample_rate)``.
    """
    base = REVERSED_SOUND.get(sound, sound)
    if base not in SOUNDS:
        raise ValueError(f"unknown sound pattern {sound!r}; expected one of {SOUNDS}")
    sr = int(p.sample_rate)
    N = max(1, int(round(p.duration * sr)))
    x, carrier = _pattern(base, rng, N, sr)  # (N,), (N,): peak |x| = 1
    # Levels leave room for the bursts: peak ≈ level * (BURST_GAIN + CLICK_GAIN * e^-1/2) <= 0.9.
    level = float(rng.uniform(0.16, 0.22))
    floor = rng.standard_normal(N) * rng.uniform(0.002, 0.012)
    click = rng.uniform(-1.0, 1.0, size=N)  # broadband, bounded
    if sound != base:  # time-reversed twin: the pattern and its noise floor are reversed, the events are not
        x, carrier, floor = x[::-1], carrier[::-1], floor[::-1]

    burst, tick = _event_envelopes(events, N, sr)  # (N,), (N,) in [0, 1], zero outside events
    y = x * (1.0 - burst) + BURST_GAIN * carrier * burst + CLICK_GAIN * click * tick
    y = y * level + floor
    return np.clip(y, -0.9, 0.9).astype(np.float32)  # (N,)


def _event_envelopes(events: np.ndarray | tuple[float, ...], N: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Burst and click envelopes ``(N,)`` each, starting at each onset's sample, zero elsewhere."""
    burst, tick = np.zeros(N), np.zeros(N)
    n = int(EVENT_TAIL * sr)
    tt = np.arange(n) / sr  # (n,) seconds after the onset
    b = np.minimum(tt / BURST_ATTACK, 1.0) * np.exp(-np.maximum(tt - BURST_ATTACK, 0.0) / BURST_TAU)
    c = np.exp(-tt / CLICK_TAU)
    for t0 in np.asarray(events, dtype=np.float64).reshape(-1):
        i0 = int(round(t0 * sr))
        m = max(0, min(n, N - i0))
        burst[i0 : i0 + m] = np.maximum(burst[i0 : i0 + m], b[:m])
        tick[i0 : i0 + m] = np.maximum(tick[i0 : i0 + m], c[:m])
    return burst, tick


def _pattern(sound: str, rng: np.random.Generator, N: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """One forward sound pattern and its carrier, both faded in and out and divided by the pattern's peak.

    The carrier is the pattern without its on/off gating (the tone of ``beeps``, the noise of ``noise``;
    the pattern itself otherwise): what an event burst is made of.
    """
    t = np.arange(N, dtype=np.float64) / sr  # (N,) seconds
    D = N / sr
    nyq = 0.45 * sr
    jitter = rng.uniform(0.85, 1.15)  # base-frequency jitter ±15 %

    if sound == "hum":
        f0 = 160.0 * jitter
        ks = np.arange(1, 9)
        ks = ks[ks * f0 < nyq]
        ph = rng.uniform(0, 2 * np.pi, size=len(ks))
        x = np.zeros(N)
        for k, phk in zip(ks, ph):
            x += np.sin(2 * np.pi * k * f0 * t + phk) / k
        carrier = x
    elif sound == "beeps":
        f = min(1800.0 * jitter, nyq)
        carrier = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) + 0.2 * np.sin(4 * np.pi * f * t)
        x = carrier * _gate(t, 4.0 * rng.uniform(0.85, 1.15), 0.5, rng.random(), 0.01)
    elif sound == "noise":
        rate = 3.0 * rng.uniform(0.85, 1.15)
        env = np.zeros(N)
        start = rng.uniform(0, 1.0 / rate) - 1.0 / rate
        while start < D:
            dur = rng.uniform(0.06, 0.1)
            lo, hi = int(max(start, 0) * sr), int(min(start + dur, D) * sr)
            if hi > lo:
                seg = t[lo:hi] - start
                env[lo:hi] = np.sqrt(np.clip(np.sin(np.pi * seg / dur), 0.0, 1.0))  # quick attack, smooth release
            start += rng.uniform(0.8, 1.2) / rate
        carrier = rng.standard_normal(N)
        x = carrier * env
    else:  # chirp_up: log sweep over two octaves across the clip
        f_lo = 300.0 * jitter
        speed = rng.uniform(0.85, 1.0)
        offset = rng.uniform(-0.05, 0.05)
        prog = np.clip(0.5 + speed * (t / D - 0.5) + offset, 0.0, 1.0)
        f = np.minimum(f_lo * 4.0**prog, nyq)
        phase = 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)
        x = np.sin(phase) + 0.25 * np.sin(2 * phase)
        carrier = x

    fade = np.minimum(1.0, np.minimum(t, D - t) / 0.01)  # 10 ms fade in/out (onsets are >= 0.1 s in)
    x, carrier = x * fade, carrier * fade
    peak = float(np.max(np.abs(x)))
    if peak > 0:
        x, carrier = x / peak, carrier / peak
    return x, carrier


def render_clip(
    spec: ClassSpec, rng: np.random.Generator, p: SynthParams, *, return_events: bool = False
) -> tuple[np.ndarray, ...]:
    """Render one clip of a class, with its synchronised events.

    Video, audio and event times draw from three independent child generators of ``rng``, so, for the
    same ``rng`` seed, classes that share a visual pattern get identical frames, classes that share a
    sound get identical audio, and every class gets the same event times; ``disk_rl`` frames are
    ``disk_lr`` frames reversed except on the event frames (``chirp_down`` audio likewise, except after
    each onset).

    Args:
        spec: The class.
        rng: The clip's generator, e.g. :func:`clip_rng`.
        p: Clip geometry, frame rate, duration and sample rate.
        return_events: Also return the event onsets.

    Returns:
        ``(frames, audio)``: ``(T, H, W, 3)`` uint8 and ``(N,)`` float32 in [-0.9, 0.9]; with
        ``return_events``, ``(frames, audio, events)`` with ``events`` the ``(n,)`` onsets in seconds
        (:func:`event_times`).
    """
    vseed, aseed, eseed = rng.integers(0, 2**63 - 1, size=3)
    events = event_times(np.random.default_rng(int(eseed)), p)  # (n,)
    frames = render_video(spec.visual, np.random.default_rng(int(vseed)), p, events)  # (T, H, W, 3)
    audio = render_audio(spec.sound, np.random.default_rng(int(aseed)), p, events)  # (N,)
    return (frames, audio, events) if return_events else (frames, audio)

