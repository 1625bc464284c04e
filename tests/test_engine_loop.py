"""The one training loop, driven through a toy linear head registered here."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from sgg_fixtures import save_tiny, tiny_graphs
from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions, read_predictions
from sgtool.engine.loop import LAST, BEST, load_state, run_loop
from sgtool.engine.train import train
from sgtool.errors import SgtoolError
from sgtool.heads import HeadConfig, ObjectPredictions, TrainableHead, TrainData, make_config, register_head
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

C, P = 5, 4  # tiny vocabulary sizes with background


@dataclass
class ToyConfig(HeadConfig):
    epochs: int = 3
    lr: float = 0.1
    nan_epoch: int = 0  # > 0: the loss is NaN from this epoch on


@register_head("toy-linear")
class ToyHead(TrainableHead):
    """p(predicate | subject label, object label) = softmax(linear(one-hot labels))."""

    Config = ToyConfig

    def __init__(self, config: ToyConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.epochs_started = 0

    def _new_model(self) -> nn.Module:
        return nn.Linear(2 * self.num_object_classes, self.num_predicate_classes)

    def build(self, data: TrainData) -> nn.Module:
        self.model = self._new_model().to(data.device)
        return self.model

    def inputs(self, labels: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> torch.Tensor:
        eye = torch.eye(self.num_object_classes)
        return torch.cat([eye[labels[subj]], eye[labels[obj]]], dim=1)

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> list[dict]:
        self.epochs_started += 1
        order = rng.permutation(graphs.num_images) if shuffle else np.arange(graphs.num_images)
        out = []
        for start in range(0, len(order), self.config.batch_size):
            part = graphs.select(np.sort(order[start:start + self.config.batch_size]))
            rels = part.relations
            out.append({"x": self.inputs(part.labels, rels.pairs[:, 0], rels.pairs[:, 1]),
                        "y": torch.from_numpy(rels.predicates)})
        return out

    def loss(self, batch: dict) -> dict[str, Any]:
        loss = nn.functional.cross_entropy(self.model(batch["x"]), batch["y"])
        if self.config.nan_epoch and self.epochs_started >= self.config.nan_epoch:
            loss = loss * float("nan")
        return {"loss": loss}

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        image, subj, obj = ordered_pairs(objects.box_offsets)
        with torch.no_grad():
            probs = self.model(self.inputs(objects.labels, subj, obj)).softmax(-1).numpy()
        return Predictions(objects.image_ids, objects.box_offsets, objects.boxes, objects.labels, objects.scores,
                           offsets_from_counts(np.bincount(image, minlength=objects.num_images)),
                           np.stack([subj, obj], 1), probs.astype(np.float32))

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model = self._new_model()
        self.model.load_state_dict(state)


def toy_data(seed: int = 0) -> TrainData:
    graphs = tiny_graphs()
    train_split = graphs.split_subset("train")
    return TrainData(train_split, graphs.split_subset("val"), None, compute_priors(train_split, C, P), "cpu", seed)


def toy_head(**settings) -> ToyHead:
    return ToyHead(make_config(ToyHead, settings), C, P)


def scripted(values: list[float], head: ToyHead, snapshots: list[dict]):
    """A validator returning the given mR@50 values in turn, remembering the weights it saw."""
    def validate() -> dict[str, float]:
        snapshots.append(head.state_dict())
        return {"mR@50": values[len(snapshots) - 1], "R@50": 0.5}

    return validate


# ---------------------------------------------------------------- through the train stage

def test_loop_reduces_the_loss_and_writes_a_resumable_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = train(ws, head="toy-linear", epochs=5, overrides=["schedule=step", "step_size=2", "gamma=0.5"])
    run = result.path
    for part in ("config.yaml", "run.json", "log.jsonl", "metrics.json", f"checkpoints/{LAST}", f"checkpoints/{BEST}",
                 "predictions/val.h5", "predictions/test.h5"):
        assert (run / part).is_file(), part
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert epochs[-1]["train"]["loss"] < epochs[0]["train"]["loss"] - 0.1
    assert [r["lr"] for r in epochs] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert all(0 <= r["val"]["mR@50"] <= 1 and r["val_metric"] == "mR@50" for r in epochs)
    last = load_state(run / "checkpoints" / LAST)
    assert (last["loop"]["epoch"], last["loop"]["step"]) == (5, 5 * 3)  # 24 train images, batches of 8
    assert set(last) == {"format", "version", "kind", "model", "optimizer", "scheduler", "loop", "rng", "hooks"}
    assert last["loop"]["phase"] == 0 and last["kind"] == "toy-linear"
    options = yaml.safe_load((run / "config.yaml").read_text())["options"]
    assert (options["optimizer"], options["schedule"], options["val_metric"]) == ("adam", "step", "mR@50")
    assert 0 < json.loads((run / "metrics.json").read_text())["metrics"]["R@50"] <= 1


def test_best_checkpoint_is_the_epoch_with_the_best_val_metric(tmp_path):
    head, snapshots = toy_head(epochs=4), []
    log = run_loop(head, toy_data(), tmp_path, scripted([0.2, 0.6, 0.4, 0.6], head, snapshots))
    assert [r["val_value"] for r in log] == [0.2, 0.6, 0.4, 0.6]
    best = load_state(tmp_path / "checkpoints" / BEST)
    assert best["loop"]["epoch"] == 2 and best["loop"]["val_value"] == 0.6  # ties keep the earlier epoch
    for name, value in head.state_dict().items():  # the head ends with the best epoch's weights
        torch.testing.assert_close(value, snapshots[1][name])
    assert not torch.equal(snapshots[1]["weight"], snapshots[3]["weight"])


def test_the_same_seed_gives_identical_weights(tmp_path):
    weights = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        head = toy_head(epochs=2)
        run_loop(head, toy_data(seed), tmp_path / folder, lambda: {})
        weights.append(head.state_dict()["weight"])
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_resume_continues_to_the_same_weights(tmp_path):
    straight = toy_head(epochs=4)
    run_loop(straight, toy_data(), tmp_path / "straight", lambda: {})
    first = toy_head(epochs=2)
    run_loop(first, toy_data(), tmp_path / "resumed", lambda: {})
    second = toy_head(epochs=4)
    log = run_loop(second, toy_data(), tmp_path / "resumed", lambda: {}, resume=True)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    torch.testing.assert_close(second.state_dict()["weight"], straight.state_dict()["weight"])


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    with pytest.raises(SgtoolError, match=r"epoch 3 .*the loss is nan"):
        train(ws, head="toy-linear", name="boom", overrides=["epochs=5", "nan_epoch=3"])
    run = ws.run_dir("boom")
    assert load_state(run / "checkpoints" / LAST)["loop"]["epoch"] == 2
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "nan" in status["error"]
    assert not (run / "predictions").exists()
    result = cli("-w", ws.root, "train", "--head", "toy-linear", "--set", "nan_epoch=1")
    assert result.code == 2 and "loss is nan" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("setting, words", [
    ("optimizer=rmsprop", "optimizer must be one of adam, sgd"),
    ("schedule=linear", "schedule must be one of"),
    ("val_metric=bogus@50", "Unknown metric 'bogus@50'"),
    ("lr=0", "lr must be positive"),
])
def test_bad_loop_settings_are_refused_before_anything_is_written(tmp_path, cli, setting, words):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "toy-linear", "--set", setting)
    assert result.code == 2 and words in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())


def test_sgd_with_clipping_trains_and_logs_the_gradient_norm(tmp_path):
    head = toy_head(epochs=2, optimizer="sgd", grad_clip=0.01)
    log = run_loop(head, toy_data(), tmp_path, lambda: {})
    assert all(r["train"]["grad_norm"] > 0.01 for r in log)  # the norm before clipping is logged
    assert isinstance(load_state(tmp_path / "checkpoints" / LAST)["optimizer"]["param_groups"][0]["momentum"], float)
