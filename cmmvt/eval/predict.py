"""Classify new videos with a trained checkpoint: features on the fly, then the temporal classifier.

The checkpoint records the feature params of the caches it was trained on (backbone, weights, fps,
image size, log-mel windows), so the same frozen CNN and sampling are used here.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import predict
    predict.predict(["clip.mp4"], "models/classifier.pt", top_k=3)
    # → [{'path': 'clip.mp4', 'top': [('drum', 0.91), ('bell', 0.05), ('hum', 0.01)]}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cmmvt.features import extract, sound
from cmmvt.config import ExtractParams, Params
from cmmvt.train.dataset import clip_views
from cmmvt.eval.inference import eval_frames
from cmmvt.checkpoints import load_checkpoint


def _still_there(weights: object, default: str | None) -> str | None:
    """The weights file the features were made with where it still exists, else ``default``."""
    return str(weights) if weights and Path(str(weights)).is_file() else default


def extract_params(ckpt: dict[str, Any]) -> ExtractParams:
    """The :class:`ExtractParams` that reproduce the checkpoint's training features."""
    p = Params.model_validate(ckpt["params"]).extract
    feats = ckpt["features"]
    video, audio = feats.get("video", {}), feats.get("audio", {})
    sound_model = audio.get("backbone") in sound.MODELS
    frames = video or ({} if sound_model else audio)  # the attrs that name the frame backbone
    update: dict[str, Any] = {"fps": (video or audio)["fps"]}
    if frames:
        update["backbone"] = frames["backbone"]
        update["weights"] = _still_there(frames.get("weights"), p.weights)
    update.update({k: video[k] for k in ("image_size", "crop", "flip", "fast_decode") if k in video})
    if audio:
        framing = {k: audio[k] for k in type(p.audio).model_fields if k in audio and k not in ("backbone", "weights")}
        if sound_model:  # an audio model (extract.audio.backbone) and its weights
            framing |= {"backbone": audio["backbone"], "weights": _still_there(audio.get("weights"), p.audio.weights)}
        update["audio"] = type(p.audio).model_validate(p.audio.model_dump() | framing)  # (JSON lists → tuples)
    return p.model_copy(update=update)


@torch.inference_mode()
def predict(paths: list[str | Path], model_path: str | Path, top_k: int = 5, views: int | None = None,
            device: str = "cpu") -> list[dict[str, Any]]:
    """Top-k labels with probabilities for each video.

    Args:
        paths: Video files.
        model_path: Checkpoint written by the ``train`` stage.
        top_k: Labels per video.
        views: Views averaged for a video longer than ``model.max_frames`` rows (default: the checkpoint's
            ``evaluate.views``, else as many as cover it); a shorter one is encoded whole in one pass.
        device: Torch device for the backbone.

    Returns:
        One ``{"path", "top": [(label, probability), ...]}`` per video, or ``{"path", "error"}`` for a file
        that cannot be decoded. A multi-label model (``train.task: multilabel``) gives each label's own sigmoid
        probability and also ``"labels"``: every label at or above its threshold (chosen on val), most probable
        first.
    """
    model, ckpt = load_checkpoint(model_path)
    p = extract_params(ckpt)
    p, bbs = extract.create_backbones(p, device)
    params = Params.model_validate(ckpt["params"])
    views = views or params.evaluate.views
    frames = eval_frames(params)
    labels: list[str] = ckpt["labels"]
    cut = torch.tensor(ckpt["thresholds"]) if "thresholds" in ckpt else None  # (C,) multi-label thresholds
    results = []
    for path in paths:
        try:
            rows = extract.clip_features(path, p, bbs, model.modalities)
        except extract.media.MediaError as exc:
            results.append({"path": str(path), "error": exc.reason})
            continue
        logits = model(clip_views(rows, frames, views)).mean(0)  # (C,)
        prob = logits.softmax(-1) if cut is None else logits.sigmoid()
        top = prob.topk(min(top_k, len(labels)))
        result = {"path": str(path),
                  "top": [(labels[i], float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]}
        if cut is not None:
            result["labels"] = [labels[i] for i in prob.argsort(descending=True).tolist() if prob[i] >= cut[i]]
        results.append(result)
    return results
