"""Run kinds: the registry of everything sgtool trains (each relation head, the auto-encoder, the detector).

A kind declares its config dataclass (fields declared with `sgtool.config.option`) and its entry
points; `sgtool train` (new, `--resume`, `--from`), `eval`, `predict` and `info` ask this registry
what to call, so no stage dispatches on a kind's name. Relation heads become kinds by registering
with `@register_head` (sgtool/heads/); the auto-encoder and the detector are declared below.

    train(ws, request) -> result         show_train(result, as_json)
    resume(ws, run, request) -> result   retask(ws, run, request) -> result  (None: not supported)
    evaluate(ws, run, split, passed, options) -> outcome   show_eval(outcome, as_json)
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sgtool.config import declarations, describe_range
from sgtool.engine.record import TrainRequest, flag_name  # noqa: F401 (part of the registry's API)
from sgtool.errors import SgtoolError
from sgtool.ui import SILENT
from sgtool.workspace import Workspace

DEFAULT_KIND = "freq"


@dataclass(frozen=True)
class RunKind:
    name: str
    config: type  # the config dataclass
    summary: str  # one line for `sgtool train --help`
    train: Callable[[Workspace, TrainRequest], Any]
    show_train: Callable[[Any, bool], None]
    evaluate: Callable[..., Any]
    show_eval: Callable[[Any, bool], None]
    resume: Callable[[Workspace, str, TrainRequest], Any] | None = None
    retask: Callable[[Workspace, str, TrainRequest], Any] | None = None
    predicts_images: bool = False  # `sgtool predict` runs it on the user's images (with a detector)
    command: str = "train"  # the command that trains it (its flags are that command's)
    run_flags: tuple[str, ...] = ("--dataset", "--name", "--config", "--set")  # run-level flags it takes
    labels_objects: bool = False  # in SGCls / SGDet it returns its own object labels


# ---------------------------------------------------------------- the registry

_KINDS: dict[str, RunKind] = {}


def register_kind(kind: RunKind) -> RunKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"Two run kinds are registered as '{kind.name}'.")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> RunKind:
    """The kind called `name`: a declared kind, else the relation head of that name."""
    _declare_builtin_kinds()
    if name in _KINDS:
        return _KINDS[name]
    from sgtool.heads import get_head

    try:
        head = get_head(name)
    except SgtoolError as exc:
        known = [n for n in kind_names() if n not in _KINDS or _KINDS[n].command == "train"]
        raise SgtoolError(f"Unknown relation head '{name}' (known heads: {', '.join(known)}).",
                          "Pass one of them to --head.") from exc
    return relation_kind(head)


def kind_names() -> list[str]:
    from sgtool.heads import available_heads

    _declare_builtin_kinds()
    return sorted({*available_heads(), *_KINDS})


def registered_kinds() -> list[RunKind]:
    """The kinds registered so far, importing nothing (the CLI builds `train`'s flags from them)."""
    import sys

    heads = sys.modules.get("sgtool.heads")
    relation = [relation_kind(head) for _, head in sorted(heads._REGISTRY.items())] if heads is not None else []
    return [*relation, *(kind for _, kind in sorted(_KINDS.items()))]


def all_kinds() -> list[RunKind]:
    """Every kind, each head module imported once."""
    return [get_kind(name) for name in kind_names()]


def kind_of_run(ws: Workspace, run: str) -> RunKind:
    """The kind a run folder was trained as (its config.yaml's `head`)."""
    from sgtool.engine.record import RunRecord

    folder = ws.require_run(run)
    if not (folder / "config.yaml").is_file():
        raise SgtoolError(f"The run '{run}' has no config.yaml, so sgtool cannot tell what it is.",
                          "Train it again; a killed first epoch leaves such a folder.")
    return get_kind(str(RunRecord.read(folder).head))


def relation_kind(head: type) -> RunKind:
    from sgtool.engine import train as stage
    from sgtool.eval import run_eval
    from sgtool.eval.report import show_eval
    from sgtool.heads import TrainableHead

    trainable = issubclass(head, TrainableHead)
    return RunKind(
        name=head.name, config=head.Config, summary=(head.__doc__ or "").strip().splitlines()[0],
        train=stage.train_request, show_train=stage.show_train, evaluate=run_eval.evaluate_run, show_eval=show_eval,
        resume=stage.resume_train if trainable else None, retask=stage.retask_request,
        run_flags=("--dataset", "--task", "--detector", "--name", "--config", "--set", "--cache-features"),
        predicts_images=True,
        labels_objects=bool(getattr(head, "labels_objects", False)))


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
    """One sentence for the first given flag that the kind does not take."""
    fields = set(kind.config.__dataclass_fields__)
    for key in request.given():
        if key not in fields:
            owners = [k.name for k in registered_kinds() if key in k.config.__dataclass_fields__]
            whose = f" (an option of the {', '.join(owners)} head{'s' if len(owners) > 1 else ''})" if owners else ""
            raise SgtoolError(f"The {kind.name} head does not take {flag_name(key)}{whose}.",
                              f"Its settings are: {', '.join(sorted(fields))}.")
    for flag in request.passed:
        if flag not in kind.run_flags:
            raise SgtoolError(f"The {kind.name} head does not take {flag}.",
                              f"It takes {', '.join(kind.run_flags)} and its own options; leave {flag} out.")


# ---------------------------------------------------------------- the auto-encoder and the detector

def _ae_train(ws: Workspace, request: TrainRequest) -> Any:
    from sgtool.autoencoder.train import train_autoencoder

    return train_autoencoder(ws, dataset=request.dataset, name=request.name, config_path=request.config_path,
                             overrides=request.overrides, seed=request.seed, device=request.device,
                             reporter=request.reporter, **request.given())


def _ae_resume(ws: Workspace, run: str, request: TrainRequest) -> Any:
    from sgtool.autoencoder.train import resume_autoencoder

    return resume_autoencoder(ws, run, request)


def _ae_show(result: Any, as_json: bool) -> None:
    from sgtool.autoencoder.train import show_ae_train

    show_ae_train(result, as_json=as_json)


def _ae_evaluate(ws: Workspace, run: str, split: str, passed: tuple[str, ...], options: dict) -> Any:
    from sgtool.autoencoder.evaluate import run_ae_eval

    if passed:
        raise SgtoolError(f"{passed[0]} does not apply to an ae run, which reports triplet precision, recall and F1.",
                          f"Leave {passed[0]} out.")
    return run_ae_eval(ws, run=run, split=split, reporter=options.get("reporter", SILENT))


def _ae_show_eval(outcome: Any, as_json: bool) -> None:
    from sgtool.autoencoder.evaluate import show_ae_eval

    show_ae_eval(outcome, as_json=as_json)


def _detector_train(ws: Workspace, request: TrainRequest, resume: str | None = None) -> Any:
    from sgtool.engine.train_detector import train_detector

    options = request.given()
    return train_detector(ws, resume=resume, dataset=request.dataset, name=request.name, seed=request.seed,
                          device=request.device, threads=options.pop("threads", None), reporter=request.reporter,
                          **options)


def _detector_show(result: Any, as_json: bool) -> None:
    from sgtool.detect.train import show_detector

    show_detector(result, as_json=as_json)


def _detector_refuses(what: str) -> Callable[..., Any]:
    def refuse(ws: Workspace, run: str, *rest: Any) -> Any:
        raise SgtoolError(f"The run '{run}' is a detector run ({what}).",
                          f"Resume it with `sgtool train-detector --resume {run}`; its COCO mAP is in metrics.json.")

    return refuse


def _declare_builtin_kinds() -> None:
    """The auto-encoder and the detector (declared on first use: their modules import torch)."""
    if "ae" in _KINDS:
        return
    from sgtool.autoencoder.config import AEConfig
    from sgtool.detect.config import DetectorConfig

    register_kind(RunKind(
        name="ae", config=AEConfig, summary="The image -> graph -> image auto-encoder (Simple Shape dataset).",
        train=_ae_train, show_train=_ae_show, evaluate=_ae_evaluate, show_eval=_ae_show_eval, resume=_ae_resume))
    register_kind(RunKind(
        name="detector", config=DetectorConfig, summary="Faster R-CNN object detector (`sgtool train-detector`).",
        train=_detector_train, show_train=_detector_show,
        evaluate=_detector_refuses("`sgtool eval` scores relation and ae runs"), show_eval=lambda outcome, as_json: None,
        resume=lambda ws, run, request: _detector_train(ws, request, resume=run), command="train-detector"))
