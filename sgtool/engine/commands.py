"""What `sgtool train`, `eval` and `predict` do with a run: ask the registry (engine/kinds.py) for the
run's kind and call its entry point. The registry points down at the stages; this module sits above
both, so no stage imports the registry."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sgtool.engine.kinds import DEFAULT_KIND, RunKind, TrainRequest, get_kind, kind_of_run, refuse_foreign
from sgtool.errors import SgtoolError
from sgtool.eval.run_eval import run_eval
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace, check_names


def run_training(ws: Workspace, request: TrainRequest, resume: str | None = None,
                 from_run: str | None = None) -> Any:
    """`sgtool train`: continue a run (`resume`), reuse a run's weights in another task (`from_run`) or
    train a new run, each through the run's kind in the registry (engine/kinds.py)."""
    check_names(dataset=request.dataset, name=request.name, detector=request.detector, resume=resume,
                **{"from": from_run})
    if resume is not None:
        kind = kind_of_run(ws, resume) if (ws.run_dir(resume) / "config.yaml").is_file() else None
        if kind is None or kind.resume is None or kind.command != "train":
            refuse_resume(ws, resume, kind)
        return kind.resume(ws, resume, request), kind
    if from_run is not None:
        kind = kind_of_run(ws, from_run) if (ws.require_run(from_run) / "config.yaml").is_file() else None
        if kind is None or kind.retask is None:
            raise SgtoolError(f"The run '{from_run}' is not a complete relation-head run, so its weights cannot be reused.",
                              "Pass a run that `sgtool train` finished (see `sgtool info`).")
        return kind.retask(ws, from_run, request), kind
    kind = get_kind(request.kind or DEFAULT_KIND)
    if kind.command != "train":
        raise SgtoolError(f"The {kind.name} is trained with `sgtool {kind.command}`, not `sgtool train`.",
                          f"Run `sgtool {kind.command} {flag('help')}`.")
    refuse_foreign(kind, request)
    return kind.train(ws, dataclasses.replace(request, kind=kind.name)), kind


def run_detector_training(ws: Workspace, request: TrainRequest, resume: str | None = None) -> tuple[Any, RunKind]:
    """`sgtool train-detector`: a new detector run, or `resume` continued, through the detector's kind."""
    kind = get_kind("detector")
    return (kind.resume(ws, resume, request) if resume is not None else kind.train(ws, request)), kind


def refuse_resume(ws: Workspace, run: str, kind: RunKind | None) -> None:
    """One sentence for a run that `sgtool train --resume` cannot continue."""
    ws.require_run(run)
    if kind is not None and kind.command != "train":
        raise SgtoolError(f"The run '{run}' is a {kind.name} run.", f"Resume it with `sgtool {kind.command} {flag('resume')} {run}`.")
    raise SgtoolError(f"The run '{run}' is not a run of a trainable relation head, so it cannot be resumed.",
                      f"Resume a run made by `sgtool train {flag('head')} reldn|tensor|nodis|iwsl|ae`.")


def eval_run(ws: Workspace, *, run: str | None = None, split: str = "test", passed: tuple[str, ...] = (),
             external: dict | None = None, **options: Any) -> tuple[Any, Any]:
    """`sgtool eval`: the run's kind evaluates it (engine/kinds.py); `options` are `run_eval`'s keywords and
    `passed` names the options given, for a kind to refuse those that do not apply. `external`
    (predictions, fmt, dataset), when any is set, scores a predictions file of any code base instead.
    Returns (outcome, kind); kind is None for a relation-head run or a predictions file."""
    if external and any(value is not None for value in external.values()):
        from sgtool.eval.external import run_external_eval

        return run_external_eval(ws, **external, run=run, split=split, **options), None
    check_names(run=run)
    name = run if run is not None else ws.latest_run()
    kind = kind_of_run(ws, name) if (ws.require_run(name) / "config.yaml").is_file() else None
    if kind is None:
        return run_eval(ws, run=name, split=split, **options), None
    return kind.evaluate(ws, name, split, passed, options), kind


def show_evaluation(outcome: Any, kind: Any, as_json: bool = False) -> None:
    """Print what `eval_run` returned, as its kind shows it."""
    if kind is None:
        from sgtool.eval.report import show_eval

        show_eval(outcome, as_json=as_json)
    else:
        kind.show_eval(outcome, as_json)


def predict_run(ws: Workspace, images: list[Path], *, run: str | None = None, reporter: Reporter = SILENT,
                **options: Any) -> Any:
    """`sgtool predict`: a run whose kind predicts images (the relation heads) on the user's images."""
    from sgtool.engine.predict import read_inputs

    check_names(run=run)
    pixels = read_inputs(images, options.get("top", 20))  # a bad image is named before a missing run
    name = run if run is not None else ws.latest_run()
    kind = kind_of_run(ws, name)
    if kind.predict is None:
        article = "an" if kind.name[0] in "aeiou" else "a"
        raise SgtoolError(f"The run '{name}' is {article} {kind.name} run; `sgtool predict` runs a relation head on your images.",
                          f"Pass {flag('run')} with a relation-head run (see `sgtool info`).")
    return kind.predict(ws, images, run=name, pixels=pixels, reporter=reporter, **options)
