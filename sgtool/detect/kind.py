"""The detector's run kind, registered where the detector lives (engine/kinds.py loads this module). Its
training stage is engine/train_detector.py, named by entry point: detect/ sits below the engine."""
from __future__ import annotations

from typing import Any

from sgtool.detect.config import DetectorConfig
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.kinds import EntryPoint, RunKind, register_kind


def show_train(result: Any, as_json: bool) -> None:
    from sgtool.detect.train import show_detector

    show_detector(result, as_json=as_json)


def refuse_eval(ws: Any, run: str, *rest: Any) -> Any:
    raise SgtoolError(f"The run '{run}' is a detector run (`sgtool eval` scores relation and ae runs).",
                      f"Its COCO mAP is in metrics.json; resume it with `sgtool train-detector {flag('resume')} {run}`.")


DETECTOR_KIND = register_kind(RunKind(
    name="detector", config=DetectorConfig, summary="Faster R-CNN object detector (`sgtool train-detector`).",
    train=EntryPoint("sgtool.engine.train_detector:train_request"), show_train=show_train,
    evaluate=refuse_eval, show_eval=lambda outcome, as_json: None,
    resume=EntryPoint("sgtool.engine.train_detector:resume_request"), command="train-detector"))
