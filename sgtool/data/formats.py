"""The registry of dataset formats: `sgtool prepare <format>` for each, built from what the format declares.

A format registers where its reader lives (data/synth.py, shapes.py, vg.py, vrd.py, custom.py, or a
plug-in's own module): a name, a one-line summary, an options dataclass whose fields are declared with
`sgtool.config.option` (they become the command's flags, with their help, ranges and choices, and are
checked before anything is written), and `prepare(ws, options, seed, reporter) -> PreparedDataset`.
The CLI builds the commands, their help and the completions from this registry alone.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sgtool.config import build, check_options
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.registry import Registry
from sgtool.ui import SILENT, Reporter

FORMAT_MODULES = ("sgtool.data.synth", "sgtool.data.shapes", "sgtool.data.vg", "sgtool.data.vrd", "sgtool.data.custom")


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    summary: str
    options: type  # a dataclass of option(...) fields
    prepare: Callable[..., Any]  # prepare(ws, options, seed, reporter) -> PreparedDataset


FORMATS: Registry[DatasetFormat] = Registry("dataset formats")
register_format = FORMATS.register
unregister_format = FORMATS.unregister


def dataset_formats() -> list[DatasetFormat]:
    """Every registered format, the built-in ones imported first, by name."""
    for module in FORMAT_MODULES:
        importlib.import_module(module)
    return FORMATS.all()


def get_format(name: str) -> DatasetFormat:
    fmt = FORMATS.get(name)
    if fmt is None:
        known = [f.name for f in dataset_formats()]
        fmt = FORMATS.get(name)
    if fmt is None:
        raise SgtoolError(f"Unknown dataset format '{name}' (known: {', '.join(known)}).", f"Run `sgtool prepare {flag('help')}`.")
    return fmt


def prepare_dataset(ws: Any, name: str, values: dict[str, Any], seed: int = 0, reporter: Reporter = SILENT) -> Any:
    """`sgtool prepare NAME`: the format's options from the given values (names, types and declared ranges
    checked before anything is written), then the format's reader."""
    fmt = get_format(name)
    options = build(fmt.options, {key: value for key, value in values.items() if value is not None})
    check_options(options)
    return fmt.prepare(ws, options, seed=seed, reporter=reporter)
