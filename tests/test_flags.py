"""Every flag a message names is spelled by `sgtool.flags` from a name the app declares.

Read from the source with `ast`: no string below the CLI spells a flag by hand; every `flag("x")` names an
option some command of the Typer app has; every `setting("x")` / `how_to_set(cls, "x", ...)` names a setting
a config declares. Then at run time: the hints of out-of-range values name real flags.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import typer

import sgtool
from sgtool.cli import loaded_app
from sgtool.config import check_options, declarations, how_to_set
from sgtool.data.formats import dataset_formats
from sgtool.engine.kinds import all_kinds
from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting

ROOT = Path(sgtool.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
FOREIGN = {"--index-url"}  # pip's, in vision.py's install hint
SPELLERS = {"flag", "setting", "how_to_set"}


def app_flags() -> set[str]:
    """Every long option of every command of the app, `train`'s kind flags and `prepare`'s formats included."""
    found: set[str] = {"--help"}  # Click's own, on every command

    def walk(command) -> None:
        for param in command.params:
            found.update(name for name in (*param.opts, *param.secondary_opts) if name.startswith("--"))
        for child in getattr(command, "commands", {}).values():
            walk(child)

    walk(typer.main.get_command(loaded_app()))
    return found


def declared_settings() -> dict[str, list[dict | None]]:
    """{field name: its declaration in each config that has it (None: a plain field)} over every run kind's
    config and every dataset format's options."""
    settings: dict[str, list[dict | None]] = {}
    for cls in [kind.config for kind in all_kinds()] + [fmt.options for fmt in dataset_formats()]:
        declared = declarations(cls)
        for field in dataclasses.fields(cls):
            settings.setdefault(field.name, []).append(declared[field.name][1] if field.name in declared else None)
    return settings


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, kinds) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def hand_spelled(source: str) -> list[str]:
    """Flags written out in the code's strings (docstrings and an option's own `spelling=` declaration aside)."""
    tree = ast.parse(source)
    skip = _docstrings(tree) | {id(node.value) for node in ast.walk(tree)
                                if isinstance(node, ast.keyword) and node.arg == "spelling"}
    return [name for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip for name in FLAG.findall(node.value) if name not in FOREIGN]


def spelled_names(source: str) -> list[tuple[str, str]]:
    """(speller, literal name) of every `flag("x")`, `setting("x", ...)` and `how_to_set(cls, "x", ...)` call."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        speller = getattr(node.func, "id", None) or getattr(node.func, "attr", None)  # flag(...) or flags.flag(...)
        if speller in SPELLERS and node.args:
            arg = node.args[1 if speller == "how_to_set" else 0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((speller, arg.value))
    return found


def sources(include_cli: bool) -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in sorted(ROOT.rglob("*.py"))
            if include_cli or path.name != "cli.py"}


def test_the_scanners_see_what_they_look_for():
    code = 'def f():\n    """--doc is prose."""\n    return "Use --t-end 1.5.", flag("t_end"), setting("ode", 1)\n'
    assert hand_spelled(code) == ["--t-end"]
    assert spelled_names(code) == [("flag", "t_end"), ("setting", "ode")]
    assert spelled_names('how_to_set(Config, "atol", 0.01)') == [("how_to_set", "atol")]
    assert spelled_names('flags.setting("lr")') == [("setting", "lr")]
    assert flag("t_end") == "--t-end" and setting("ode", "none") == "--set ode=none"


def test_no_flag_is_spelled_by_hand_below_the_cli():
    written = {path: names for path, text in sources(include_cli=False).items() if (names := hand_spelled(text))}
    assert written == {}, "spell these with sgtool.flags.flag / setting"


def test_every_flag_a_hint_names_is_an_option_of_the_app():
    options = app_flags()
    assert {"--head", "--t-end", "--set", "--images", "--dump-graphs"} <= options  # the walk reaches every command
    named = {(path, flag(name)) for path, text in sources(include_cli=True).items()
             for speller, name in spelled_names(text) if speller == "flag"}
    assert len(named) > 50
    assert {(path, spelled) for path, spelled in named if spelled not in options} == set()


def test_every_setting_a_hint_names_is_declared():
    declared = declared_settings()
    named = {(path, speller, name) for path, text in sources(include_cli=True).items()
             for speller, name in spelled_names(text) if speller != "flag"}
    assert len(named) > 10
    assert {entry for entry in named if entry[2] not in declared} == set()
    # `--set x=` is the hint for a setting that is not a flag somewhere it is declared
    as_flag_only = {entry for entry in named if entry[1] == "setting"
                    and all(meta is not None and meta["flag"] for meta in declared[entry[2]])}
    assert as_flag_only == set()


def test_how_to_set_follows_the_declaration():
    from sgtool.heads.nodis import NodisConfig
    from sgtool.heads.reldn import ReldnConfig

    assert how_to_set(NodisConfig, "t_end", 1.5) == "--t-end 1.5"
    assert how_to_set(NodisConfig, "atol", 0.01) == "--set atol=0.01"
    assert how_to_set(ReldnConfig, "lambdas", "[1,0.5,0.1]") == "--set lambdas=[1,0.5,0.1]"  # a plain field
    with pytest.raises(KeyError):
        how_to_set(NodisConfig, "no_such_setting", 1)


def _out_of_range(meta: dict, value: object) -> object | None:
    if meta["choices"]:
        return "no-such-choice"
    if meta["min"] is not None:
        return meta["min"] - 1
    if meta["max"] is not None:
        return meta["max"] + 1
    return None


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda kind: kind.name)
def test_out_of_range_hints_name_real_flags(kind):
    """Each declared range of each kind, broken in turn: the sentence's flags are the app's."""
    options, checked = app_flags(), 0
    for name, (field, meta) in declarations(kind.config).items():
        bad = _out_of_range(meta, getattr(kind.config(), name))
        if bad is None:
            continue
        config = kind.config()
        setattr(config, name, bad)
        with pytest.raises(SgtoolError) as caught:
            check_options(config)
        said = f"{caught.value.message} {caught.value.hint}"
        assert set(FLAG.findall(said)) <= options, said
        assert (flag(name) if meta["flag"] else setting(name)) in said
        checked += 1
    assert checked > 0


def test_every_how_to_set_in_the_code_resolves():
    """`how_to_set(Config, "x", ...)`: Config, looked up in the module that calls it, has a field x."""
    import importlib

    checked = 0
    for path, text in sources(include_cli=False).items():
        if "how_to_set(" not in text or path == "config.py":
            continue
        module = importlib.import_module("sgtool." + path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "how_to_set":
                name = node.args[1].value
                said = how_to_set(getattr(module, node.args[0].id), name, 1)  # KeyError: no such field
                assert said in (setting(name, 1), f"{flag(name)} 1"), said
                checked += 1
    assert checked >= 10
