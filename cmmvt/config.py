"""Typed parameters: load and validate ``params.yaml``.

``params.yaml`` is the single source of truth for the DVC pipeline and the CLI. Every section is a
pydantic model that forbids unknown keys, so a typo fails at once with one line naming the key path
and what is allowed, for example::

    params.yaml: model.attention = 'globl' is not one of: local, global

Example:
    >>> from cmmvt.config import Params
    >>> p = Params.model_validate({"model": {"attention": "global"}})
    >>> p.model.attention, p.extract.fps
    ('global', 4.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator


class ConfigError(ValueError):
    """A params file or override that does not validate; ``str()`` is one line per problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthParams(_Section):
    """The embedded synthetic audio-visual dataset (see :mod:`cmmvt.data.synth`)."""

    classes: int = Field(10, ge=2, le=10)
    clips_per_class: int = Field(24, ge=1)
    duration: float = Field(4.0, gt=0)
    fps: int = Field(25, gt=0)
    size: int = Field(128, ge=32)
    sample_rate: int = Field(16000, gt=0)
    # clips per class written without a label to ``<root>/unlabelled/`` (the pretraining pool)
    unlabelled_clips_per_class: int = Field(24, ge=0)


class SplitParams(_Section):
    """Fractions for deterministic stratified splits when the source gives none."""

    train: float = Field(0.6, ge=0, le=1)
    val: float = Field(0.2, ge=0, le=1)
    test: float = Field(0.2, ge=0, le=1)


class DataParams(_Section):
    """Where the clips come from and where the manifest goes."""

    # The dataset seed (synthetic clips, stratified splits). Kept apart from the top-level experiment
    # `seed` (prototypes, pretrain, train) so that `dvc exp run -S seed=1` never regenerates the data
    # or re-extracts features.
    seed: int = 0
    source: Literal["synth", "folder", "kinetics", "csv", "audioset", "vggsound"] = "synth"
    root: str = "data/synth"
    csv: str | list[str] | None = None  # kinetics, csv, vggsound: one file; audioset: one or several segment CSVs
    class_index: str | None = None  # audioset: class_labels_indices.csv (label ids → names)
    manifest: str = "data/manifest.csv"
    splits: SplitParams = SplitParams()
    synth: SynthParams = SynthParams()


class AudioParams(_Section):
    """Log-mel spectrogram windows centred on each sampled frame timestamp."""

    sample_rate: int = Field(16000, gt=0)
    n_mels: int = Field(64, ge=8)
    win_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    window_s: float = Field(0.96, gt=0)
    image: tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)]] | None = (128, 192)  # (H, W) CNN input; null: n_mels × window
    norm: Literal["fixed", "window", "clip"] = "window"  # fixed affine map | standardise each window | each clip
    stack: Literal[1, 3] = 1  # windows per row: 1 (in all 3 channels) | 3 (t − window, t, t + window as R, G, B)
    # image: the frame backbone on log-mel images | aisfx: a CNN trained on sound effects, its own framing
    # (44.1 kHz, 96 bands, 2.32 s windows; the keys above then do not apply): cmmvt.features.sound
    backbone: Literal["image", "aisfx"] = "image"
    weights: str | None = None  # the audio model's checkpoint; null: the installed aisfx package's


BUILTIN_BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "none")


def _backbone(name: str) -> str:
    if name in BUILTIN_BACKBONES or (name.startswith("timm:") and len(name) > len("timm:")):
        return name
    raise ValueError(f"is not one of: {', '.join(BUILTIN_BACKBONES)}, timm:<model name>")


class ExtractParams(_Section):
    """Frozen-CNN feature extraction into HDF5 caches."""

    out: str = "data/features"
    fps: float = Field(4.0, gt=0)
    # a built-in CNN, or any timm image model as timm:<name> (its own input size, mean/std and interpolation)
    backbone: Annotated[str, AfterValidator(_backbone)] = "efficientnet_lite0"
    weights: str | None = None
    image_size: int = Field(128, ge=32)
    crop: Literal["centre", "full", "three"] = "three"  # square CNN input: centre crop | whole frame padded | 3 crops averaged
    flip: bool = False  # also embed the mirrored frame and average (2× CNN cost)
    batch_size: int = Field(32, ge=1)
    workers: int = Field(1, ge=0)
    device: str = "cpu"
    engine: Literal["onnxruntime", "torch"] = "onnxruntime"  # CPU inference engine for the frozen CNN (same features)
    threads: int = Field(0, ge=0)  # CNN threads; 0: one per core available
    fast_decode: bool = False  # skip non-reference frames: each sample is the nearest decodable frame
    shard_size: int = Field(256, ge=1)
    # processes of the DVC extract stage (torchrun on this machine); not a feature param: the rows do not change
    procs: int = Field(1, ge=1)
    audio: AudioParams = AudioParams()


