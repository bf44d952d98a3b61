"""The frame geometry, in one place: from a decoded frame to the CNN's square input.

A frame becomes CNN input in three steps, all decided here (``S``: the backbone's input side, ``extract.image_size``
or a timm model's own):

1. **Decoder resize** (:func:`decoder_resize`): the decoder scales each frame while converting it to RGB (swscale,
   bilinear), keeping its aspect ratio: the short side to ``S`` for the ``centre`` and ``three`` crops, the long
   side to ``S`` for ``full``. The decoder does the arithmetic of its ``short_side`` / ``long_side`` option
   (:func:`cmmvt.media.iter_frames`): :mod:`cmmvt.media` is the lower layer and knows nothing of crops.
2. **Views** (:func:`frame_views`): the square ``(V, S, S, 3)`` crops of the resized frame (and their mirrors),
   whose embeddings are averaged into the frame's row.
3. **Backbone input** (:func:`centre_square`): :meth:`cmmvt.features.backbones.Backbone.preprocess` takes the
   centred square of any ``(B, 3, H, W)`` batch and resizes it to ``S × S`` with the model's antialiased
   interpolation; views from step 2 are already ``S × S`` and pass unresized.

Example:
    >>> import numpy as np
    >>> decoder_resize(224, "full")
    {'long_side': 224}
    >>> frame_views(np.zeros((224, 398, 3), np.uint8), 224, "three", flip=True).shape
    (6, 224, 224, 3)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PAD_RGB", "centre_square", "decoder_resize", "frame_views"]

PAD_RGB = (124, 116, 104)  #: ImageNet mean colour: the padding of ``crop: full`` normalises to ≈ 0


def decoder_resize(side: int, crop: str) -> dict[str, int]:
    """The decoder's resize for the views of ``crop``: keyword arguments of :func:`cmmvt.media.iter_frames` (and of
    :meth:`cmmvt.features.segments.SharedPass.frames`).

    Args:
        side: Square side of the CNN input.
        crop: ``centre``, ``full`` or ``three`` (see :func:`frame_views`).

    Returns:
        ``{"long_side": side}`` for ``full`` (the whole frame fits the square), else ``{"short_side": side}``.
    """
    return {"long_side": side} if crop == "full" else {"short_side": side}


def frame_views(rgb: np.ndarray, side: int, crop: str = "centre", flip: bool = False) -> np.ndarray:
    """The square CNN inputs made from one frame: ``(V, side, side, 3)`` uint8, their embeddings averaged.

    ``rgb`` is already resized by the decoder (:func:`decoder_resize`): short side ``side`` for ``centre`` and
    ``three``, long side ``side`` for ``full``.

    * ``centre``: the centred square (Kinetics-style "short-side resize, centre crop"; on 16:9 footage it
      drops 44 % of the picture, and with it a subject near the edge).
    * ``full``: the whole frame, centred on a ``side × side`` canvas of the ImageNet mean colour
      (letterboxing; every pixel kept, the subject smaller).
    * ``three``: three squares along the long axis (start, centre, end; the 3-crop test of
      Feichtenhofer et al. 2019, "SlowFast Networks", ICCV), 3× the CNN cost; one on a square frame.
    * ``flip``: each view also mirrored left-right (2× the cost).

    Args:
        rgb: ``(H, W, 3)`` uint8 frame.
        side: Square side of the CNN input.
        crop: ``centre``, ``full`` or ``three``.
        flip: Add the mirrored views.

    Returns:
        ``(V, side, side, 3)`` uint8 with ``V = 1`` or ``3`` (``three`` on a non-square frame), doubled by ``flip``.
    """
    h, w = rgb.shape[:2]
    if crop == "full":
        out = np.empty((1, side, side, 3), np.uint8)
        out[:] = PAD_RGB
        top, left = (side - h) // 2, (side - w) // 2
        out[0, top : top + h, left : left + w] = rgb[:side, :side]
    else:
        sq = min(h, w, side)
        along = max(h, w) - sq  # free length along the long axis
        offsets = [along // 2] if crop == "centre" or along == 0 else [0, along // 2, along]  # square: one view
        short = (h - sq) // 2 if w >= h else (w - sq) // 2
        out = np.stack([rgb[short : short + sq, o : o + sq] if w >= h else rgb[o : o + sq, short : short + sq]
                        for o in offsets])  # (V, sq, sq, 3)
    return np.concatenate([out, out[:, :, ::-1]]) if flip else out


def centre_square(x: torch.Tensor, s: int, interpolation: str) -> torch.Tensor:
    """The centred square of side ``min(H, W)`` of a batch, resized to ``s × s``: "resize the short side to ``s``,
    centre-crop ``s × s``", cropping first so that no time is spent resizing pixels that are then cut away.

    Args:
        x: ``(B, 3, H, W)`` uint8 images (any strides, any device).
        s: Output side.
        interpolation: ``F.interpolate`` mode (antialiased): ``bilinear``, or a timm model's own (e.g. ``bicubic``).

    Returns:
        ``(B, 3, s, s)``: uint8 on the CPU (as PIL and torchvision round), float elsewhere (the uint8 antialiased
        kernel is CPU-only); the crop itself, unresized, where it is ``s × s`` already.
    """
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top : top + side, left : left + side]  # (B, 3, side, side)
    if x.device.type != "cpu":
        x = x.float()  # the uint8 antialiased kernel is CPU-only
    if side != s and x.shape[0] > 0:  # on CPU in uint8: ~5× faster, rounding as PIL/torchvision do
        x = F.interpolate(x, size=(s, s), mode=interpolation, align_corners=False, antialias=True)
    return x
