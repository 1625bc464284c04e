"""A dataset format declared in a test module becomes `sgtool prepare toy`, with its help, checked options and
completions, with no other file changed: the registry (sgtool/data/formats.py) is the only place it is known."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from sgg_fixtures import save_tiny
from sgtool.config import option
from sgtool.data.formats import DatasetFormat, register_format, unregister_format
from sgtool.workspace import Workspace


@dataclass
class ToyOptions:
    name: str = option("toy", "Dataset name in the workspace.")
    images: int = option(3, "Images in each split... of the tiny fixture, scaled.", min=1, max=8)
    colour: str = option("red", "A choice with no effect but its check.", choices=("red", "blue"))


def prepare_toy(ws: Workspace, options: ToyOptions, seed: int, reporter: object):
    return save_tiny(ws, name=options.name, seed=seed, splits=(8 * options.images, 2, 3))


@pytest.fixture
def toy_format():
    yield register_format(DatasetFormat("toy", "A tiny scene-graph set made by the test.", ToyOptions, prepare_toy))
    unregister_format("toy")


def test_a_format_declared_in_a_test_module_prepares_through_the_cli(tmp_path, cli, toy_format):
    ws = Workspace(tmp_path / "ws")
    result = cli("-w", ws.root, "--json", "prepare", "toy", "--images", "2", "--colour", "blue", "--name", "mine")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["dataset"] == "mine" and shown["counts"]["train"]["images"] == 16
    assert (ws.root / "data" / "mine" / "sgg.h5").is_file() and (ws.root / "priors" / "mine.npz").is_file()


def test_its_help_lists_the_declared_options_and_bad_values_are_refused(tmp_path, cli, toy_format):
    shown = cli("prepare", "toy", "--help")
    assert shown.code == 0 and "--images" in shown.out and "--colour" in shown.out
    assert "toy" in cli("prepare", "--help").out
    too_many = cli("-w", tmp_path / "ws", "prepare", "toy", "--images", "9")
    assert too_many.code == 2 and "--images must be from 1 to 8, not 9." in too_many.err
    wrong = cli("-w", tmp_path / "ws", "prepare", "toy", "--colour", "green")
    assert wrong.code == 2 and "green" in wrong.err
    assert not (tmp_path / "ws" / "data").exists()


def test_it_is_completed(tmp_path, cli, toy_format):
    script = cli("completions", "bash").out
    assert "sgtool prepare toy" in script and "--colour" in script
