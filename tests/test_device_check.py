"""`benchmarks/device_check.py --json` on a machine without CUDA: the same few steps of every kind on CPU, one
JSON object that says so, and the same object in benchmarks/results/device_check.json (here a temp folder)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
KINDS = {"detector", "freq", "tensor", "reldn", "nodis", "iwsl", "ae"}


def _load(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import results_io

    monkeypatch.setattr(results_io, "RESULTS", tmp_path / "results")
    spec = importlib.util.spec_from_file_location("device_check", BENCHMARKS / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_budgets_train_one_step_for_the_loss_comparison(monkeypatch, tmp_path):
    check = _load(monkeypatch, tmp_path)
    assert check.budget("detector", 5, 17, one_step=True) == ({"epochs": 1, "batch_size": 17}, [])
    assert check.budget("ae", 5, 17, one_step=True)[1][0] == "steps=1"
    options, overrides = check.budget("tensor", 5, 17, one_step=False)
    assert options["epochs"] == 5 and "max_steps=5" in overrides and "amp=true" in overrides


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_device_check_runs_every_kind_on_cpu_and_prints_its_json(monkeypatch, tmp_path, capsys):
    check = _load(monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "argv", ["device_check.py"])
    check.main(["--json", "--images", "24", "--size", "64", "--shapes", "40", "--steps", "2", "--light"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["device"] == "cpu" and printed["cuda"] is False and printed["gpus"] == 0
    assert set(printed["kinds"]) == KINDS and printed["ddp"]["ran"] is False
    for kind, row in printed["kinds"].items():
        assert row["ok"] is True and row["device"] == "cpu" and row["amp"] is False, (kind, row)
        assert row["loss_agreement"] is None and row["peak_gpu_memory_mb"] is None  # nothing to compare on CPU
        assert row["steps"] == (0 if kind == "freq" else 3 if kind == "detector" else 2), kind  # 17 images / 8
        assert kind == "freq" or (row["steps_per_s"] > 0 and math.isfinite(row["first_loss"]))
        assert all(0.0 <= value <= 1.0 for value in row["metrics"].values())
    assert printed["kinds"]["tensor"]["predicted_graphs"] == 2
    saved = json.loads((tmp_path / "results" / "device_check.json").read_text())
    assert saved["numbers"] == printed and saved["budgets"]["steps_per_kind"] == 2
