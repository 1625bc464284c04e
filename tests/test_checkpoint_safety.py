"""A checkpoint is read with a weights-only unpickler: a file whose unpickling would run code is refused in
one sentence and runs nothing; ordinary checkpoints (tensors, numpy random states) still load."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sgtool.engine.checkpoint import load_state
from sgtool.errors import SgtoolError


class _WritesAMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling this would create the marker file


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    path, marker = tmp_path / "last.pt", tmp_path / "ran"
    torch.save({"format": 1, "state": {}, "payload": _WritesAMarker(marker)}, path)
    with pytest.raises(SgtoolError, match="not a readable checkpoint"):
        load_state(path)
    assert not marker.exists()


def test_tensors_and_numpy_random_states_load(tmp_path):
    path = tmp_path / "last.pt"
    rng = np.random.default_rng(3)
    saved = {"state": {"w": torch.arange(3.0)}, "numpy": np.random.get_state(), "python": random.getstate(),
             "generator": rng.bit_generator.state, "scores": np.linspace(0, 1, 4, dtype=np.float32),
             "count": np.int64(7), "flags": np.array([True, False])}
    torch.save(saved, path)
    loaded = load_state(path)
    assert torch.equal(loaded["state"]["w"], torch.arange(3.0))
    assert loaded["numpy"][0] == "MT19937" and np.array_equal(loaded["numpy"][1], saved["numpy"][1])
    assert loaded["python"] == saved["python"] and loaded["generator"] == saved["generator"]
    assert loaded["scores"].dtype == np.float32 and loaded["count"] == 7 and loaded["flags"].tolist() == [True, False]
