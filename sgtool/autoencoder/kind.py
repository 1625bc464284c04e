"""The auto-encoder's run kind, registered where the auto-encoder lives (engine/kinds.py loads this module)."""
from __future__ import annotations

from typing import Any

from sgtool.autoencoder.config import AEConfig
from sgtool.errors import SgtoolError
from sgtool.kinds import RunKind, register_kind
from sgtool.ui import SILENT


def train(ws: Any, request: Any) -> Any:
    from sgtool.autoencoder.train import train_autoencoder

    return train_autoencoder(ws, dataset=request.dataset, name=request.name, config_path=request.config_path,
                             overrides=request.overrides, seed=request.seed, device=request.device,
                             reporter=request.reporter, **request.given())


def resume(ws: Any, run: str, request: Any) -> Any:
    from sgtool.autoencoder.train import resume_autoencoder

    return resume_autoencoder(ws, run, request)


def show_train(result: Any, as_json: bool) -> None:
    from sgtool.autoencoder.train import show_ae_train

    show_ae_train(result, as_json=as_json)


def evaluate(ws: Any, run: str, split: str, passed: tuple[str, ...], options: dict) -> Any:
    from sgtool.autoencoder.evaluate import run_ae_eval

    if passed:
        raise SgtoolError(f"{passed[0]} does not apply to an ae run, which reports triplet precision, recall and F1.",
                          f"Leave {passed[0]} out.")
    return run_ae_eval(ws, run=run, split=split, reporter=options.get("reporter", SILENT))


def show_eval(outcome: Any, as_json: bool) -> None:
    from sgtool.autoencoder.evaluate import show_ae_eval

    show_ae_eval(outcome, as_json=as_json)


AE_KIND = register_kind(RunKind(
    name="ae", config=AEConfig, summary="The image -> graph -> image auto-encoder (Simple Shape dataset).",
    train=train, show_train=show_train, evaluate=evaluate, show_eval=show_eval, resume=resume))
