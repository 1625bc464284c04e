"""The CLI reference page (Markdown), generated from the Typer app at documentation build time.

docs/hooks/cli_reference.py hands the app over when MkDocs renders docs/cli.md, so the page can never
lag the commands: a new command, head flag or dataset option appears in the next build.
"""
from __future__ import annotations

import types
import typing
from enum import Enum

import typer
from sgtool.flags import flag, setting

MARKER = "<!-- cli-reference -->"


def _default(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if callable(value) or value is None or value == () or getattr(param, "is_flag", False) and value is False:
        return ""
    value = getattr(value, "value", value)  # enums
    return f"`{value}`"


def _annotation(param):
    """The option's declared type, Optional[X] read as X."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    return args[0] if optional else annotation


def _kind(param) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = _annotation(param)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(str(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation or "text")).lower()


def _clean(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _option_rows(command) -> list[str]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        names = list(param.opts) + list(getattr(param, "secondary_opts", []))
        spelled = ", ".join(f"`{n}`" for n in names) if any(n.startswith("-") for n in names) \
            else f"`{(param.name or 'ARG').upper()}`"
        rows.append(f"| {spelled} | {_kind(param)} | {_default(param)} | {_clean(getattr(param, 'help', ''))} |")
    return rows


def _section(command, path: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{path}`", "", _clean(command.help) or "", ""]
    rows = _option_rows(command)
    if rows:
        lines += ["| option | takes | default | what |", "| --- | --- | --- | --- |", *rows, ""]
    children = getattr(command, "commands", {})
    for name in sorted(children):
        if not children[name].hidden:
            lines += _section(children[name], f"{path} {name}", min(level + 1, 4))
    return lines


def _kind_section(kind) -> list[str]:
    """One run kind's declared settings: flag or `--set`, range, default, help."""
    from sgtool.config import declarations, describe_range, spelled

    lines = [f"### `sgtool train {flag('head')} {kind.name}`", "", _clean(kind.summary), "",
             "| setting | given as | valid | default | what |", "| --- | --- | --- | --- | --- |"]
    for name, (field, meta) in declarations(kind.config).items():
        given = f"`{spelled(name, meta)}`" if meta["flag"] else f"`{setting(name, '…')}`"
        lines.append(f"| `{name}` | {given} | {_clean(describe_range(meta))} | `{field.default}` | {_clean(meta['help'])} |")
    return lines + [""]


def markdown(app: typer.Typer, kinds: list | None = None) -> str:
    """Every command and sub-command with its options, types, defaults and help, then each run kind's
    declared settings (`kinds`: the registry's kinds, handed over by the caller), as Markdown."""
    lines = _section(typer.main.get_command(app), "sgtool", 2)
    if kinds:
        lines += ["## What each kind of run takes", ""]
        for kind in kinds:
            lines += _kind_section(kind)
    return "\n".join(lines).rstrip() + "\n"


def fill(page: str, app: typer.Typer, kinds: list | None = None) -> str:
    """The page with its marker replaced by the generated reference."""
    return page.replace(MARKER, markdown(app, kinds))
