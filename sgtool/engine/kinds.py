"""Run kinds as the CLI and the stages see them: lookup with the built-in kinds loaded, `sgtool train`'s
flags and help. The registry itself is sgtool/kinds.py; each kind registers where it is defined (relation
heads by `@register_head`, the auto-encoder in autoencoder/kind.py, the detector in detect/kind.py), so
`sgtool train`, `--resume`, `--from`, `eval`, `predict` and `info` ask the registry what to call and no
stage dispatches on a kind's name.
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from typing import Any

from sgtool.config import build, check_options, declarations, describe_range
from sgtool.engine.record import TrainRequest, flag_name  # noqa: F401 (part of the registry's API)
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.kinds import RunKind, register_kind, registered_kind, registered_kinds  # noqa: F401 (re-exported)
from sgtool.workspace import Workspace

DEFAULT_KIND = "freq"
KIND_MODULES = ("sgtool.autoencoder.kind", "sgtool.detect.kind")  # built-in kinds other than the heads


def load_builtin_kinds() -> None:
    """Import every module that registers a built-in kind (each once: they import torch)."""
    from sgtool.heads import available_heads

    available_heads()
    for module in KIND_MODULES:
        importlib.import_module(module)


def get_kind(name: str) -> RunKind:
    """The kind registered as `name` (a relation head's module is imported by name first)."""
    from sgtool.heads import get_head

    if registered_kind(name) is None:
        try:
            get_head(name)
        except SgtoolError:
            load_builtin_kinds()
    kind = registered_kind(name)
    if kind is None:
        known = [k.name for k in registered_kinds() if k.command == "train"]
        raise SgtoolError(f"Unknown relation head '{name}' (known heads: {', '.join(known)}).",
                          f"Pass one of them to {flag('head')}.")
    return kind


def kind_names() -> list[str]:
    load_builtin_kinds()
    return [kind.name for kind in registered_kinds()]


def all_kinds() -> list[RunKind]:
    """Every kind, each module imported once."""
    load_builtin_kinds()
    return registered_kinds()


def kind_of_run(ws: Workspace, run: str) -> RunKind:
    """The kind a run folder was trained as (its config.yaml's `head`)."""
    from sgtool.engine.record import RunRecord

    folder = ws.require_run(run)
    if not (folder / "config.yaml").is_file():
        raise SgtoolError(f"The run '{run}' has no config.yaml, so sgtool cannot tell what it is.",
                          "Train it again; a killed first epoch leaves such a folder.")
    return get_kind(str(RunRecord.read(folder).head))


# ---------------------------------------------------------------- the options every kind declares

@dataclass
class FlagSpec:
    """One `sgtool train` flag built from the kinds' declarations."""

    field: str
    annotation: Any  # int, float, str or bool
    kinds: list[str]
    defaults: dict[str, Any]  # kind -> default
    helps: dict[str, str]  # kind -> help
    ranges: dict[str, str]  # kind -> range text

    def help_for(self, kind: str | None = None) -> str:
        kind = kind if kind in self.kinds else None
        name = kind or self.kinds[0]
        parts = [self.ranges[name]] if self.ranges[name] else []
        same_default = len({repr(v) for v in self.defaults.values()}) == 1
        if kind is not None or same_default:
            parts.append(f"default {self.defaults[name]}")
        tail = f" ({'; '.join(parts)})" if parts else ""
        owners = "" if kind is not None else f"{', '.join(self.kinds)}: " if len(self.kinds) < 3 else ""
        return f"{owners}{self.helps[name].rstrip('.')}{tail}."


def _plain_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args and typing.get_origin(annotation) is not list else annotation


def flag_specs(kinds: list[RunKind] | None = None, command: str = "train") -> dict[str, FlagSpec]:
    """{field: FlagSpec} of every `flag=True` option of the kinds trained by `command`."""
    specs: dict[str, FlagSpec] = {}
    for kind in (all_kinds() if kinds is None else kinds):
        if kind.command != command:
            continue
        hints = typing.get_type_hints(kind.config)
        for name, (fld, meta) in declarations(kind.config).items():
            if not meta["flag"]:
                continue
            spec = specs.setdefault(name, FlagSpec(name, _plain_type(hints[name]), [], {}, {}, {}))
            default = fld.default if fld.default is not dataclasses.MISSING else None
            spec.kinds.append(kind.name)
            spec.defaults[kind.name], spec.helps[kind.name] = default, meta["help"]
            spec.ranges[kind.name] = describe_range(meta)
    return specs


def kinds_overview() -> str:
    """The `sgtool train --help` lines naming every kind (and which label objects)."""
    lines, labelling = [], []
    for kind in all_kinds():
        if kind.command == "train":
            tag = " (labels objects in SGCls / SGDet)" if kind.labels_objects else ""
            lines.append(f"{kind.name}: {kind.summary}{tag}")
            labelling += [kind.name] if kind.labels_objects else []
    lines.append("Heads that give their own object labels in SGCls / SGDet: "
                 + (", ".join(labelling) if labelling else "none")
                 + "; the others keep the object source's labels (in PredCls every head keeps the GT labels).")
    return "\n\n".join(lines)


def refuse_foreign(kind: RunKind, request: TrainRequest) -> None:
    """One sentence for the first given flag that the kind does not take, or whose value is outside its declared
    range or choices (checked here for every kind, before its train stage writes anything)."""
    fields = set(kind.config.__dataclass_fields__)
    for key in request.given():
        if key not in fields:
            owners = [k.name for k in registered_kinds() if key in k.config.__dataclass_fields__]
            whose = f" (an option of the {', '.join(owners)} head{'s' if len(owners) > 1 else ''})" if owners else ""
            raise SgtoolError(f"The {kind.name} head does not take {flag_name(key)}{whose}.",
                              f"Its settings are: {', '.join(sorted(fields))}.")
    for passed in request.passed:
        if passed not in kind.run_flags:
            raise SgtoolError(f"The {kind.name} head does not take {passed}.",
                              f"It takes {', '.join(kind.run_flags)} and its own options; leave {passed} out.")
    check_options(build(kind.config, request.given()))
