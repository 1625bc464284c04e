"""`torchrun --nproc_per_node 2 -m sgtool train ...` on CPU (gloo) matches one process with the same global batch."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sgg_fixtures import tiny_graphs, tiny_vocab
from sgtool.data.graphs import RelationSet, offsets_from_counts
from sgtool.data.prepared import Staged, save_prepared
from sgtool import distributed
from sgtool.engine.loop import LAST, load_state
from sgtool.workspace import Workspace

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
# SGD, not Adam: Adam divides by sqrt(v), so a rounding difference in a near-zero gradient can move a weight by
# up to lr; SGD moves it by lr times that difference, which is what the tolerance below bounds
LR, MOMENTUM, STEPS, CLIP, PAIRS = 0.01, 0.9, 3 * 3, 20.0, 8  # the tensor head: momentum 0.9, gradient-norm clip 20
TRAIN = ["train", "--head", "tensor", "--epochs", "3", "--set", "sel_epochs=0", "--set", f"lr={LR}",
         "--set", "optimizer=sgd"]


def reduction_order_tolerance() -> float:
    """How far float32 weights may drift when the same gradients are summed in another order (8 pairs in one
    process, or 4 + 4 reduced over two ranks): each gradient entry (at most the clip) is off by at most
    PAIRS x eps x CLIP; SGD with momentum adds lr / (1 - momentum) times that per step, over STEPS steps."""
    return STEPS * LR / (1 - MOMENTUM) * PAIRS * torch.finfo(torch.float32).eps * CLIP  # 1.7e-5; a missing
    # average over the ranks would be off by lr x |gradient| ~ 1e-2


def save_one_relation_per_image(ws: Workspace) -> None:
    """Every image holds exactly one relation, so a mean over 4 + 4 pairs equals the mean over 8."""
    graphs = tiny_graphs()
    rels = graphs.relations
    keep = rels.offsets[:-1][rels.counts() > 0]
    one = RelationSet(rels.pairs[keep], rels.predicates[keep], offsets_from_counts(np.minimum(rels.counts(), 1)))
    graphs = dataclasses.replace(graphs, relations=one)
    assert (one.counts()[graphs.split == 0] == 1).all() and (graphs.split == 0).sum() == 24
    save_prepared(ws, "tiny", "tiny", {"seed": 0}, lambda staging: Staged(graphs, tiny_vocab(), {}))


def torchrun(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = ["nice", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sgtool", "-w", str(ws), "-q", "--device", "cpu", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_cpu_ranks_train_the_same_weights_as_one_process_with_the_global_batch(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_one_relation_per_image(ws)
    single = cli("-w", ws.root, "-q", *TRAIN, "--batch-size", "8", "--name", "single")
    assert single.code == 0, single.err
    done = torchrun(ws.root, *TRAIN, "--batch-size", "4", "--name", "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(ws.runs()) == ["ddp", "single"]  # rank 1 claimed no run of its own
    a, b = (load_state(ws.run_dir(r) / "checkpoints" / LAST) for r in ("single", "ddp"))
    assert a["loop"]["step"] == b["loop"]["step"] == STEPS  # 24 images / global batch 8, 3 epochs
    for name, value in a["model"]["model"].items():  # measured: 1.5e-8 apart at most
        torch.testing.assert_close(b["model"]["model"][name], value, atol=reduction_order_tolerance(), rtol=0)
    logs = [[json.loads(line) for line in (ws.run_dir(r) / "log.jsonl").read_text().splitlines()] for r in ("single", "ddp")]
    for x, y in zip(logs[0][:3], logs[1][:3]):  # the logged loss is the mean over the ranks
        assert y["train"]["loss"] == pytest.approx(x["train"]["loss"], abs=1e-5)
    assert json.loads((ws.run_dir("ddp") / "run.json").read_text())["status"] == "complete"
    assert (ws.run_dir("ddp") / "predictions" / "test.h5").is_file()
    assert not [p for p in ws.root.rglob(".*") if p.name.endswith((".tmp", ".staging"))]


def test_shard_gives_each_rank_every_nth_batch_of_full_groups(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        assert distributed.shard(list(range(8))) == [r, r + 3]  # batches 6, 7 form no full group: dropped
        assert list(distributed.shard(iter(range(8)))) == [r, r + 3]
    assert distributed.sharded_count(8) == 2


@pytest.mark.slow
def test_train_detector_under_torchrun_writes_one_run_from_rank_0(tmp_path):
    from sgg_fixtures import save_tiny

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, with_images=True, splits=(8, 1, 2))
    done = torchrun(ws.root, "train-detector", "--epochs", "1", "--batch-size", "2", "--name", "det", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert ws.runs() == ["det"]
    log = [json.loads(line) for line in (ws.run_dir("det") / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2]  # 8 images / (2 per rank x 2 ranks)
    assert (ws.run_dir("det") / "metrics.json").is_file() and (ws.run_dir("det") / "checkpoints" / "model.pt").is_file()
