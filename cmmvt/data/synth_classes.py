"""Embedded synthetic audio-visual dataset: order-sensitive, modality-complementary classes.

This module is the class table — what each class is (:data:`CLASSES`, :func:`order_only_pairs`) — and
the one description of the set. How a clip is drawn is :mod:`cmmvt.data.synth_render` (where the
event constants named below live); the folders on disk and the DVC ``synth`` stage are
:mod:`cmmvt.data.synth`, which also re-exports the public names of both.

Every class is a pair ``(visual pattern, sound pattern)``. There are 5 visual and 5 sound patterns and
10 classes, chosen as the edges of one 10-cycle in the bipartite "visual — sound" graph::

    disk_lr — hum — disk_rl — beeps — square — chirp_up — stripes — chirp_down — triangle — noise
       └──────────────────────────────────────────────────────────────────────────────────┘

so **every visual pattern is shared by exactly 2 classes and every sound by exactly 2 classes**. Video
alone or audio alone can therefore reach at most 50 % accuracy, while both together identify the
class. Two patterns in each modality differ *only in temporal order*:

* ``disk_rl`` is ``disk_lr`` played backwards (exactly the same set of frames, reversed, apart from
  the per-clip event flashes below), and
* ``chirp_down`` is ``chirp_up`` played backwards (same frequency range, reversed).

The cycle is arranged so that each of these order-only pairs shares its *other* modality: classes
``disk_lr_hum`` / ``disk_rl_hum`` have the same sound and differ only in the order of the video
frames, and ``stripes_chirp_up`` / ``stripes_chirp_down`` have the same video and differ only in the
order of the audio.

====  ======================  ==========  ==========  =========================================================
 #    name                    visual      sound       what it tests (the classes it shares a pattern with)
====  ======================  ==========  ==========  =========================================================
 0    ``disk_lr_hum``         disk_lr     hum         vs 5: **video order only** (same sound, reversed frames);
                                                      vs 9: audio
 1    ``disk_rl_beeps``       disk_rl     beeps       vs 5: audio; vs 6: video
 2    ``square_chirp_up``     square      chirp_up    vs 6: audio; vs 7: video
 3    ``stripes_chirp_down``  stripes     chirp_down  vs 7: **audio order only** (same video, reversed sound);
                                                      vs 8: video
 4    ``triangle_noise``      triangle    noise       vs 8: audio; vs 9: video
 5    ``disk_rl_hum``         disk_rl     hum         vs 0: **video order only**; vs 1: audio
 6    ``square_beeps``        square      beeps       vs 1: video; vs 2: audio
 7    ``stripes_chirp_up``    stripes     chirp_up    vs 3: **audio order only**; vs 2: video
 8    ``triangle_chirp_down`` triangle    chirp_down  vs 3: video; vs 4: audio
 9    ``disk_lr_noise``       disk_lr     noise       vs 0: audio; vs 4: video
====  ======================  ==========  ==========  =========================================================

Expected ceilings (clean features, ideal classifier):

* audio + video with temporal order: 100 %;
* audio + video, mean-pooled over time (bag of frames): 80 % (0 ≡ 5 and 3 ≡ 7);
* video only: 50 %; audio only: 50 %; mean-pooled single modality: 40 %.

Classes 0–4 use every visual and every sound exactly once, so with ``SynthParams.classes <= 5`` (the
first ``n`` classes are used) either modality alone suffices; the complementarity needs all 10.

Visual patterns (bright saturated object on a darker coloured gradient background):

* ``disk_lr`` — a filled disk crossing the whole width left→right over the clip; ``disk_rl`` is the
  same clip time-reversed.
* ``square`` — a filled, slightly rotated square near the centre, pulsing in size (~1 Hz).
* ``stripes`` — a large rectangle of high-contrast stripes (random orientation) drifting sideways.
* ``triangle`` — an equilateral triangle near the centre spinning at 0.25–0.5 rev/s.

Sound patterns (mono, peak-normalised, plus a low background noise floor):

* ``hum`` — steady harmonic stack (f0 ≈ 160 Hz, 8 harmonics at 1/k).
* ``beeps`` — ≈1.8 kHz tone gated on/off at ≈4 Hz.
* ``noise`` — white-noise bursts of 60–100 ms at ≈3 per second.
* ``chirp_up`` — logarithmic sweep from f0 ≈ 300 Hz up two octaves across the clip; ``chirp_down`` is
  the same waveform time-reversed.

Nuisance per clip: object colour and size (±20 %), sweep speed (±20 %, 80–120 % of a full traversal)
and start offset, pulse/spin/drift rates and directions, 1–2 faint blurry distractor blobs drifting
slowly, background colour and gradient, grey pixel noise; audio base frequency (±15 %), modulation
rates, loudness and background-noise level.

Caveat: audio order is only *mostly* invisible to a bag-of-windows model: each 0.96 s log-mel window
around a frame still shows a quarter of the chirp's sweep and hence its local slope. The video pair
is exactly order-only (identical frame sets, up to the event flashes, which carry no direction).

Synchronised events (every clip, every class): 2–5 instants per clip
(:func:`~cmmvt.data.synth_render.event_times`; onsets at least 0.4 s apart, in ``[0.1 s, duration − 0.35 s]``)
at which *both* modalities do something together:

* video — the class object flashes towards white (white composited over the object's own coverage at
  :data:`~cmmvt.data.synth_render.FLASH` = 0.75; for ``stripes`` over its whole panel) for
  :data:`~cmmvt.data.synth_render.EVENT_SECONDS` = 0.25 s. The flash is shown on every frame whose display
  interval ``[k / fps, (k + 1) / fps)`` overlaps ``[onset, onset + 0.25 s)``
  (:func:`~cmmvt.data.synth_render.event_frames`), so the flash is on screen for the whole 0.25 s.
  0.25 s is one sampling interval at the default ``extract.fps: 4``: any half-open 0.25 s interval
  holds exactly one of the sampling instants ``(i + 0.5) / 4``, so every event lands on at least one
  sampled frame. (Requiring the frame *time* ``k / fps`` to lie in the interval would not do: at
  25 fps the sampled frames are 6 or 7 frames apart and a 6-frame flash can fall between them.)
* audio — a burst with its onset at exactly the event time: the class's own carrier (the ungated tone for
  ``beeps``, the ungated noise for ``noise``, the signal itself for ``hum`` and the chirps) at
  :data:`~cmmvt.data.synth_render.BURST_GAIN` = 3.5× the clip's level, 2 ms attack, exponential decay
  (τ = 60 ms), plus a broadband click (τ = 4 ms) at the clip's level, so the event is heard even
  inside a gap of ``beeps`` or ``noise`` and is a bright column in a log-mel window standardised on
  its own.

Event times are drawn per clip from their own stream, independent of the class, so they carry no label
information; they give **instance-level audio-visual correspondence**: among clips of the same class,
only a clip's own audio has its bursts at the frames where its object flashes. That is what the
synchrony objective of AVTS (Korbar, Tran & Torresani 2018, "Cooperative Learning of Audio and Video
Models from Self-Supervised Synchronization") needs to learn from and what a cross-modal retrieval
test measures. The events are added *after* the order reversals (a reversed decaying burst would have a
slow attack), so ``disk_rl`` and ``chirp_down`` flash and burst at the clip's real event times, forward
in time. The order-only pairs keep their ceilings: event times do not depend on the class, the
bursts run forward in both chirps, and the distribution of flash intervals is symmetric under time
reversal (onset ``o`` ↔ ``duration − 0.25 − o``, both in range), so the events say nothing about
direction. Without events (``events=()``) the reversed patterns are still exact reverses; with events
only the event frames (and the samples within :data:`~cmmvt.data.synth_render.EVENT_TAIL` after an onset)
differ.

Unlabelled pool: :func:`~cmmvt.data.synth.make_dataset` also writes ``unlabelled_clips_per_class`` clips
of every class to ``<root>/unlabelled/clip_NNNN.mp4`` in a seeded shuffled order (the name does not
give the class away), each from its own generator ``clip_rng(seed, class, UNLABELLED_OFFSET + i)`` —
for self-supervised pretraining and prototypes, never for the supervised splits.

Every clip is seeded from ``(seed, class index, clip index)`` (:func:`~cmmvt.data.synth_render.clip_rng`), so a
clip does not depend on how many clips or classes are generated; video, audio and event times use independent child
streams.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLASSES",
    "REVERSED_SOUND",
    "REVERSED_VISUAL",
    "SOUNDS",
    "VISUALS",
    "ClassSpec",
    "class_names",
    "order_only_pairs",
]


@dataclass(frozen=True)
class ClassSpec:
    """One synthetic class.

    Attributes:
        name: Folder / label name, ``<visual>_<sound>``.
        visual: The visual pattern, one of :data:`VISUALS`.
        sound: The sound pattern, one of :data:`SOUNDS`.
        description: One human-readable line.
    """

    name: str
    visual: str
    sound: str
    description: str


VISUALS: tuple[str, ...] = ("disk_lr", "disk_rl", "square", "stripes", "triangle")
SOUNDS: tuple[str, ...] = ("hum", "beeps", "chirp_up", "chirp_down", "noise")

_VISUAL_TEXT = {
    "disk_lr": "disk moving left→right",
    "disk_rl": "disk moving right→left",
    "square": "pulsing square",
    "stripes": "drifting stripes",
    "triangle": "spinning triangle",
}
_SOUND_TEXT = {
    "hum": "steady harmonic hum",
    "beeps": "4 Hz beeps",
    "chirp_up": "rising chirp",
    "chirp_down": "falling chirp",
    "noise": "noise bursts",
}

# Edges of the 10-cycle disk_lr-hum-disk_rl-beeps-square-chirp_up-stripes-chirp_down-triangle-noise;
# classes 0-4 and 5-9 are its two perfect matchings (each uses every visual and every sound once).
_PAIRS: tuple[tuple[str, str], ...] = (
    ("disk_lr", "hum"),
    ("disk_rl", "beeps"),
    ("square", "chirp_up"),
    ("stripes", "chirp_down"),
    ("triangle", "noise"),
    ("disk_rl", "hum"),
    ("square", "beeps"),
    ("stripes", "chirp_up"),
    ("triangle", "chirp_down"),
    ("disk_lr", "noise"),
)

CLASSES: list[ClassSpec] = [
    ClassSpec(f"{v}_{s}", v, s, f"{_VISUAL_TEXT[v]} + {_SOUND_TEXT[s]}") for v, s in _PAIRS
]

# Patterns rendered as the time reversal of another pattern (same rng → exactly reversed clip).
REVERSED_VISUAL = {"disk_rl": "disk_lr"}
REVERSED_SOUND = {"chirp_down": "chirp_up"}


def order_only_pairs() -> list[tuple[str, str]]:
    """Class pairs that differ only in the temporal order of one modality (same pattern in the other).

    Example:
        >>> order_only_pairs()
        [('disk_lr_hum', 'disk_rl_hum'), ('stripes_chirp_up', 'stripes_chirp_down')]
    """
    pairs = []
    for a in CLASSES:
        for b in CLASSES:
            if (REVERSED_VISUAL.get(b.visual) == a.visual and a.sound == b.sound) or (
                REVERSED_SOUND.get(b.sound) == a.sound and a.visual == b.visual
            ):
                pairs.append((a.name, b.name))
    return pairs


def class_names(n: int | None = None) -> list[str]:
    """Names of the first ``n`` classes (all when ``None``)."""
    return [c.name for c in CLASSES[: len(CLASSES) if n is None else n]]

