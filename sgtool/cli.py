"""The sgtool command line: each command parses its options and calls one stage function."""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from sgtool import __version__, ui
from sgtool.errors import EXIT_USER_ERROR, SgtoolError
from sgtool.flags import flag
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
    from sgtool.config import check_seed

    if quiet or json_output:
        ui.silence_libraries()
    ctx.obj = Settings(Workspace(workspace), device.value, check_seed(seed), quiet, json_output)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


# ---------------------------------------------------------------- info

@app.command()
def info(
    ctx: typer.Context,
    verify: Annotated[bool, typer.Option("--verify", help="Also check every dataset file, images included, against the manifest's sha256.")] = False,
) -> None:
    """What the workspace holds: datasets (images / objects / relations per split, status), runs, reports."""
    from sgtool.engine.info import show_workspace

    s = _settings(ctx)
    show_workspace(s.workspace, as_json=s.json, verify=verify)


# ---------------------------------------------------------------- prepare

def _format_parameter(fmt_name: str, name: str, field: object, meta: dict, hint: object) -> inspect.Parameter:
    """One `sgtool prepare FORMAT` option from one declared field of the format's options dataclass."""
    import typing

    from sgtool.config import describe_range

    bare = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = bare[0] if typing.get_origin(hint) is not None and bare else hint
    if meta["choices"]:
        kind = Enum(f"{fmt_name}_{name}", {str(c): str(c) for c in meta["choices"]}, type=str)
    decls = (meta["spelling"] or flag(name),)
    shown = describe_range(meta) if not meta["choices"] else ""
    help_text = meta["help"] + (f" ({shown})" if shown else "")
    required = meta["required"]
    annotation = Annotated[kind if required or field.default is not None else Optional[kind],
                           typer.Option(*decls, help=help_text)]
    default = inspect.Parameter.empty if required else field.default
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


class _PrepareCallback:
    """`sgtool prepare FORMAT`'s function: its signature (hence its flags) comes from the format's declarations."""

    __module__ = __name__
    __annotations__: dict = {}

    def __init__(self, fmt: object) -> None:
        self.fmt = fmt
        self.__name__ = self.__qualname__ = f"prepare_{fmt.name}"
        self.__doc__ = fmt.summary

    @property
    def __signature__(self) -> inspect.Signature:
        import typing

        from sgtool.config import declarations

        hints = typing.get_type_hints(self.fmt.options)
        return inspect.Signature([
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
            *(_format_parameter(self.fmt.name, name, field, meta, hints[name])
              for name, (field, meta) in declarations(self.fmt.options).items())])

    def __call__(self, ctx: typer.Context, **values: object) -> None:
        from sgtool.data.formats import prepare_dataset
        from sgtool.engine.info import show_prepared

        s = _settings(ctx)
        values = {key: getattr(value, "value", value) for key, value in values.items()}  # choices arrive as enums
        prepared = prepare_dataset(s.workspace, self.fmt.name, values, seed=s.seed, reporter=s.reporter)
        show_prepared(prepared, as_json=s.json)


def add_prepare_commands() -> None:
    """`sgtool prepare FORMAT` for every registered dataset format not yet a command (sgtool/data/formats.py)."""
    from sgtool.data.formats import dataset_formats

    present = {info.name for info in prepare_app.registered_commands}
    for fmt in dataset_formats():
        if fmt.name not in present:
            prepare_app.command(fmt.name, help=fmt.summary)(_PrepareCallback(fmt))


add_prepare_commands()


# ---------------------------------------------------------------- train / eval / draw

class EmptyImages(str, Enum):
    zero = "zero"
    skip = "skip"


class PredictionFormat(str, Enum):
    sgb = "sgb"
    sgbench = "sgbench"
    sgtool = "sgtool"
    json = "json"


class Task(str, Enum):
    predcls = "predcls"
    sgcls = "sgcls"
    sgdet = "sgdet"


TRAIN_HELP = """Train a relation head (or the ae auto-encoder) on a prepared dataset; writes a run with predictions and val metrics.

Each kind's own options are flags below (`sgtool train --head NAME --help` lists only that kind's, with ranges and defaults); every other setting takes `--set name=value`."""


