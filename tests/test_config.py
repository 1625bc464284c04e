"""Typed config from YAML plus --set overrides."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sgtool.config import build, parse_overrides, user_settings
from sgtool.errors import SgtoolError


@dataclass
class Optim:
    lr: float = 0.1
    epochs: int = 3


@dataclass
class Config:
    name: str = "x"
    flag: bool = False
    optim: Optim = field(default_factory=Optim)
    losses: list[str] = field(default_factory=lambda: ["L0"])


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\noptim:\n  lr: 0.5\n")
    config = build(Config, user_settings(path, ["optim.epochs=7", "flag=true", "losses=[L0, L1]"]))
    assert config == Config(name="run", flag=True, optim=Optim(lr=0.5, epochs=7), losses=["L0", "L1"])


@pytest.mark.parametrize("override, words", [
    ("optim.lr", "key=value"),
    ("optim.nope=1", "Unknown setting 'optim.nope'"),
    ("optim.epochs=1.5", "whole number"),
    ("optim.lr=fast", "must be a float"),
    ("flag=3", "true or false"),
])
def test_bad_overrides_are_user_errors(override, words):
    with pytest.raises(SgtoolError, match=words):
        build(Config, user_settings(None, [override]))


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
