"""MkDocs hook: fill docs/cli.md's marker with the reference generated from sgtool's Typer app."""
from __future__ import annotations


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ARG001 (MkDocs' hook signature)
    if page.file.src_uri != "cli.md":
        return markdown
    from sgtool.cli import app
    from sgtool.cli_reference import fill
    from sgtool.engine.kinds import all_kinds

    return fill(markdown, app, all_kinds())
