"""Params presets: named sets of values written into ``params.yaml`` in place (comments and layout kept).

A preset is a switch of params, not a fork of the pipeline: ``cmmvt preset grid`` sizes the synthetic set so that
the ablation grid's test split resolves its own differences, ``dvc repro`` then renders and extracts it once, and
``cmmvt ablate`` queues the grid on it (each experiment runs the stages after ``extract`` only). ``cmmvt preset
default`` writes back the typed config's defaults for every key a preset sets.

* ``grid``: 60 labelled clips per class split 40 / 20 / 40 % (**240 test clips**, 120 val, 240 train, with the
  default 10 classes) instead of 24 per class split 60 / 20 / 20 % (48 test clips, where one clip is 2 points).

Example:
    >>> PRESETS["grid"]["data.synth.clips_per_class"], PRESETS["default"]["data.synth.clips_per_class"]
    (60, 24)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml as pyyaml

from cmmvt import config
from cmmvt.io import atomic_write_text

_GRID: dict[str, Any] = {"data.synth.clips_per_class": 60, "data.splits.train": 0.4, "data.splits.val": 0.2,
                         "data.splits.test": 0.4}


PRESETS: dict[str, dict[str, Any]] = {"grid": _GRID, "default": {k: config.lookup(config.Params(), k) for k in _GRID}}


class PresetError(ValueError):
    """An unknown preset, or a params file it cannot be written into."""


def apply(path: str | Path, name: str) -> dict[str, tuple[Any, Any]]:
    """Write preset ``name`` into the params file at ``path`` (ruamel.yaml round trip: comments stay).

    Returns:
        ``{key: (old, new)}`` for the keys whose value changed.

    Raises:
        PresetError: ``name`` is not a preset, or the file lacks a key of it.
        cmmvt.config.ConfigError: The result would not be valid params (nothing is written).
    """
    from ruamel.yaml import YAML  # DVC's own YAML library: a round trip keeps comments and layout

    if name not in PRESETS:
        raise PresetError(f"preset {name!r} is not one of: {', '.join(PRESETS)}")
    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    yaml.width = 4096  # long flow mappings stay on their line
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(Path(path).read_text())
    changed = {}
    for key, value in PRESETS[name].items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if part not in node:
                raise PresetError(f"{path}: has no {key} to set (preset {name})")
            node = node[part]
        if node.get(leaf) != value:
            changed[key] = (node.get(leaf), value)
            node[leaf] = value
    buf = io.StringIO()
    yaml.dump(doc, buf)
    text = buf.getvalue()
    config.validate(pyyaml.safe_load(text), source=Path(path).name)
    atomic_write_text(path, text)
    return changed