def _train_parameters() -> list[inspect.Parameter]:
    """The run-level options of `sgtool train`; the kinds' own options follow them (engine/kinds.py)."""
    def option(name: str, annotation: object, default: object = None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)

    return [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        option("head", Annotated[Optional[str], typer.Option(help="What to train: a relation head (freq, reldn, tensor, nodis, iwsl, ...) or ae; default freq.")]),
        option("dataset", Annotated[Optional[str], typer.Option(help="Prepared dataset (default: the latest).")]),
        option("task", Annotated[Task, typer.Option(help="predcls: GT boxes and labels; sgcls: GT boxes; sgdet: detections.")], Task.predcls),
        option("detector", Annotated[Optional[str], typer.Option(help="sgcls / sgdet: detector run giving the objects (default: the latest).")]),
        option("name", Annotated[Optional[str], typer.Option(help="Run name (default: <head>-<dataset>-<task>, made unique).")]),
        option("config", Annotated[Optional[Path], typer.Option(help="YAML file of head settings.")]),
        option("set_", Annotated[Optional[list[str]], typer.Option("--set", help="Override one setting: key=value (repeatable).")]),
        option("resume", Annotated[Optional[str], typer.Option(help="Continue this unfinished run from its last checkpoint, with its own settings.")]),
        option("from_run", Annotated[Optional[str], typer.Option("--from", help="Score this trained run's weights in --task (e.g. a PredCls run in sgdet) as a new run, without training.")]),
        option("cache_features", Annotated[bool, typer.Option("--cache-features", help="features=visual: compute each split's detector ROI features once into h5 (kept in the detector run) instead of every epoch.")], False),
    ]


