"""One run lifecycle for every kind (engine/run.py): run.json has one schema, status included; hooks keep
their state in last.pt, so a resumed run's clocks, budget and learning rate are those of an uninterrupted run."""
from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
import torch

from sgg_fixtures import save_tiny
from sgtool.engine import hooks
from sgtool.engine.record import RUN_JSON_KEYS
from sgtool.workspace import Workspace

KINDS = {  # the smallest run of each kind: one pass, one epoch, narrow networks
    "freq": ["train", "--head", "freq", "--dataset", "tiny"],
    "tensor": ["train", "--head", "tensor", "--dataset", "tiny", "--epochs", "1", "--batch-size", "8",
               "--set", "sel_epochs=0", "--set", "hidden=8"],
    "ae": ["train", "--head", "ae", "--dataset", "shapes", "--epochs", "1", "--batch-size", "16", "--set", "width=4",
           "--set", "threads=1"],
    "detector": ["train-detector", "--dataset", "tiny", "--epochs", "1", "--batch-size", "4", "--threads", "1"],
}


def test_every_kind_writes_one_run_json_schema_with_its_status(tmp_path, cli):
    from sgtool.data.shapes import prepare_shapes

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, with_images=True, splits=(8, 2, 2))
    prepare_shapes(ws, images=40, seed=0, workers=1)
    written = {}
    for kind, args in KINDS.items():
        result = cli("-w", ws.root, "-q", *args, "--name", kind)
        assert result.code == 0, (kind, result.err)
        written[kind] = json.loads((ws.run_dir(kind) / "run.json").read_text())
    assert {kind: tuple(payload) for kind, payload in written.items()} == {kind: RUN_JSON_KEYS for kind in KINDS}
    assert {payload["status"] for payload in written.values()} == {"complete"}
    assert {kind: payload["head"] for kind, payload in written.items()} == {kind: kind for kind in KINDS}
    assert written["ae"]["seeds"] == [0] and written["detector"]["seeds"] == [0]


@pytest.fixture
def fake_clock(monkeypatch):
    """The hooks' clock advances one second per reading: deterministic, whatever the machine's speed."""
    ticks = itertools.count()
    monkeypatch.setattr(hooks, "perf_counter", lambda: float(next(ticks)))


def test_a_resumed_autoencoder_has_the_clock_and_lr_of_an_uninterrupted_run(tmp_path, fake_clock, monkeypatch):
    """A time cap short enough that the lr drop comes from the clock (not the steps): the resumed run's lr at
    every step, its clock and its weights equal the uninterrupted run's."""
    from sgtool.autoencoder.config import AEConfig
    from sgtool.autoencoder.data import load_split
    from sgtool.autoencoder.model import GraphAutoEncoder
    from sgtool.autoencoder.train import fit
    from sgtool.data.prepared import load_prepared
    from sgtool.data.shapes import prepare_shapes
    from sgtool.engine.checkpoint import LAST, load

    ws = Workspace(tmp_path / "ws")
    prepare_shapes(ws, images=60, seed=0, workers=1)
    data = load_split(load_prepared(ws, "shapes"), "train", 64)
    assert len(data) // 16 == 3  # three steps an epoch
    config = AEConfig(steps=12, batch_size=16, width=4, lr=1e-3, lr_drop_at=0.5, minutes=0.5, log_every=1)

    def train(folder, resume=False):
        torch.manual_seed(0)
        model = GraphAutoEncoder(4, 4)
        log = fit(model, data, config, 0, "cpu", folder=folder, resume=resume)
        return model, [(r["step"], r["lr"], r["seconds"]) for r in log if r["event"] == "train"]

    straight, steps = train(tmp_path / "straight")

    def stop_at_step_5(self, loop, terms):
        if loop.state.step == 5:
            raise KeyboardInterrupt  # killed in epoch 2, after the checkpoint of epoch 1
    monkeypatch.setattr(hooks.CheckpointHook, "after_step", stop_at_step_5, raising=False)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed")
    monkeypatch.undo()
    monkeypatch.setattr(hooks, "perf_counter", lambda: float(next(ticks)))
    ticks = itertools.count(1000)  # another process: its clock starts elsewhere
    resumed, resumed_steps = train(tmp_path / "killed", resume=True)

    lrs = [lr for _, lr, _ in steps]
    assert lrs[0] == 1e-3 and lrs[-1] == pytest.approx(1e-4)
    assert len(steps) < 12  # the time cap ended training: the clock counts
    drop = next(step for step, lr, _ in steps if lr < 1e-3)
    assert drop - 1 < 0.5 * 12  # the lr dropped by the clock, before half the steps
    assert resumed_steps == steps
    a, b = (load(tmp_path / run / "checkpoints" / LAST) for run in ("straight", "killed"))
    assert a["hooks"] == b["hooks"] and a["hooks"]["AEClock"]["seconds"] > 0 and a["loop"] == b["loop"]
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())


def test_the_budget_clock_resumes_where_it_stopped(fake_clock):
    loop = SimpleNamespace(state=SimpleNamespace(step=0), stopped=False)
    budget = hooks.BudgetHook(max_steps=0, minutes=1)
    budget.load_state_dict({"seconds": 58.0})  # a run stopped after 58 s of its minute
    budget.before_train(loop)
    budget.after_step(loop, {})
    assert not loop.stopped and budget.state_dict() == {"seconds": 59.0}
    budget.after_step(loop, {})
    assert loop.stopped and budget.state_dict() == {"seconds": 60.0}
    fresh = hooks.BudgetHook(max_steps=0, minutes=1)
    fresh.before_train(loop)
    assert fresh.state_dict() == {"seconds": 0.0}
