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


def render_video(rng: np.random.Generator, word: str | list[str], width: int, height: int, frames: int) -> np.ndarray:
    """A photograph of the object (of each object of a list), framed like a picture held up, drifting over a
    panning scene.

    Returns:
        ``(frames, height, width, 3)`` uint8.
    """
    words = [word] if isinstance(word, str) else list(word)
    objects, scenes = _material()
    scene = scenes[rng.integers(len(scenes))]
    ph, pw = scene.shape[:2]  # 427, 640
    zoom = max(height / ph, width / pw) / rng.uniform(0.6, 0.9)  # the frame shows 60–90 % of the scene's extent
    scene = _resize(scene, int(ph * zoom) + 1, int(pw * zoom) + 1)  # (H', W', 3)
    free = np.array(scene.shape[:2]) - [height, width]  # room to pan
    b0, b1 = rng.integers(0, free + 1), rng.integers(0, free + 1)  # the view's top-left at the start, the end
    sprites = [_sprite(rng, objects[w], width, height) for w in words]  # [(sprite, start, end)]
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        u = f / max(frames - 1, 1)
        y, x = (b0 + u * (b1 - b0)).astype(int)
        frame = scene[y : y + height, x : x + width].copy()  # (height, width, 3)
        for sprite, a0, a1 in sprites:
            ty, tx = (a0 + u * (a1 - a0)).astype(int)
            frame[ty : ty + sprite.shape[0], tx : tx + sprite.shape[1]] = sprite
        out[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _sprite(rng: np.random.Generator, photos: list[np.ndarray], width: int, height: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of one of an object's photographs, scaled to 25–45 % of the frame's shorter side, and its
    top-left corner at the start and the end of the clip."""
    photo = photos[rng.integers(len(photos))]
    oh, ow = photo.shape[:2]
    keep = rng.uniform(0.6, 1.0)  # a random crop of the object's photograph
    ch, cw = int(oh * keep), int(ow * keep)
    y, x = rng.integers(0, oh - ch + 1), rng.integers(0, ow - cw + 1)
    side = min(width, height) * rng.uniform(0.25, 0.45)  # the picture's longer side in frame pixels
    sh, sw = (int(side), int(side * cw / ch)) if ch >= cw else (int(side * ch / cw), int(side))
    sprite = _resize(photo[y : y + ch, x : x + cw], sh, sw)  # (sh, sw, 3)
    a0 = np.array([rng.uniform(0, height - sh), rng.uniform(0, width - sw)])  # top-left at the start
    a1 = np.clip(a0 + rng.normal(0, 0.15, 2) * [height, width], 0, [height - sh, width - sw])
    return sprite, a0, a1


def render_audio(rng: np.random.Generator, speaker: Speaker, word: str | list[str], voice: str,
                 seconds: float) -> np.ndarray:
    """The word (each word of a list) spoken once at a random instant over a noise bed: ``(seconds · 22050,)``
    float32."""
    words = [word] if isinstance(word, str) else list(word)
    n = int(round(seconds * SPEECH_RATE))
    out = over_noise(rng, speaker.say(words[0], voice, rate=int(rng.integers(120, 200)),
                                      pitch=int(rng.integers(25, 75))), n)
    for w in words[1:]:  # the others at their own instant, rate, pitch and level (they may overlap)
        speech = speaker.say(w, voice, rate=int(rng.integers(120, 200)), pitch=int(rng.integers(25, 75)))[: n - 1]
        start = rng.integers(0, n - len(speech))
        out[start : start + len(speech)] += speech * 10 ** (rng.uniform(-24, -3) / 20) / max(
            float(np.abs(speech).max()), 1e-6)
    return np.clip(out, -1, 1).astype(np.float32)


def over_noise(rng: np.random.Generator, sound: np.ndarray, n: int) -> np.ndarray:
    """``sound`` (cut to ``n - 1`` samples) at a random instant and peak level (−24 … −3 dBFS) over a soft,
    low-passed hiss at −55 … −35 dB: ``(n,)`` float32."""
    sound = sound[: n - 1]
    gain = 10 ** (rng.uniform(-24, -3) / 20) / max(float(np.abs(sound).max()), 1e-6)
    noise = rng.standard_normal(n).astype(np.float32)
    noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")
    out = noise * (10 ** (rng.uniform(-55, -35) / 20) / max(float(noise.std()), 1e-6))
    start = rng.integers(0, n - len(sound))
    out[start : start + len(sound)] += gain * sound
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
            name = f"clip_{len(rows):04d}" if split == "unlabelled" else f"{word}_{i:03d}"  # no word in the name
            path = out / "clips" / split / f"{name}.{'webm' if rng.random() < 0.25 else 'mp4'}"
            frames = render_video(rng, word, width, height, int(seconds * fps))
            audio = render_audio(rng, speaker, word, voice, seconds)
            _encode(path, frames, fps, audio, SPEECH_RATE)
            rows.append({"path": str(path.relative_to(out)), "label": "" if split == "unlabelled" else word,
                         "split": split})
    csv = out / "clips.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def make_multilabel(out: str | Path, counts: tuple[int, int, int] = (240, 80, 80), seed: int = 0, classes: int = 10,
                    durations: tuple[float, float] = (3.0, 5.0)) -> Path:
    """Write clips of one or two objects — each shown and its name spoken — and ``clips.csv`` (``path,labels,split``).

    Half the clips hold one object, half two different ones (their photographs both in the picture, both names
    spoken by one voice at their own instants); the labels are the objects, ``;``-joined. Voices are held out in
    val and test as in :func:`make`; sizes, frame rates and codecs as there.

    Args:
        counts: Clips in train, val and test.

    Returns:
        The CSV's path.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    speaker = Speaker()
    rows = []
    for split, n in zip(("train", "val", "test"), counts):
        for _ in range(n):
            words = sorted(rng.choice(WORDS[:classes], size=int(rng.integers(1, 3)), replace=False).tolist())
            width, height = SIZES[rng.integers(len(SIZES))]
            fps = int(rng.choice([25, 30]))
            seconds = float(rng.uniform(*durations))
            voice = rng.choice(ACCENTS) + rng.choice(VARIANTS[split])
            path = out / "clips" / split / f"clip_{len(rows):04d}.{'webm' if rng.random() < 0.25 else 'mp4'}"
            frames = render_video(rng, words, width, height, int(seconds * fps))
            _encode(path, frames, fps, render_audio(rng, speaker, words, voice, seconds), SPEECH_RATE)
            rows.append({"path": str(path.relative_to(out)), "labels": ";".join(words), "split": split})
    csv = out / "clips.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _encode(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray, rate: int) -> None:
    """H.264 + AAC for ``.mp4``, VP9 + Opus for ``.webm``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".webm":
        encode_clip(path, frames, fps, audio, rate, vcodec="libvpx-vp9", acodec="libopus",
                    video_options={"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"})
    else:
        encode_clip(path, frames, fps, audio, rate, preset="veryfast", crf=23)


# Real recorded sound events, from two Debian packages: Tux Paint's stamps (recordings of animals and instruments,
# most from Freesound) and Battle for Wesnoth's core sounds (weapons, cries, horn signals). The regular expressions
# match paths below each package's extracted root; Tux Paint's spoken descriptions (``*_desc*``) never match.
SOUND_PACKAGES = ("tuxpaint-stamps-default", "wesnoth-1.16-data")
_TUX = "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
_WES = "wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core/sounds"
SOUND_CLASSES = {
    "bird": [rf"{_TUX}/animals/birds/[a-z_]+\.ogg$", rf"{_WES}/ambient/birds\d\.ogg$"],
    "mammal": [rf"{_TUX}/animals/mammals/([a-z]+/)?[a-z_]+\d?\.ogg$", rf"{_WES}/(wolf|horse)-(hit|die|growl)(-\d)?\.ogg$"],
    "human cry": [rf"{_WES}/(human|human-old|human-female|dwarf|elf)-(hit|die)(-\d)?\.ogg$"],
    "monster cry": [rf"{_WES}/(orc|orc-small|troll|ogre|goblin|zombie|skeleton|skeleton-big|lich|naga)-(hit|die)"
                    rf"(-\d)?\.ogg$"],
    "melee strike": [rf"{_WES}/(sword|sword-1|axe|mace|flail|club|staff|spear|knife|fist|hatchet|claws|dagger-swish)"
                     rf"(-miss)?\.(ogg|wav)$"],
    "missile": [rf"{_WES}/(bow|bow-puny|crossbow|sling|sling-big|throwing-knife|dart|throw-\d)(-fire)?(-miss)?"
                rf"\.(ogg|wav)$"],
    "horn or music": [rf"{_WES}/horn-signals/horn-\d\.ogg$", rf"{_WES}/fanfare-short\.wav$",
                      rf"{_TUX}/hobbies/music/[a-z]+/[a-z_]+\.ogg$"],
}


def sound_library(folder: Path) -> dict[str, list[Path]]:
    """The recordings of each class of :data:`SOUND_CLASSES`, sorted; :data:`SOUND_PACKAGES` are fetched with
    Debian's ``apt-get download`` and unpacked into ``folder`` where they are not there yet (a benchmark-time need
    only: the product never needs them)."""
    import re
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    for pkg in SOUND_PACKAGES:
        if not (folder / pkg).is_dir():
            subprocess.run(["apt-get", "download", pkg], cwd=folder, check=True, capture_output=True)
            deb = next(folder.glob(f"{pkg}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", deb.name, pkg], cwd=folder, check=True)
            deb.unlink()
    files = sorted(str(f.relative_to(folder)) for pkg in SOUND_PACKAGES for f in (folder / pkg).rglob("*")
                   if f.suffix in (".ogg", ".wav") and "_desc" not in f.name)
    return {c: [folder / f for f in files if any(re.search(p, f) for p in pats)] for c, pats in SOUND_CLASSES.items()}


def _recording(path: Path, rate: int) -> np.ndarray:
    """A sound file as mono float32 at ``rate`` Hz (PyAV)."""
    import av

    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def make_sounds(out: str | Path, library: Path, seed: int = 0, cap: int = 30, train_clips: int = 3,
                shares: tuple[float, float] = (0.5, 0.25)) -> Path:
    """Write clips whose sound is a real recording of its class and ``clips.csv`` (``path,label,split``).

    Each class's recordings (at most ``cap``, drawn by ``seed``) are split by recording — ``shares`` of them to
    train and val, the rest to test — so no recording is heard in two splits. A training recording makes
    ``train_clips`` clips, a val or test one makes one. The sound sits at a random instant and level over a noise
    bed (:func:`over_noise`), 44.1 kHz; the picture is a photograph of an object unrelated to the class
    (:func:`render_video`), so only the sound tells the class. Sizes, frame rates and codecs as :func:`make`;
    each clip lasts the recording plus 0.5–1.5 s, 2–5 s.

    Returns:
        The CSV's path.
    """
    out, rate = Path(out), 44100
    rng = np.random.default_rng(seed)
    rows = []
    for label, files in sound_library(Path(library)).items():
        files = [files[i] for i in sorted(rng.permutation(len(files))[:cap])]
        order = rng.permutation(len(files))
        n_train, n_val = round(len(files) * shares[0]), max(1, round(len(files) * shares[1]))
        for rank, k in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            sound = _recording(files[k], rate)
            for j in range(train_clips if split == "train" else 1):
                width, height = SIZES[rng.integers(len(SIZES))]
                fps = int(rng.choice([25, 30]))
                seconds = float(np.clip(len(sound) / rate + rng.uniform(0.5, 1.5), 2.0, 5.0))
                path = out / "clips" / split / f"clip_{len(rows):04d}.{'webm' if rng.random() < 0.25 else 'mp4'}"
                frames = render_video(rng, WORDS[rng.integers(len(WORDS))], width, height, int(seconds * fps))
                _encode(path, frames, fps, over_noise(rng, sound, int(round(seconds * rate))), rate)
                rows.append({"path": str(path.relative_to(out)), "label": label, "split": split,
                             "recording": str(files[k].relative_to(library))})
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
