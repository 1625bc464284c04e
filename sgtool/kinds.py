"""The registry of run kinds: everything sgtool trains registers here, where it is defined.

A relation head becomes a kind when `@register_head` decorates it (sgtool/heads/__init__.py), the
auto-encoder in sgtool/autoencoder/kind.py, the detector in sgtool/detect/kind.py, a plug-in or a test in
its own module. A kind names its config dataclass (fields declared with `sgtool.config.option`) and its
entry points; an entry point is a callable or an `EntryPoint("module:function")` imported on first call,
so a low module can name a stage above it without importing it. engine/kinds.py adds what the CLI needs
(lookup with the built-in kinds loaded, flags, help); this module imports only sgtool.registry.

    train(ws, request) -> result         show_train(result, as_json)
    resume(ws, run, request) -> result   retask(ws, run, request) -> result  (None: not supported)
    evaluate(ws, run, split, passed, options) -> outcome   show_eval(outcome, as_json)
    predict(ws, images, *, run, pixels, reporter, **options) -> result  (None: `sgtool predict` refuses it)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sgtool.flags import flag
from sgtool.registry import Registry

RELATION_FLAGS = (flag("dataset"), flag("task"), flag("detector"), flag("name"), flag("config"), flag("set"), flag("cache_features"))


@dataclass(frozen=True)
class EntryPoint:
    """A function named "package.module:function", imported when first called."""

    target: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


@dataclass(frozen=True)
class RunKind:
    name: str
    config: type  # the config dataclass
    summary: str  # one line for `sgtool train --help`
    train: Callable[..., Any]
    show_train: Callable[[Any, bool], None]
    evaluate: Callable[..., Any]
    show_eval: Callable[[Any, bool], None]
    resume: Callable[..., Any] | None = None
    retask: Callable[..., Any] | None = None
    predict: Callable[..., Any] | None = None  # `sgtool predict` on the user's images
    command: str = "train"  # the command that trains it (its flags are that command's)
    run_flags: tuple[str, ...] = (flag("dataset"), flag("name"), flag("config"), flag("set"))  # run-level flags it takes
    labels_objects: bool = False  # in SGCls / SGDet it returns its own object labels


KINDS: Registry[RunKind] = Registry("run kinds")
register_kind = KINDS.register
unregister_kind = KINDS.unregister
registered_kind = KINDS.get
registered_kinds = KINDS.all
