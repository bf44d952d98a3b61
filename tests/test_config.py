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
