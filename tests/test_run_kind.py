"""A run kind declared in a test module trains, resumes, predicts and evaluates through the CLI, with no other
file changed: the registry (sgtool/kinds.py) is the only place a kind is known."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from sgg_fixtures import save_tiny
from sgtool import atomic
from sgtool.config import option
from sgtool.engine.predict import PredictedGraph
from sgtool.engine.record import RunRecord
from sgtool.kinds import RunKind, register_kind, unregister_kind
from sgtool.workspace import Workspace


@dataclass
class CounterConfig:
    counter_steps: int = option(4, "Steps the counter takes.", min=1, max=100)
    stop_after: int = option(0, "Stop after this many steps, as a killed run would (0: never).", min=0, flag=False)


def _state(folder) -> dict:
    return json.loads((folder / "state.json").read_text())


def _count(folder, record: RunRecord, start: int) -> dict:
    """The 'training': one step adds the step's number; stop_after leaves the run unfinished."""
    config, state = record.options, {"step": start, "total": _state(folder)["total"] if start else 0}
    while state["step"] < config["counter_steps"]:
        state["step"] += 1
        state["total"] += state["step"]
        atomic.write_json(folder / "state.json", state)
        if config["stop_after"] and state["step"] == config["stop_after"] and start == 0:
            record.write_status(folder, "running")
            return state
    record.write_status(folder, "complete")
    return state


def train(ws: Workspace, request: Any) -> dict:
    name = request.name or "counter"
    folder = ws.run_dir(name)
    folder.mkdir(parents=True)
    options = {"counter_steps": 4, "stop_after": 0, **request.given()}
    for pair in request.overrides:
        key, value = pair.split("=", 1)
        options[key] = int(value)
    record = RunRecord(run=name, head="counter", dataset=request.dataset or "tiny", task="none", options=options)
    record.write_config(folder)
    return {"run": name, **_count(folder, record, 0)}


def resume(ws: Workspace, run: str, request: Any) -> dict:
    folder = ws.run_dir(run)
    return {"run": run, **_count(folder, RunRecord.read(folder), _state(folder)["step"])}


def evaluate(ws: Workspace, run: str, split: str, passed: tuple, options: dict) -> dict:
    return {"run": run, "split": split, "total": _state(ws.run_dir(run))["total"]}


def predict(ws: Workspace, images: list, *, run: str, pixels: Any, reporter: Any, **options: Any) -> list:
    """One PredictedGraph per image, as `sgtool predict` shows them: here a file holding the count."""
    out = options["out"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images:
        (out / f"{image.stem}.count").write_text(str(_state(ws.run_dir(run))["total"]))
        written.append(PredictedGraph(image, out / f"{image.stem}.count", 0, 0))
    return written


def show(result: Any, as_json: bool) -> None:
    print(json.dumps(result))


@pytest.fixture
def counter_kind():
    kind = register_kind(RunKind(name="counter", config=CounterConfig, summary="Counts 1 + 2 + ... + steps.",
                                 train=train, show_train=show, evaluate=evaluate, show_eval=show, resume=resume,
                                 predict=predict))
    yield kind
    unregister_kind("counter")


def test_a_toy_kind_trains_resumes_predicts_and_evaluates_through_the_cli(tmp_path, cli, counter_kind, own_image):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    first = cli("-w", ws.root, "train", "--head", "counter", "--counter-steps", "5", "--set", "stop_after=2",
                "--name", "c", "--json")
    assert first.code == 0, first.err
    assert json.loads(first.out) == {"run": "c", "step": 2, "total": 3}
    resumed = cli("-w", ws.root, "train", "--resume", "c", "--json")
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out) == {"run": "c", "step": 5, "total": 15}
    assert json.loads((ws.run_dir("c") / "run.json").read_text())["status"] == "complete"
    scored = cli("-w", ws.root, "eval", "--run", "c", "--json")
    assert scored.code == 0, scored.err
    assert json.loads(scored.out) == {"run": "c", "split": "test", "total": 15}
    predicted = cli("-w", ws.root, "predict", str(own_image), "--run", "c", "--out", tmp_path / "out")
    assert predicted.code == 0, predicted.err
    assert (tmp_path / "out" / f"{own_image.stem}.count").read_text() == "15"


def test_the_toy_kind_is_in_train_help_and_its_flag_is_checked(tmp_path, cli, counter_kind):
    shown = cli("train", "--head", "counter", "--help")
    assert shown.code == 0 and "--counter-steps" in shown.out
    refused = cli("-w", tmp_path / "ws", "train", "--head", "counter", "--counter-steps", "0")
    assert refused.code == 2 and "--counter-steps must be from 1 to 100" in refused.err
    assert not (tmp_path / "ws" / "runs").exists()