def _kind_parameters() -> list[inspect.Parameter]:
    """One flag per `option(..., flag=True)` that a kind trained by `sgtool train` declares."""
    from sgtool.engine.kinds import flag_specs, registered_kinds

    params = []
    for name, spec in flag_specs(registered_kinds()).items():
        dash = flag(name)
        decls = (f"{dash}/{flag('no_' + name)}",) if spec.annotation is bool else (dash,)
        annotation = Annotated[Optional[spec.annotation], typer.Option(*decls, help=spec.help_for())]
        params.append(inspect.Parameter(f"kind_{name}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None))
    return params


class _TrainCallback:
    """`sgtool train`'s function: its signature (hence its flags) is built from the registry of run kinds."""

    __name__ = __qualname__ = "train"
    __module__ = __name__
    __annotations__: dict = {}

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.Signature([*_train_parameters(), *_kind_parameters()])

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        from sgtool.engine.kinds import kinds_overview

        return TRAIN_HELP + ("\n\n" + kinds_overview() if "sgtool.heads" in sys.modules else "")

    def __call__(self, ctx: typer.Context, **values: object) -> None:
        from sgtool.engine.record import TrainRequest
        from sgtool.engine.commands import run_training

        s = _settings(ctx)
        options = {key[len("kind_"):]: value for key, value in values.items() if key.startswith("kind_")}
        task = values["task"]
        given = {flag("task"): task != Task.predcls, flag("detector"): values["detector"], flag("name"): values["name"],
                 flag("config"): values["config"], flag("set"): values["set_"], flag("cache_features"): values["cache_features"]}
        request = TrainRequest(kind=values["head"], dataset=values["dataset"], task=task.value, name=values["name"],
                               detector=values["detector"], config_path=values["config"],
                               overrides=list(values["set_"] or []), options=options, passed=_passed(given),
                               seed=s.seed, device=s.device, cache_features=bool(values["cache_features"]),
                               reporter=s.reporter)
        result, kind = run_training(s.workspace, request, resume=values["resume"], from_run=values["from_run"])
        kind.show_train(result, s.json)


class TrainCommand(TyperCommand):
    """`sgtool train --head NAME --help` shows the run-level options and NAME's own, with NAME's defaults."""

    help_kind: str | None = None

    def parse_args(self, ctx, args):  # noqa: ANN001 (click's signature)
        self.help_kind = _head_in(args) if any(a in ("--help", "-h") for a in args) else None
        return super().parse_args(ctx, args)

    def get_help(self, ctx) -> str:  # noqa: ANN001
        if self.help_kind is None:
            return super().get_help(ctx)
        from sgtool.engine.kinds import flag_specs, get_kind

        kind = get_kind(self.help_kind)
        specs = flag_specs([kind])
        kept_epilog, self.epilog = self.epilog, _other_settings(kind)
        kept, self.params = self.params, [p for p in self.params
                                          if not (p.name or "").startswith("kind_") or p.name[5:] in specs]
        for param in self.params:
            if (param.name or "").startswith("kind_"):
                param.help = specs[param.name[5:]].help_for(kind.name)
        try:
            return super().get_help(ctx)
        finally:
            self.params, self.epilog = kept, kept_epilog


def _other_settings(kind: object) -> str:
    """The kind's settings that take `--set name=value`, with their ranges and defaults."""
    from sgtool.config import declarations, describe_range

    parts = []
    for name, (field, meta) in declarations(kind.config).items():
        if not meta["flag"]:
            shown = "; ".join(x for x in (describe_range(meta), f"default {field.default}") if x)
            parts.append(f"{name} ({shown})")
    labels = " It labels objects in SGCls / SGDet." if getattr(kind, "labels_objects", False) else ""
    return f"{kind.name}: {kind.summary}{labels} Other settings ({flag('set')} name=value): {', '.join(parts)}."


def _head_in(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--head" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--head="):
            return arg.split("=", 1)[1]
    return None


app.command("train", cls=TrainCommand, help=None)(_TrainCallback())


def _passed(options: dict[str, object]) -> tuple[str, ...]:
    """The flags among `options` that the user gave (None, False and [] mean left out)."""
    return tuple(flag for flag, value in options.items() if value is not None and value is not False and value != [])


@app.command("train-detector")
def train_detector(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option(help="Prepared dataset with images (default: the latest).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="tiny (CPU default, 128-px images), mobilenet-v3-fpn or resnet50-fpn.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 12).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per batch (default 8).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak AdamW learning rate (default 0.002).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file to start from (a state dict or a detector checkpoint); nothing is downloaded.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue this detector run from its last epoch's checkpoint.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: detector-<arch>-<dataset>, made unique).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop training after this many minutes (the lr schedule follows it).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine).")] = None,
) -> None:
    """Train a Faster R-CNN object detector (for SGCls / SGDet) and report COCO mAP on the test split."""
    from sgtool.engine.commands import TrainRequest, run_detector_training

    s = _settings(ctx)
    options = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weights": weights,
               "time_budget": time_budget, "threads": threads}
    request = TrainRequest(kind="detector", dataset=dataset, name=name, options=options, seed=s.seed, device=s.device,
                           reporter=s.reporter)
    result, kind = run_detector_training(s.workspace, request, resume)
    kind.show_train(result, s.json)


@app.command("eval")
def eval_(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option(help="Run to evaluate (default: the latest).")] = None,
    split: Annotated[str, typer.Option(help="Split whose predictions are evaluated: test or val.")] = "test",
    task: Annotated[Optional[Task], typer.Option(help="Task (default: the one the predictions were made for).")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(help="Print only this metric, e.g. mR@100 (repeatable).")] = None,
    k: Annotated[Optional[str], typer.Option("--k", help="Comma-separated K values for the top-K metrics (default 20,50,100).")] = None,
    dump_graphs: Annotated[int, typer.Option(help="Write graph.json files (GT and prediction) for N images.")] = 0,
    empty_images: Annotated[EmptyImages, typer.Option(help="An image with GT relations and no candidate pair: zero counts it as 0, skip leaves it out (SGB-identical).")] = EmptyImages.zero,
    predictions: Annotated[Optional[Path], typer.Option(help="Score this predictions file of any code base instead of a run (see docs/evaluate-your-predictions.md).")] = None,
    format_: Annotated[Optional[PredictionFormat], typer.Option("--format", help="Format of --predictions (default: guessed from the file).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="With --predictions: the prepared dataset holding the ground truth (default: the file's own).")] = None,
) -> None:
    """Evaluate a run's predictions (or any code base's, --predictions) with the community's metrics."""
    from sgtool.engine.commands import eval_run, show_evaluation
    from sgtool.eval.run_eval import parse_ks

    s = _settings(ctx)
    empty = empty_images.value
    passed = _passed({flag("task"): task, flag("metric"): metric, flag("k"): k, flag("dump_graphs"): dump_graphs or None,
                      flag("empty_images"): None if empty == "zero" else empty})
    outcome, kind = eval_run(s.workspace, run=run, split=split, passed=passed,
                             external={"predictions": predictions, "fmt": format_.value if format_ else None,
                                       "dataset": dataset},
                             task=task.value if task else None, metrics=metric or [], ks=parse_ks(k),
                             dump_graphs=dump_graphs, reporter=s.reporter, empty_images=empty)
    show_evaluation(outcome, kind, as_json=s.json)


@app.command()
def draw(
    ctx: typer.Context,
    graph: Annotated[Path, typer.Argument(help="A graph.json file.")],
    out: Annotated[Optional[Path], typer.Option(help="Output .png or .svg (default: beside the graph, .png).")] = None,
    top: Annotated[Optional[int], typer.Option(help="Draw the N highest-scoring relations (default 100, at most 2000); the picture says how many were left out.")] = None,
) -> None:
    """Draw a scene graph: the image with its boxes, and the graph beside it."""
    from sgtool.viz.draw import draw_graph, show_drawing

    s = _settings(ctx)
    show_drawing(draw_graph(graph, out=out, top=top, reporter=s.reporter), as_json=s.json)


@app.command()
def predict(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG images, any size.")],
    run: Annotated[Optional[str], typer.Option(help="Relation-head run (default: the latest).")] = None,
    detector: Annotated[Optional[str], typer.Option(help="Detector run (default: the head run's, else the latest).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the <image name>.graph.json files (default: the current folder; images sharing a name get -2, -3, ...; not inside the workspace's data/, priors/, runs/ or reports/).")] = None,
    top: Annotated[int, typer.Option(help="Relations kept per image, best first.")] = 20,
) -> None:
    """Detector + relation head on your own images: one graph.json per image (draw it with `sgtool draw`)."""
    from sgtool.engine.commands import predict_run
    from sgtool.engine.predict import show_predicted

    s = _settings(ctx)
    show_predicted(predict_run(s.workspace, images, run=run, detector_run=detector, out=out, top=top,
                                  device=s.device, reporter=s.reporter), as_json=s.json)


# ---------------------------------------------------------------- view

@app.command()
def view(
    ctx: typer.Context,
    run: Annotated[Optional[list[str]], typer.Option(help="Run to show (repeatable; default: every run with predictions for the split, on the latest run's dataset).")] = None,
    split: Annotated[str, typer.Option(help="Split whose images and predictions are shown: test or val.")] = "test",
    out: Annotated[Optional[Path], typer.Option(help="Folder of the site (default: <workspace>/views/<split>); an earlier view there is replaced.")] = None,
    top: Annotated[int, typer.Option(help="Predictions shown (and hits counted) per image and run: the K of R@K.")] = 20,
    serve: Annotated[bool, typer.Option("--serve", help="Then serve the site on 127.0.0.1 with Python's http.server (Ctrl-C stops).")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve (0: any free one).")] = 0,
) -> None:
    """Write a static site comparing runs: overview, gallery, image pages (opens from disk)."""
    from sgtool.viz.view import build_view, serve_view, show_view

    s = _settings(ctx)
    outcome = build_view(s.workspace, runs=run, split=split, out=out, top=top, reporter=s.reporter)
    show_view(outcome, as_json=s.json)
    if serve:
        serve_view(outcome.path, port)


# ---------------------------------------------------------------- demo

@app.command()
def demo(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="A smaller, faster run on less data (every kind still runs).")] = False,
) -> None:
    """The whole pipeline on embedded synthetic data, ending with a summary."""
    from sgtool.engine.demo import run_demo

    s = _settings(ctx)
    run_demo(s.workspace, quick=quick, seed=s.seed, device=s.device, reporter=s.reporter, as_json=s.json)


# ---------------------------------------------------------------- entry point

class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completions")
def completions(shell: Annotated[Shell, typer.Argument(help="The shell to complete in.")]) -> None:
    """Print a shell completion script made from this installation's commands and every kind's flags,
    e.g. `sgtool completions bash > ~/.local/share/bash-completion/completions/sgtool`."""
    from sgtool.completions import script

    sys.stdout.write(script(loaded_app(), shell.value))


def _command_of(argv: list[str]) -> str | None:
    """The command word of hoisted argv (global options and their values come first)."""
    root = typer.main.get_command(app)
    takes_value = {name for param in root.params if not param.is_flag for name in param.opts}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 + (argv[i] in takes_value)
    return argv[i] if i < len(argv) else None


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


def loaded_app() -> typer.Typer:
    """The app with every run kind and dataset format registered, so that `train` has every kind's flags and
    `prepare` every format (completions, the CLI reference, `train`)."""
    from sgtool.engine.kinds import all_kinds

    all_kinds()
    add_prepare_commands()
    return app


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one sentence and exit code 2, never a traceback."""
    argv = hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    try:
        add_prepare_commands()  # formats registered since this module was imported (a plug-in, a test)
        if _command_of(argv) == "train":  # `train`'s flags come from every kind (importing the heads: torch)
            loaded_app()
        app(args=argv, prog_name="sgtool")
    except SgtoolError as exc:
        ui.print_error(exc.message, exc.hint)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        ui.print_error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}.",
                       "Check the path, its permissions and the free disk space.")
        sys.exit(EXIT_USER_ERROR)
