"""Audio-visual clips made of real material that ships offline and that nobody in this project designed.

Class = an object and its name. **Video**: one of scikit-image's bundled photographs of the object (the cat
Chelsea, the coffee cup, the rocket, the astronaut, two views of a motorcycle, ...), randomly cropped and
scaled like a picture held up in the scene, drifts over a panning crop of one of scikit-learn's bundled
photographs (``china.jpg``, ``flower.jpg``), anywhere in the frame, edges included. **Audio**: the object's
name spoken by espeak-ng (its library and voices ship on PyPI in ``espeakng-loader``) once, at a random
instant, rate, pitch and loudness, in one of 96 voices (8 English accents × 12 voice variants), over a
noise bed.

A folder looks like a user's: 16:9 640×360, 4:3 480×360, 9:16 360×640 and 1:1 480×480 frames, 25 or 30 fps,
3–5 s, H.264 + AAC ``.mp4`` and VP9 + Opus ``.webm``, speech at 22.05 kHz.

Splits hold out voices: validation and test clips are spoken by voice variants never heard in training,
so a probe cannot win by memorising a voice. The pictures come from the same photographs in every split
(only crop, scale, place and scene differ): there is one photograph per object.

    python benchmarks/realav.py OUT [--per-class 30] [--seed 0]   # writes OUT/clips/… and OUT/clips.csv
"""

from __future__ import annotations

import argparse
import ctypes
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cmmvt.media import encode_clip

ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"]
VARIANTS = {"train": ["", "+m1", "+m2", "+m3", "+f1", "+f2", "+m7"], "val": ["+m4", "+f3"], "test": ["+m5", "+f4", "+m6"]}
SIZES = [(640, 360), (480, 360), (360, 640), (480, 480)]  # (width, height)
SPEECH_RATE = 22050


class Speaker:
    """espeak-ng through its C API (``espeakng-loader``'s bundled library and voice data), synchronous mode."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # AUDIO_OUTPUT_SYNCHRONOUS
        if rate != SPEECH_RATE:
            raise RuntimeError(f"espeak-ng did not initialise (returned {rate})")
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav: ctypes.POINTER(ctypes.c_short), n: int, _events: ctypes.c_void_p) -> int:
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0)
            return 0

        self._callback = proto(collect)  # kept alive as long as the library may call it
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """``text`` spoken by ``voice`` at ``rate`` words/min and ``pitch`` (0–100) → ``(n,)`` float32 at 22.05 kHz."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
        self._chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)  # POS_CHARACTER, espeakCHARS_AUTO
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)


OBJECTS = {  # class (the word spoken) → scikit-image's bundled photographs of it
    "astronaut": ["astronaut.png"], "cat": ["chelsea.png"], "coffee": ["coffee.png"], "rocket": ["rocket.jpg"],
    "motorcycle": ["motorcycle_left.png", "motorcycle_right.png"], "coins": ["coins.png"], "camera": ["camera.png"],
    "horse": ["horse.png"], "moon": ["moon.png"], "clock": ["clock_motion.png"],
}
WORDS = list(OBJECTS)