class PrototypeParams(_Section):
    """k-means prototypes per modality."""

    k_video: int = Field(10, ge=2)
    k_audio: int = Field(10, ge=2)
    frame_level: bool = False  # cluster every row (clip = majority vote of its rows) instead of clip means
    minibatch_threshold: int = Field(20000, ge=1)  # points above which MiniBatchKMeans (streamed if frame-level)
    k_rows: int = Field(32, ge=2)  # clusters of single rows per modality: the per-row targets of pretrain.objective mask


class ObjectiveWeights(_Section):
    """Weights of the losses combined by ``pretrain.objective: combined``."""

    xdc: float = Field(1.0, ge=0)
    infonce: float = Field(1.0, ge=0)
    protonce: float = Field(1.0, ge=0)
    sync: float = Field(1.0, ge=0)
    mask: float = Field(1.0, ge=0)
    order: float = Field(1.0, ge=0)


class PretrainParams(_Section):
    """Cross-modal self-supervised pretraining (no labels)."""

    objective: Literal["none", "xdc", "infonce", "protonce", "sync", "mask", "order", "combined"] = "infonce"
    weights: ObjectiveWeights = ObjectiveWeights()  # for objective: combined
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    temperature: float = Field(0.1, gt=0)
    recluster_every: int = Field(0, ge=0)  # XDC's iterative form: re-cluster encoder outputs every N epochs
    sync_shift: float = Field(0.5, gt=0)  # sync: the audio of a negative is shifted by at least this many seconds
    mask_ratio: float = Field(0.5, gt=0, lt=1)  # mask: share of a clip's rows of one modality hidden (in spans)
    mask_span: int = Field(3, ge=1)  # mask: rows per hidden span
    order_ratio: float = Field(0.25, gt=0, le=1)  # order: share of a crop's steps moved (both modalities together)
    # Clips pretrained on (labels are never used) and clustered by `prototypes`. The test split is held out
    # by default: cross-modal targets memorised on a test clip would hand its other modality to a
    # single-modality model.
    splits: list[Literal["train", "val", "test", "unlabelled"]] = Field(["train", "val", "unlabelled"], min_length=1)


