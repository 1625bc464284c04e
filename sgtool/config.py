"""Typed configuration: dataclasses filled from a YAML file plus `--set key=value` overrides."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting

T = TypeVar("T")


# ---------------------------------------------------------------- declared options

def option(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
           max: float | None = None, flag: bool = True, spelling: str | None = None, required: bool = False) -> Any:
    """A config field that declares itself: its help, its valid range or choices, and whether it is a
    command-line flag (`--name-with-dashes`, or `spelling` such as "--filter-empty/--keep-empty"; otherwise
    only `--set name=value`), and whether the command needs it (`required`). `check_options` validates a
    config against these declarations; the CLI and completions are built from them."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max, "flag": flag,
            "spelling": spelling, "required": required}
    return dataclasses.field(default=default, metadata={"sgtool": meta})


def declared(field: dataclasses.Field) -> dict | None:
    """The `option(...)` declaration of a dataclass field, or None for a plain field."""
    return field.metadata.get("sgtool")


def describe_range(meta: dict, prose: bool = False) -> str:
    """A declared option's valid values: 'one of a, b', '>= 1', '1 to 64' (help) or, with prose, 'at least 1',
    'from 1 to 64' (error messages); '' when it declares none."""
    if meta.get("choices"):
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"from {low} to {high}" if prose else f"{low} to {high}"
    if low is not None:
        return f"at least {low}" if prose else f">= {low}"
    if high is not None:
        return f"at most {high}" if prose else f"<= {high}"
    return ""


def declarations(cls: type) -> dict[str, tuple[dataclasses.Field, dict]]:
    """{field name: (field, declaration)} of every declared option of config class `cls`. A subclass that
    only changes a field's default keeps its base class's declaration (help, range, flag)."""
    found: dict[str, tuple[dataclasses.Field, dict]] = {}
    for field in dataclasses.fields(cls):
        meta = declared(field)
        for base in cls.__mro__[1:]:
            if meta is not None:
                break
            base_field = getattr(base, "__dataclass_fields__", {}).get(field.name)
            meta = declared(base_field) if base_field is not None else None
        if meta is not None:
            found[field.name] = (field, meta)
    return found


def spelled(name: str, meta: dict) -> str:
    """The flag of declared option `name`: its `spelling` (the first of a pair such as "--a/--no-a") or `flag`."""
    return (meta.get("spelling") or flag(name)).split("/")[0]


def given_as(name: str, meta: dict, value: Any) -> str:
    """How a user gives declared option `name` the value: '--t-end 1.5' for a flag, else '--set t_end=1.5'."""
    return f"{spelled(name, meta)} {value}" if meta["flag"] else setting(name, value)


def how_to_set(cls: type, name: str, value: Any) -> str:
    """`given_as` for the field `name` of config class `cls` (a plain field takes `--set`; KeyError for a name
    that is no field of it)."""
    if name not in {field.name for field in dataclasses.fields(cls)}:
        raise KeyError(name)
    declared = declarations(cls).get(name)
    return given_as(name, declared[1] if declared else {"flag": False}, value)


def check_options(config: Any) -> None:
    """One sentence (SgtoolError) for the first declared option whose value is out of its range."""
    for name, (field, meta) in declarations(type(config)).items():
        value = getattr(config, name)
        bad = (isinstance(value, float) and not math.isfinite(value)) or \
              (meta["choices"] is not None and value is not None and value not in meta["choices"]) or \
              (meta["min"] is not None and value is not None and value < meta["min"]) or \
              (meta["max"] is not None and value is not None and value > meta["max"])
        if bad:
            default = field.default if field.default is not dataclasses.MISSING else None
            what = spelled(name, meta) if meta["flag"] else f"The setting {name}"
            raise SgtoolError(f"{what} must be {describe_range(meta, prose=True)}, not {value!r}.", f"Use {given_as(name, meta, default)} (its default).")


# ---------------------------------------------------------------- YAML and overrides

MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    """--seed is a whole number from 0 to 2**32 - 1 (what every generator sgtool seeds accepts)."""
    if not 0 <= seed <= MAX_SEED:
        raise SgtoolError(f"{flag('seed')} must be a whole number from 0 to {MAX_SEED:,}, not {seed}.", f"Use e.g. {flag('seed')} 0.")
    return seed


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """'line 3, column 7: mapping values are not allowed here' from PyYAML's several-line message."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


def read_yaml(path: Path) -> dict:
    """A YAML file of settings (a regular file of at most 16 MB, no key twice, nested at most 100 deep)."""
    from sgtool.inputs import CONFIG_BYTES, parse_yaml, read_text

    path = Path(path)
    text = read_text(path, "The config file", CONFIG_BYTES, "Pass a YAML file of `key: value` lines.")
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise SgtoolError(f"{path} is not valid YAML ({_yaml_problem(exc)}).", "Fix the file's syntax there.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SgtoolError(f"{path} must hold a mapping of settings at the top level.", "Write it as `key: value` lines.")
    return data


def parse_overrides(pairs: list[str]) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars."""
    from sgtool.inputs import parse_yaml

    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SgtoolError(f"The override '{pair}' is not of the form key=value.", f"Example: {setting('lr', '0.001')}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SgtoolError(f"The override '{pair}' sets a part of '{part}', which was given a plain value.",
                                  f"Give either {part}=value or {part}.name=value, not both.")
        try:
            node[parts[-1]] = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SgtoolError(f"The value of the override '{pair}' is not valid YAML ({_yaml_problem(exc)}).",
                              f"Example: {setting('lr', '0.001')}") from exc
    return out


def merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, f"{where}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return [_coerce(v, item, where) for v in value]
    if kind is bool and not isinstance(value, bool):
        raise SgtoolError(f"The setting {where} must be true or false, not {value!r}.", "Use true or false.")
    if kind in (int, float, str) and not isinstance(value, bool):
        try:
            coerced = kind(value)
        except (TypeError, ValueError) as exc:
            raise SgtoolError(f"The setting {where} must be a {kind.__name__}, not {_shown(value)}.", "Fix the value.") from exc
        except OverflowError as exc:  # int(inf)
            raise SgtoolError(f"The setting {where} must be a finite whole number, not {value!r}.", "Fix the value.") from exc
        if kind is int and isinstance(value, float) and value != coerced:
            raise SgtoolError(f"The setting {where} must be a whole number, not {value!r}.", "Fix the value.")
        check_number(coerced, where)
        return coerced
    return value


MAX_INT = 2**63 - 1  # what numpy's int64 and torch's sizes hold


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def check_number(value: Any, where: str) -> None:
    """A float setting is finite and an int one fits in 64 bits (whatever its declared range); one sentence otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SgtoolError(f"The setting {where} must be a finite number, not {value!r}.", "Fix the value.")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise SgtoolError(f"The setting {where} must be a whole number of at most {MAX_INT:,}, not {_shown(value)}.",
                          "Fix the value.")


def build(cls: type[T], data: dict | None, where: str = "") -> T:
    """Construct dataclass `cls` from a nested dict, checking names and coercing types."""
    data = data or {}
    if not isinstance(data, dict):
        raise SgtoolError(f"The setting {where.rstrip('.') or cls.__name__} must be a mapping.", "Write it as `key: value` lines.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise SgtoolError(f"The key {_shown(odd[0])} {'in ' + where.rstrip('.') + ' ' if where else ''}is not a setting "
                          "name.", f"Known settings here: {', '.join(sorted(names))}.")
    unknown = sorted(set(data) - names)
    if unknown:
        raise SgtoolError(f"Unknown setting '{where + unknown[0]}'.", f"Known settings here: {', '.join(sorted(names))}.")
    values = {key: _coerce(value, hints[key], f"{where}{key}") for key, value in data.items()}
    return cls(**values)


def user_settings(path: Path | None, overrides: list[str] | None) -> dict:
    """What the user set: the --config YAML (if any), then the --set overrides on top."""
    return merge(read_yaml(path) if path else {}, parse_overrides(overrides or []))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without a GPU is a user error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SgtoolError(f"{flag('device')} cuda was asked for, but no CUDA GPU is available.", f"Use {flag('device')} cpu or auto.")
    if name not in ("cpu", "cuda"):
        raise SgtoolError(f"Unknown device '{name}'.", "Use auto, cpu or cuda.")
    return name

