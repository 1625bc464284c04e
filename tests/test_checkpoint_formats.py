"""One checkpoint format for every kind, and the shapes sgtool wrote before it still load
(tests/fixtures/checkpoints, written by the code before the one format; see its README)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sgtool.checkpoint import FORMAT, KEYS, VERSION, load, pack, save
from sgtool.errors import SgtoolError

OLD = Path(__file__).parent / "fixtures" / "checkpoints"


def _one_format(saved: dict, kind: str) -> None:
    assert tuple(saved) == KEYS and saved["format"] == FORMAT and saved["version"] == VERSION
    assert saved["kind"] == kind


def test_an_old_last_pt_of_a_relation_head_migrates_with_its_optimizer_rng_and_phase():
    raw = torch.load(OLD / "head-last.pt", weights_only=False)
    saved = load(OLD / "head-last.pt")
    _one_format(saved, "reldn")
    assert saved["loop"] == {**raw["loop"], "phase": raw["phase"]} and saved["loop"]["epoch"] == 2
    assert saved["optimizer"]["state"].keys() == raw["optimizer"]["state"].keys()
    assert saved["scheduler"] == raw["scheduler"] and saved["rng"]["batches"] == raw["rng"]["batches"]
    assert saved["hooks"] == {}  # no hook had a state then
    assert all(torch.equal(saved["model"]["model"][k], v) for k, v in raw["state"]["model"].items())


@pytest.mark.parametrize("name", ["head-best.pt", "head-plain.pt"])
def test_old_model_files_of_a_relation_head_migrate(name):
    raw = torch.load(OLD / name, weights_only=False)
    saved = load(OLD / name)
    _one_format(saved, "reldn")
    assert saved["model"].keys() == raw["state"].keys() and saved["optimizer"] is None and saved["rng"] is None
    if name == "head-best.pt":  # the epoch and metric it was picked by
        assert saved["loop"] == {k: raw[k] for k in ("epoch", "val_metric", "val_value")}
    else:
        assert saved["loop"] is None


def test_a_statistical_heads_model_npz_loads_as_a_model_file():
    saved = load(OLD / "freq-model.npz")
    _one_format(saved, "freq")
    with np.load(OLD / "freq-model.npz") as raw:
        assert set(saved["model"]) == set(raw.files) - {"__head__"}
        assert all(np.array_equal(saved["model"][k], raw[k]) for k in saved["model"])


def test_an_old_autoencoder_model_file_loads_into_the_network(tmp_path):
    from sgtool.autoencoder.inference import load_model

    raw = torch.load(OLD / "ae-model.pt", weights_only=False)
    model, config = load_model(OLD / "ae-model.pt")
    assert config.max_nodes == raw["config"]["max_nodes"] and config.width == raw["config"]["width"] == 4
    assert all(torch.equal(model.state_dict()[k], v) for k, v in raw["state"].items())
    # a file from before edge_input / aux / baseline existed: the migration fills the forms it was trained with
    early = tmp_path / "early.pt"
    torch.save({**raw, "config": {k: v for k, v in raw["config"].items()
                                  if k not in ("edge_input", "aux", "baseline")}}, early)
    config = load(early)["model"]["config"]  # (these weights are of the later default forms: not built here)
    assert (config["edge_input"], config["aux"], config["baseline"]) == ("image+segment", "overlap", "strong")


def test_an_old_autoencoder_last_pt_gives_its_seconds_to_the_clock_hook():
    raw = torch.load(OLD / "ae-last.pt", weights_only=False)
    saved = load(OLD / "ae-last.pt")
    _one_format(saved, "ae")
    assert set(saved["model"]) == {"config", "model"}
    assert saved["hooks"] == {"AEClock": {"seconds": raw["state"]["train_seconds"]}}
    assert saved["loop"]["step"] == raw["loop"]["step"] > 0


@pytest.mark.parametrize("name", ["detector-last.pt", "detector-best.pt", "detector-bare.pt"])
def test_old_detector_checkpoints_migrate(name):
    from sgtool.detect.api import read_checkpoint

    raw = torch.load(OLD / name, weights_only=False)
    state = raw.get("state", raw)
    saved = load(OLD / name)
    _one_format(saved, "detector")
    assert set(saved["model"]) == {"spec", "vocabulary", "dataset", "config", "seed", "model"}
    assert saved["model"]["spec"] == state["spec"] and saved["model"]["spec"]["tiny_channels"] == 2
    clock = {"DetectorClock": {"seconds": state["train_seconds"]}}
    assert saved["hooks"] == (clock if name == "detector-last.pt" else None)
    read = read_checkpoint(OLD / name)  # what `load_detector` reads
    assert read.keys() == saved["model"].keys() and read["vocabulary"] == state["vocabulary"]


def test_a_checkpoint_of_the_one_format_round_trips_and_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    save(path, pack("tensor", {"w": torch.arange(3.0)}, loop={"epoch": 2}))
    saved = load(path)
    _one_format(saved, "tensor")
    assert torch.equal(saved["model"]["w"], torch.arange(3.0)) and saved["loop"] == {"epoch": 2}
    save(path, {**saved, "version": VERSION + 1})
    with pytest.raises(SgtoolError, match="newer sgtool"):
        load(path)
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(SgtoolError, match="not an sgtool checkpoint"):
        load(path)
