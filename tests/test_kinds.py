"""The registry of run kinds: a head declared in a test module trains through the CLI with its own flag,
help comes from the declarations, and no function outside cli.py takes more than 12 parameters."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from sgg_fixtures import save_tiny
from sgtool.config import option
from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.heads import HeadConfig, ObjectPredictions, TrainableHead, TrainData, register_head, unregister_head
from sgtool.workspace import Workspace

SGTOOL = Path(__file__).resolve().parents[1] / "sgtool"


@dataclass
class ToyConfig(HeadConfig):
    epochs: int = 2
    toy_width: int = option(2, "Hidden units of the toy head.", min=1, max=64)


class ToyHead(TrainableHead):
    """A two-layer MLP on one-hot subject and object labels."""

    Config = ToyConfig

    def _new_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2 * self.num_object_classes, self.config.toy_width), nn.ReLU(),
                             nn.Linear(self.config.toy_width, self.num_predicate_classes))

    def build(self, data: TrainData) -> nn.Module:
        self.model = self._new_model()
        return self.model

    def inputs(self, labels: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> torch.Tensor:
        eye = torch.eye(self.num_object_classes)
        return torch.cat([eye[labels[subj]], eye[labels[obj]]], dim=1)

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> list[dict]:
        rels = graphs.relations
        return [{"x": self.inputs(graphs.labels, rels.pairs[:, 0], rels.pairs[:, 1]),
                 "y": torch.from_numpy(rels.predicates)}]

    def loss(self, batch: dict) -> dict[str, Any]:
        return {"loss": nn.functional.cross_entropy(self.model(batch["x"]), batch["y"])}

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        image, subj, obj = ordered_pairs(objects.box_offsets)
        with torch.no_grad():
            probs = self.model(self.inputs(objects.labels, subj, obj)).softmax(-1).numpy()
        return Predictions(objects.image_ids, objects.box_offsets, objects.boxes, objects.labels, objects.scores,
                           offsets_from_counts(np.bincount(image, minlength=objects.num_images)),
                           np.stack([subj, obj], 1), probs.astype(np.float32), meta={"toy_calls": 1})

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model = self._new_model()
        self.model.load_state_dict(state)


@pytest.fixture
def toy_registered():
    from sgtool import heads

    register_head("toy")(ToyHead)
    yield ToyHead
    heads.unregister_head("toy")  # later tests see the shipped kinds only


def test_a_head_declared_in_a_test_module_trains_through_the_cli_with_its_own_flag(tmp_path, cli, toy_registered):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "toy", "--toy-width", "3", "--name", "t", "--json")
    assert result.code == 0, result.err
    run = ws.run_dir("t")
    assert yaml.safe_load((run / "config.yaml").read_text())["options"]["toy_width"] == 3
    state = torch.load(run / "checkpoints" / "model.pt", weights_only=False)["model"]
    assert state["0.weight"].shape[0] == 3  # the flag reached the network
    assert (run / "training-curves.png").stat().st_size > 1000
    from sgtool.data.predictions import read_predictions

    assert read_predictions(run / "predictions" / "test.h5").meta["head_meta"] == {"toy_calls": 1}
    evaluated = cli("-w", ws.root, "eval", "--run", "t", "--json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["head_meta"] == {"toy_calls": 1}  # eval --json carries it as report.json does
    report = (ws.root / "reports" / "t" / "report.md").read_text()
    assert "toy_calls: 1" in report  # the head's meta reaches the report


def test_a_declared_range_is_one_sentence_and_exit_2(tmp_path, cli, toy_registered):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "toy", "--toy-width", "0")
    assert result.code == 2 and "--toy-width must be from 1 to 64, not 0." in result.err
    assert "Traceback" not in result.err and not (ws.root / "runs").exists()
    result = cli("-w", ws.root, "train", "--head", "freq", "--toy-width", "3")
    assert result.code == 2 and "The freq head does not take --toy-width (an option of the toy head)." in result.err


def test_help_of_one_head_lists_its_options_with_ranges(cli, toy_registered, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = " ".join(cli("train", "--head", "tensor", "--help").out.split())
    assert "--rank" in text and ">= 1; default 5" in text and "one of 1, 10, free; default free" in text
    assert "--toy-width" not in text and "--samples" not in text  # another head's flags are left out
    assert "hidden (>= 1; default 128)" in text  # the --set settings, with their ranges
    toy = " ".join(cli("train", "--head", "toy", "--help").out.split())
    assert "--toy-width" in toy and "1 to 64; default 2" in toy
    monkeypatch.setattr(toy_registered, "labels_objects", True)
    unregister_head("toy")
    register_head("toy")(toy_registered)  # a kind is what its head declared when it registered
    every = " ".join(cli("train", "--help").out.split())
    assert "--toy-width" in every and "--t-end" in every and "--max-nodes" in every
    assert "toy: A two-layer MLP on one-hot subject and object labels. (labels objects in SGCls / SGDet)" in every
    listed = every.split("Heads that give their own object labels in SGCls / SGDet: ", 1)[1].split(";", 1)[0]
    assert {"toy", "tensor"} <= set(listed.split(", "))  # tensor labels objects since issue 14


def _parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    return len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)


def test_no_function_outside_the_cli_takes_more_than_12_parameters():
    too_many = []
    for path in sorted(SGTOOL.rglob("*.py")):
        if path.name == "cli.py" and path.parent == SGTOOL:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameter_count(node) > 12:
                too_many.append(f"{path.relative_to(SGTOOL.parent)}:{node.lineno} {node.name} ({_parameter_count(node)})")
    assert not too_many, too_many


def test_a_two_epoch_run_draws_its_curves_and_writes_tensorboard_events_when_asked(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    plain = cli("-w", ws.root, "-q", "train", "--head", "tensor", "--epochs", "2", "--set", "sel_epochs=0", "--name", "p")
    assert plain.code == 0, plain.err
    assert (ws.run_dir("p") / "training-curves.png").stat().st_size > 1000  # always
    assert not (ws.run_dir("p") / "tensorboard").exists()  # only when asked
    pytest.importorskip("tensorboard")
    asked = cli("-w", ws.root, "-q", "train", "--head", "tensor", "--epochs", "2", "--set", "sel_epochs=0",
                "--set", "tensorboard=true", "--name", "tb")
    assert asked.code == 0, asked.err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ws.run_dir("tb") / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert len(events.Scalars("val/mR@50")) == 2 and len(events.Scalars("train/step_loss")) >= 2


def test_tensorboard_missing_is_one_sentence(tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # an import of it now fails
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "tensor", "--epochs", "1", "--set", "tensorboard=true")
    assert result.code == 2 and "needs the tensorboard package" in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists()  # refused before anything is written


def test_predict_and_eval_ask_the_runs_kind(tmp_path, cli, own_image):
    ws = Workspace(tmp_path / "ws")
    ws.run_dir("an-ae-run").mkdir(parents=True)
    (ws.run_dir("an-ae-run") / "config.yaml").write_text(yaml.safe_dump({"run": "an-ae-run", "head": "ae",
                                                                          "dataset": "shapes", "task": "sgdet"}))
    result = cli("-w", ws.root, "predict", str(own_image), "--run", "an-ae-run")
    assert result.code == 2 and "is an ae run" in result.err and "Traceback" not in result.err
    result = cli("-w", ws.root, "eval", "--run", "an-ae-run", "--k", "20")
    assert result.code == 2 and "does not apply to an ae run" in result.err
