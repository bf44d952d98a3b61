"""params.yaml validation: unknown keys and bad values name the key path and what is allowed."""

from pathlib import Path

import pytest
import yaml

from cmmvt import config

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_validate():
    p = config.load(REPO / "params.yaml")
    assert p.data.source == "synth"
    assert p.extract.fps > 0


def test_bad_literal_names_key_and_allowed(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"model": {"attention": "globl"}}))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert str(err.value) == "params.yaml: model.attention = 'globl' is not one of: local, global"


def test_unknown_key_is_rejected(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"extract": {"fsp": 4}}))
    with pytest.raises(config.ConfigError, match=r"unknown key 'extract\.fsp'"):
        config.load(f)


def test_bad_number_names_key(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"extract": {"fps": -2}}))
    with pytest.raises(config.ConfigError, match=r"extract\.fps = -2: input should be greater than 0"):
        config.load(f)


def test_overrides_parse_yaml_and_take_precedence(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"extract": {"fps": 2, "weights": "w.pth"}}))
    p = config.load(f, ["extract.fps=8", "extract.weights=null", "model.attention=global"])
    assert p.extract.fps == 8.0 and p.extract.weights is None and p.model.attention == "global"
    with pytest.raises(config.ConfigError, match="model.fusion = 'middle' is not one of: late, early"):
        config.load(f, ["model.fusion=middle"])


def test_dump_roundtrip(tmp_path):
    p = config.load(REPO / "params.yaml", ["seed=3"])
    config.dump(p, tmp_path / "resolved.yaml")
    assert config.load(tmp_path / "resolved.yaml") == p


def test_config_defaults_equal_params_yaml():
    """One source of defaults: the CLI outside a repo (no params.yaml) uses exactly the repo's params."""
    from pathlib import Path

    repo = config.load(Path(__file__).resolve().parents[1] / "params.yaml")
    assert config.Params().model_dump() == repo.model_dump()
    assert config.load(Path("/nonexistent/params.yaml")).model_dump() == repo.model_dump()


# What the transformer can be built with is checked here too, with the key and the allowed values, not when the
# model is built (cmmvt.models.factory trusts validated params).
@pytest.mark.parametrize("overrides,message", [
    ({"model.window": 5},  # local attention (the default)
     "params.yaml: model.window = 5 must be even with model.attention = 'local' (allowed: 2, 4, 6, …)"),
    ({"model.backend": "hf", "model.window": 2},
     "params.yaml: model.window = 2 needs model.backend = 'native' (allowed with 'hf': 4, 6, 8, …)"),
    ({"model.hidden": 18},  # the default heads (4) no longer divide it
     "params.yaml: model.heads = 4 must divide model.hidden = 18 (allowed: 1, 2, 3, 6, 9, 18)"),
    ({"model.heads": 3},
     "params.yaml: model.heads = 3 must divide model.hidden = 128 (allowed: 1, 2, 4, 8, 16, 32, 64, 128)"),
], ids=["odd-window", "hf-window-2", "hidden-vs-default-heads", "heads"])
def test_model_constraints_name_the_key_and_allowed(tmp_path, overrides, message):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"model": {"attention": "local", "encoder": "longformer"}}))
    with pytest.raises(config.ConfigError) as err:
        config.load(f, overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    {"model.attention": "global", "model.window": 5},  # no sliding window: the width is unused
    {"model.encoder": "meanpool", "model.window": 5, "model.hidden": 18},  # no attention at all
    {"model.window": 2},  # the native backend runs window 2
    {"model.backend": "hf", "model.window": 6, "model.hidden": 96, "model.heads": 6},
])
def test_model_constraints_only_where_they_apply(tmp_path, overrides):
    p = config.load(tmp_path / "params.yaml", overrides)
    assert all(config.lookup(p, k) == v for k, v in overrides.items())


def test_model_constraints_in_a_params_file_and_on_assignment(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"model": {"hidden": 30, "heads": 4, "window": 3}}))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert str(err.value).splitlines() == [  # every problem, one line each
        "params.yaml: model.window = 3 must be even with model.attention = 'local' (allowed: 2, 4, 6, …): it is the "
        "total width, each frame attending to window/2 neighbours either side",
        "params.yaml: model.heads = 4 must divide model.hidden = 30 (allowed: 1, 2, 3, 5, 6, 10, 15, 30)",
    ]
    p = config.load(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="must divide model.hidden = 128"):
        p.model.heads = 5  # validate_assignment: a script's change is checked too
