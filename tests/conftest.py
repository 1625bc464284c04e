"""Shared test helpers: run the CLI in-process and capture what a user would see."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from sgtool.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """cli("-w", ws, "info", "--json") -> CliResult(code, stdout, stderr)."""

    def run(*args) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors, where extra threads only spin against each other on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def own_image(tmp_path) -> Path:
    """A 150 x 90 PNG that belongs to no dataset: a red disc and a blue rectangle on dark grey."""
    image = Image.new("RGB", (150, 90), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 20, 50, 60], fill=(230, 60, 50))
    draw.rectangle([90, 15, 140, 70], fill=(60, 110, 235))
    path = tmp_path / "photo.png"
    image.save(path)
    return path


@pytest.fixture(scope="session")
def detector_ws_template(tmp_path_factory) -> Path:
    """30 synthetic 64 px images (seed 3) and a one-epoch tiny detector 'd1', trained once per session through
    the CLI's stage; copy it with `detector_ws_copy` before adding runs."""
    from sgtool.data.synth import prepare_synth
    from sgtool.workspace import Workspace

    root = tmp_path_factory.mktemp("detector-ws")
    prepare_synth(Workspace(root), images=30, size=64, seed=3, workers=1)
    try:
        main(["-w", str(root), "-q", "train-detector", "--epochs", "1", "--batch-size", "4", "--name", "d1"])
    except SystemExit as exc:
        assert not exc.code
    return root


def detector_ws_copy(template: Path, tmp_path_factory, name: str) -> Path:
    """A private copy of the session's detector workspace."""
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(template, root, dirs_exist_ok=True)
    return root
