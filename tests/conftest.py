"""Shared test helpers: run the CLI in-process and capture what a user would see."""
from __future__ import annotations

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
