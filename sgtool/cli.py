"""The sgtool command line: each command parses its options and calls one stage function."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sgtool import __version__, ui
from sgtool.errors import EXIT_USER_ERROR, SgtoolError
from sgtool.workspace import DEFAULT_WORKSPACE, Workspace

app = typer.Typer(
    name="sgtool", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Scene graph generation: prepare datasets, train relation heads, evaluate, draw.",
)
prepare_app = typer.Typer(no_args_is_help=True, help="Prepare a dataset into the workspace (with its priors).")
app.add_typer(prepare_app, name="prepare")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class Settings:
    """Global options, shared by every command."""

    workspace: Workspace
    device: str
    seed: int
    quiet: bool
    json: bool

    @property
    def reporter(self) -> ui.Reporter:
        return ui.Reporter(quiet=self.quiet or self.json)


def _show_version(value: bool) -> None:
    if value:
        print(f"sgtool {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="SGTOOL_WORKSPACE",
                                            help="Workspace folder holding datasets, runs and reports.")] = Path(DEFAULT_WORKSPACE),
    device: Annotated[Device, typer.Option(help="Where models run.")] = Device.auto,
    seed: Annotated[int, typer.Option(help="Seed for everything random.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON results.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_show_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    ctx.obj = Settings(Workspace(workspace), device.value, seed, quiet, json_output)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


# ---------------------------------------------------------------- info

@app.command()
def info(ctx: typer.Context) -> None:
    """What the workspace holds: datasets (images / objects / relations per split), runs, reports."""
    from sgtool.engine.info import show_workspace

    s = _settings(ctx)
    show_workspace(s.workspace, as_json=s.json)


# ---------------------------------------------------------------- prepare

@prepare_app.command("synth")
def prepare_synth(
    ctx: typer.Context,
    images: Annotated[int, typer.Option(help="Number of images to render.")] = 2000,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    name: Annotated[str, typer.Option(help="Dataset name in the workspace.")] = "synth",
    workers: Annotated[int, typer.Option(help="Processes that render images (0 = one per CPU core).")] = 0,
    force: Annotated[bool, typer.Option(help="Replace a dataset of this name prepared with other parameters.")] = False,
) -> None:
    """The embedded synthetic scene-graph dataset: shapes, colours, drawn links; nothing downloaded."""
    from sgtool.data.synth import prepare_synth as stage
    from sgtool.engine.info import show_prepared

    s = _settings(ctx)
    prepared = stage(s.workspace, images=images, size=size, seed=s.seed, name=name,
                     workers=workers, force=force, reporter=s.reporter)
    show_prepared(prepared, as_json=s.json)


# ---------------------------------------------------------------- demo

@app.command()
def demo(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="A smaller, faster run (about a minute).")] = False,
) -> None:
    """The whole pipeline on embedded synthetic data, ending with a summary."""
    from sgtool.engine.demo import run_demo

    s = _settings(ctx)
    run_demo(s.workspace, quick=quick, seed=s.seed, device=s.device, reporter=s.reporter, as_json=s.json)


# ---------------------------------------------------------------- entry point

def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options written after the command (`sgtool info --json`) in front of it."""
    root = typer.main.get_command(app)
    takes_value = {name: not param.is_flag for param in root.params for name in param.opts}
    hoisted, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in takes_value and name != "--version":
            needs_value = takes_value[name] and "=" not in arg
            hoisted.extend(argv[i:i + 1 + needs_value])
            i += 1 + needs_value
            continue
        rest.append(arg)
        i += 1
    return hoisted + rest


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one sentence and exit code 2, never a traceback."""
    argv = hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    try:
        app(args=argv, prog_name="sgtool")
    except SgtoolError as exc:
        ui.print_error(exc.message, exc.hint)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        ui.print_error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}.",
                       "Check the path, its permissions and the free disk space.")
        sys.exit(EXIT_USER_ERROR)