class ModelParams(_Section):
    """Temporal encoder and head (after VTN, Neimark et al. 2021)."""

    encoder: Literal["longformer", "meanpool"] = "longformer"
    attention: Literal["local", "global"] = "local"
    backend: Literal["native", "hf"] = "native"  # local attention: chunked SDPA (native) or transformers' Longformer
    modalities: Literal["video", "audio", "av"] = "av"
    fusion: Literal["late", "early"] = "early"
    crop_frames: int = Field(16, ge=1)  # rows per training crop = learned position table (longer: interpolated)
    max_frames: int = Field(1024, ge=1)  # rows encoded in one pass at evaluation / predict; longer clips: views
    window: int = Field(4, ge=2, validate_default=True)  # local attention: total width, even (see _window_fits)
    hidden: int = Field(128, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1, validate_default=True)  # must divide hidden (see _heads_divide_hidden)
    dropout: float = Field(0.1, ge=0, lt=1)
    pool: Literal["cls", "mean", "both"] = "both"  # clip embedding: [CLS] | mean of the frames' outputs | their average
    input_norm: bool = False  # LayerNorm over each row's CNN features before the projection
    input_dropout: float = Field(0.0, ge=0, lt=1)  # dropout on the (normalised) CNN features

    # What the transformer can be built with. Each check reads the keys declared above the one it names
    # (pydantic validates in declaration order; a key that failed its own check is absent and skips it), so
    # the message names that key, as for any other bad value. Defaults are validated too: `hidden: 18` alone
    # makes the default `heads: 4` wrong.

    @field_validator("window")
    @classmethod
    def _window_fits(cls, window: int, info: ValidationInfo) -> int:
        """Local (Longformer) attention: ``window`` is the total width, even, and at least 4 with the hf backend."""
        above = info.data
        if above.get("encoder") != "longformer" or above.get("attention") != "local":
            return window  # no sliding window: any width is unused
        if window % 2:
            raise ValueError("must be even with model.attention = 'local' (allowed: 2, 4, 6, …): it is the total "
                             "width, each frame attending to window/2 neighbours either side")
        if window == 2 and above.get("backend") == "hf":
            raise ValueError("needs model.backend = 'native' (allowed with 'hf': 4, 6, 8, …): transformers' "
                             "Longformer kernel fails for window/2 = 1")
        return window

    @field_validator("heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        """The transformer splits ``hidden`` evenly among the heads (``meanpool`` has none)."""
        hidden, encoder = info.data.get("hidden"), info.data.get("encoder")
        if encoder == "longformer" and hidden is not None and hidden % heads:
            divisors = ", ".join(str(d) for d in range(1, hidden + 1) if hidden % d == 0)
            raise ValueError(f"must divide model.hidden = {hidden} (allowed: {divisors})")
        return heads


class TrainParams(_Section):
    """Supervised training on cached features."""

    # multiclass: one label per clip, softmax + cross-entropy | multilabel: several (``a;b``), sigmoid + binary CE
    task: Literal["multiclass", "multilabel"] = "multiclass"
    balance: Literal["none", "loss"] = "none"  # multilabel: loss: each class's positives weighted by negatives/positives
    threshold: Literal["per_class", "global"] = "per_class"  # multilabel: decision thresholds chosen on val (max F1)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(15, ge=1)  # select best: stop after this many epochs without a better val top-1
    min_steps: int = Field(200, ge=0)  # at least this many optimiser steps: epochs are raised where labels are few
    # the checkpoint kept: best val top-1 (early stopping) | the last one | auto: last with labels_per_class, else best
    select: Literal["auto", "best", "last"] = "auto"
    # training labels kept per class (None: all); validation keeps as many per class, never more than training has
    labels_per_class: int | None = Field(None, ge=1)
    label_draw: int = 0  # seed of the labelled clips drawn by labels_per_class (apart from `seed`: paired comparisons)
    init: Literal["auto", "scratch", "pretrained"] = "auto"  # auto: pretrained unless pretrain.objective is none
    # finetune: every weight | probe: the head only, encoders frozen | lp_ft: the head alone for lp_steps, then finetune
    transfer: Literal["finetune", "lp_ft", "probe"] = "finetune"
    lp_steps: int = Field(100, ge=1)  # lp_ft: optimiser steps of the head alone before every weight is trained
    encoder_lr: float = Field(1.0, gt=0)  # learning rate of everything but the head, as a multiple of train.lr


class EvaluateParams(_Section):
    """Test-time evaluation."""

    # rows per view (null: model.max_frames, the whole clip up to the cap; 16 = the 4-s crop of earlier versions)
    max_frames: int | None = Field(None, ge=1)
    views: int | None = Field(None, ge=1)  # views of clips longer than a view (null: as many as cover the clip)


class PathParams(_Section):
    """Where the stages and the CLI write: one place, read by ``stages/``, the CLI's defaults and dvc.yaml."""

    synth: str = "data/synth"  # the synthetic clips (data.root reads from here by default)
    prototypes: str = "data/prototypes.h5"
    pretrained: str = "models/pretrain.pt"
    classifier: str = "models/classifier.pt"
    classifier_params: str = "models/classifier.params.yaml"  # the resolved params beside the checkpoint
    reports: str = "reports"  # prototypes/, pretrain/, train/, eval/ below it


class Params(_Section):
    """All of ``params.yaml``."""

    seed: int = 0  # the experiment seed (prototypes, pretrain, train); the data has its own, data.seed
    data: DataParams = DataParams()
    extract: ExtractParams = ExtractParams()
    prototypes: PrototypeParams = PrototypeParams()
    pretrain: PretrainParams = PretrainParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    paths: PathParams = PathParams()


def _describe(err: dict[str, Any], source: str) -> str:
    """One line for one pydantic error: ``source: key.path = value is not one of: …``."""
    path = ".".join(str(p) for p in err["loc"])
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{path}'"
    shown = repr(err.get("input"))
    if kind == "literal_error":
        allowed = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{source}: {path} = {shown} is not one of: {allowed}"
    if kind == "value_error":
        return f"{source}: {path} = {shown} {err['msg'].removeprefix('Value error, ')}"
    return f"{source}: {path} = {shown}: {err['msg'].lower()}"


def validate(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a raw mapping into :class:`Params`.

    Args:
        raw: The parsed YAML mapping.
        source: The name shown in error messages.

    Raises:
        ConfigError: One line per invalid or unknown key.
    """
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``4`` → int, ``null`` → None, ``a`` → str)."""
    return yaml.safe_load(text) if text != "" else ""


def lookup(params: Params | dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (``model.pool``) of params or of their dict.

    Raises:
        KeyError: No such key.
    """
    node: Any = params.model_dump() if isinstance(params, Params) else params
    for part in key.split("."):
        node = node[part]
    return node


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied.

    Args:
        raw: Parsed params mapping.
        overrides: ``{"model.attention": "global"}`` or ``["model.attention=global"]`` (values parsed as YAML).
            ``None`` values in a dict are skipped, so unset CLI flags leave params alone.
    """
    import copy

    out = copy.deepcopy(raw or {})
    items = (
        [tuple(s.split("=", 1)) for s in overrides] if isinstance(overrides, list) else overrides.items()
    )
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, str) and isinstance(overrides, list):
            value = _parse_scalar(value)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: '{part}' is not a section")
        node[leaf] = value
    return out


def load(path: str | Path = "params.yaml", overrides: dict[str, Any] | list[str] | None = None) -> Params:
    """Load ``params.yaml`` (missing file → defaults), apply overrides and validate.

    Args:
        path: The params file.
        overrides: Dotted-key overrides, see :func:`apply_overrides`.

    Raises:
        ConfigError: On unreadable YAML, unknown keys or invalid values.
    """
    path = Path(path)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if overrides:
        raw = apply_overrides(raw, overrides)
    return validate(raw, source=path.name)


def dump(params: Params, path: str | Path) -> None:
    """Write the resolved params beside a run's outputs (YAML)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
