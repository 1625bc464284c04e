"""Shell completion scripts (bash, zsh, fish), made from the Typer app when asked for.

`sgtool completions SHELL` prints one, so a new command, head or flag is completed as soon as it is
installed: nothing generated is kept in the repository.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import typer

HEADER = "# Made by `sgtool completions` from this installation's command-line app; run it again after an upgrade.\n"


@dataclass
class OptionSpec:
    long: list[str]
    short: list[str]
    takes_value: bool
    choices: list[str]
    is_path: bool
    help: str


@dataclass
class CommandSpec:
    path: str  # "sgtool prepare synth"
    help: str
    options: list[OptionSpec]
    subcommands: dict[str, str] = field(default_factory=dict)  # name -> help


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].replace('"', "'") if (text or "").strip() else ""


def _bare_annotation(annotation):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 else annotation


def _option(param) -> OptionSpec | None:
    names = list(param.opts) + list(getattr(param, "secondary_opts", []))
    if not any(n.startswith("-") for n in names):
        return None
    annotation = _bare_annotation(getattr(getattr(param, "type_descriptor", None), "annotation", None))
    choices = [str(m.value) for m in annotation] if isinstance(annotation, type) and issubclass(annotation, Enum) else []
    return OptionSpec(
        long=[n[2:] for n in names if n.startswith("--")], short=[n[1:] for n in names if len(n) == 2],
        takes_value=not getattr(param, "is_flag", False), choices=choices,
        is_path=annotation is Path, help=_first_line(getattr(param, "help", "")),
    )


def command_specs(app: typer.Typer) -> list[CommandSpec]:
    """Every command path with its options, walking the app's command tree (hidden commands left out)."""
    root = typer.main.get_command(app)
    specs: list[CommandSpec] = []

    def walk(command, path: str) -> None:
        options = [o for o in (_option(p) for p in command.params) if o is not None]
        options.append(OptionSpec(["help"], [], False, [], False, "Show help and exit."))
        children = dict(sorted((n, c) for n, c in getattr(command, "commands", {}).items() if not c.hidden))
        specs.append(CommandSpec(path, _first_line(command.help), options,
                                 {name: _first_line(child.help) for name, child in children.items()}))
        for name, child in children.items():
            walk(child, f"{path} {name}")

    walk(root, "sgtool")
    return specs


def _words(option: OptionSpec) -> list[str]:
    return [f"--{n}" for n in option.long] + [f"-{n}" for n in option.short]


def bash_script(specs: list[CommandSpec]) -> str:
    root = specs[0]
    known_paths = "|".join(f'"{s.path}"' for s in specs[1:])
    global_words = [w for o in root.options for w in _words(o)]
    lines = [HEADER, "_sgtool() {", "    local cur prev path candidate i", "    COMPREPLY=()",
             '    cur="${COMP_WORDS[COMP_CWORD]}"', '    prev="${COMP_WORDS[COMP_CWORD-1]}"', '    path="sgtool"',
             "    for ((i=1; i<COMP_CWORD; i++)); do", '        candidate="$path ${COMP_WORDS[i]}"',
             '        case "$candidate" in', f'            {known_paths}) path="$candidate";;',
             "        esac", "    done", '    case "$prev" in']
    seen = set()
    for spec in specs:
        for option in spec.options:
            for word in _words(option):
                if word in seen or not option.takes_value:
                    continue
                seen.add(word)
                if option.choices:
                    lines.append(f'        {word}) COMPREPLY=($(compgen -W "{" ".join(option.choices)}" -- "$cur")); return;;')
                elif option.is_path:
                    lines.append(f'        {word}) COMPREPLY=($(compgen -f -- "$cur")); return;;')
                else:
                    lines.append(f"        {word}) return;;")
    lines += ["    esac", '    case "$path" in']
    for spec in specs:
        words = list(spec.subcommands) + [w for o in spec.options for w in _words(o)]
        words += [w for w in global_words if w not in words]
        lines.append(f'        "{spec.path}") COMPREPLY=($(compgen -W "{" ".join(words)}" -- "$cur"));;')
    lines += ["    esac", '    if [[ ${#COMPREPLY[@]} -eq 0 ]]; then COMPREPLY=($(compgen -f -- "$cur")); fi', "}",
              "complete -F _sgtool sgtool", ""]
    return "\n".join(lines)


def zsh_script(specs: list[CommandSpec]) -> str:
    body = bash_script(specs).replace(HEADER, "")
    return (f"#compdef sgtool\n{HEADER}# zsh runs the bash completion through bashcompinit.\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + body)


def fish_script(specs: list[CommandSpec]) -> str:
    paths = " ".join(f"'{s.path}'" for s in specs[1:])
    lines = [HEADER.rstrip("\n"), "function __sgtool_path", "    set -l path sgtool",
             "    for token in (commandline -opc)[2..-1]", f"        if contains -- \"$path $token\" {paths}",
             '            set path "$path $token"', "        end", "    end", "    echo $path", "end",
             "complete -c sgtool -f"]
    for spec in specs:
        condition = f"-n 'test (__sgtool_path) = \"{spec.path}\"' "
        for name, help_text in spec.subcommands.items():
            lines.append(f'complete -c sgtool {condition}-a {name} -d "{help_text}"')
        for option in spec.options:
            scope = "" if spec.path == "sgtool" else condition  # global options work after any command
            flags = " ".join([f"-l {n}" for n in option.long] + [f"-s {n}" for n in option.short])
            value = (f'-x -a "{" ".join(option.choices)}" ' if option.choices
                     else "-r -F " if option.is_path else "-x " if option.takes_value else "")
            lines.append(f'complete -c sgtool {scope}{flags} {value}-d "{option.help}"')
    return "\n".join(lines) + "\n"


SCRIPTS = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def script(app: typer.Typer, shell: str) -> str:
    """The completion script of `shell` for `app` (the CLI hands it over: this module does not import the CLI)."""
    return SCRIPTS[shell](command_specs(app))
