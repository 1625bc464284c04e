"""The CLI reference page is generated from the app: every command, option and kind setting is on it."""
from __future__ import annotations

from pathlib import Path

import typer

from sgtool.cli import app
from sgtool.cli_reference import MARKER, fill, markdown
from sgtool.config import declarations
from sgtool.engine.kinds import all_kinds


def _paths(command, path="sgtool"):
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        if not child.hidden:
            yield from _paths(child, f"{path} {name}")


def test_every_command_and_option_is_on_the_page():
    text = markdown(app)
    for path, command in _paths(typer.main.get_command(app)):
        assert f"`{path}`" in text, path
        for param in command.params:
            for name in param.opts:
                if name.startswith("-"):
                    assert f"`{name}`" in text, (path, name)


def test_every_kind_setting_is_on_the_page_with_how_it_is_given():
    kinds = all_kinds()
    text = markdown(app, kinds)
    for kind in kinds:
        assert f"### `sgtool train --head {kind.name}`" in text
        for name, (_, meta) in declarations(kind.config).items():
            given = f"`--{name.replace('_', '-')}`" if meta["flag"] else f"`--set {name}=…`"
            assert f"| `{name}` | {given} |" in text, (kind.name, name)


def test_the_docs_page_holds_the_marker_the_build_hook_fills():
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert MARKER in page
    assert MARKER not in fill(page, app) and "`sgtool eval`" in fill(page, app)