@functools.lru_cache(maxsize=1)
def _material() -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """The objects' photographs (RGB uint8) and scikit-learn's two bundled photographs as backgrounds."""
    import skimage.io
    from sklearn.datasets import load_sample_images

    folder = Path(skimage.__file__).parent / "data"
    objects = {}
    for word, files in OBJECTS.items():
        objects[word] = []
        for f in files:
            img = np.asarray(skimage.io.imread(folder / f))
            img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
            objects[word].append(img.astype(np.uint8) if img.max() > 1 else (img * 255).astype(np.uint8))
    return objects, list(load_sample_images().images)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w, 3)`` → ``(height, width, 3)`` float32, antialiased bilinear."""
    x = torch.from_numpy(np.array(img, np.float32)).permute(2, 0, 1)[None]  # a copy: the source stays read-only
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True)[0].permute(1, 2, 0).numpy()


def render_video(rng: np.random.Generator, word: str, width: int, height: int, frames: int) -> np.ndarray:
    """A photograph of the object, framed like a picture held up, drifting over a panning scene.

    Returns:
        ``(frames, height, width, 3)`` uint8.
    """
    objects, scenes = _material()
    scene = scenes[rng.integers(len(scenes))]
    ph, pw = scene.shape[:2]  # 427, 640
    zoom = max(height / ph, width / pw) / rng.uniform(0.6, 0.9)  # the frame shows 60–90 % of the scene's extent
    scene = _resize(scene, int(ph * zoom) + 1, int(pw * zoom) + 1)  # (H', W', 3)
    free = np.array(scene.shape[:2]) - [height, width]  # room to pan
    b0, b1 = rng.integers(0, free + 1), rng.integers(0, free + 1)  # the view's top-left at the start, the end
    photo = objects[word][rng.integers(len(objects[word]))]
    oh, ow = photo.shape[:2]
    keep = rng.uniform(0.6, 1.0)  # a random crop of the object's photograph
    ch, cw = int(oh * keep), int(ow * keep)
    y, x = rng.integers(0, oh - ch + 1), rng.integers(0, ow - cw + 1)
    side = min(width, height) * rng.uniform(0.25, 0.45)  # the picture's longer side in frame pixels
    sh, sw = (int(side), int(side * cw / ch)) if ch >= cw else (int(side * ch / cw), int(side))
    sprite = _resize(photo[y : y + ch, x : x + cw], sh, sw)  # (sh, sw, 3)
    a0 = np.array([rng.uniform(0, height - sh), rng.uniform(0, width - sw)])  # top-left at the start
    a1 = np.clip(a0 + rng.normal(0, 0.15, 2) * [height, width], 0, [height - sh, width - sw])
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        u = f / max(frames - 1, 1)
        y, x = (b0 + u * (b1 - b0)).astype(int)
        frame = scene[y : y + height, x : x + width].copy()  # (height, width, 3)
        ty, tx = (a0 + u * (a1 - a0)).astype(int)
        frame[ty : ty + sh, tx : tx + sw] = sprite
        out[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def render_audio(rng: np.random.Generator, speaker: Speaker, word: str, voice: str, seconds: float) -> np.ndarray:
    """The word spoken once at a random instant over a noise bed: ``(seconds · 22050,)`` float32."""
    speech = speaker.say(word, voice, rate=int(rng.integers(120, 200)), pitch=int(rng.integers(25, 75)))
    n = int(round(seconds * SPEECH_RATE))
    speech = speech[: n - 1]
    gain = 10 ** (rng.uniform(-24, -3) / 20) / max(float(np.abs(speech).max()), 1e-6)  # peak −24 … −3 dBFS
    noise = rng.standard_normal(n).astype(np.float32)
    noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")  # a soft, low-passed hiss
    out = noise * (10 ** (rng.uniform(-55, -35) / 20) / max(float(noise.std()), 1e-6))
    start = rng.integers(0, n - len(speech))
    out[start : start + len(speech)] += gain * speech
    return np.clip(out, -1, 1).astype(np.float32)


def make(out: str | Path, per_class: int = 30, seed: int = 0, durations: tuple[float, float] = (3.0, 5.0),
         classes: int = 10, unlabelled: int = 0, counts: tuple[int, int, int] | None = None) -> Path:
    """Write the clips and ``clips.csv`` (``path,label,split``).

    Args:
        out: Folder to write into (``clips/<split>/<word>_<n>.mp4|webm`` and ``clips.csv``; the unlabelled pool
            as ``clips/unlabelled/clip_<n>``, with split ``unlabelled`` and no label).
        per_class: Labelled clips per class, split 60 / 20 / 20 into train / val / test.
        unlabelled: Unlabelled clips per class (the pretraining pool), spoken by the training voices.
        seed: Everything random (sizes, images, voices, timing) follows from it.
        durations: Range of clip lengths in seconds.
        classes: The first ``classes`` objects.
        counts: Labelled clips per class as ``(train, val, test)``, instead of ``per_class`` split 60 / 20 / 20.

    Returns:
        The CSV's path.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    speaker = Speaker()
    n_val = max(1, round(per_class * 0.2))
    n_train, n_val, n_test = counts or (per_class - 2 * n_val, n_val, n_val)
    plan = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test + ["unlabelled"] * unlabelled
    rows = []
    for word in WORDS[:classes]:
        for i, split in enumerate(plan):
            width, height = SIZES[rng.integers(len(SIZES))]
            fps = int(rng.choice([25, 30]))
            seconds = float(rng.uniform(*durations))
            voice = rng.choice(ACCENTS) + rng.choice(VARIANTS["train" if split == "unlabelled" else split])
            webm = rng.random() < 0.25
            name = f"clip_{len(rows):04d}" if split == "unlabelled" else f"{word}_{i:03d}"  # no word in the name
            path = out / "clips" / split / f"{name}.{'webm' if webm else 'mp4'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = render_video(rng, word, width, height, int(seconds * fps))
            audio = render_audio(rng, speaker, word, voice, seconds)
            if webm:
                encode_clip(path, frames, fps, audio, SPEECH_RATE, vcodec="libvpx-vp9", acodec="libopus",
                            video_options={"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"})
            else:
                encode_clip(path, frames, fps, audio, SPEECH_RATE, preset="veryfast", crf=23)
            rows.append({"path": str(path.relative_to(out)), "label": "" if split == "unlabelled" else word,
                         "split": split})
    csv = out / "clips.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make(args.out, args.per_class, args.seed))


if __name__ == "__main__":
    main()
