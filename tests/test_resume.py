"""`sgtool train --resume RUN`: a run killed with SIGKILL mid-training continues to exactly the same result."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions
from sgtool.engine.loop import LAST, load_state
from sgtool.workspace import Workspace

TRAIN = ["train", "--head", "tensor", "--epochs", "3", "--batch-size", "1", "--set", "sel_epochs=2"]  # 24 steps an epoch
# The run in a process of its own, on one thread, that stops after optimiser step STEP of the loop whose folder is
# FOLDER, writes MARKER and waits there to be killed: the kill comes at that step on any machine, fast or slow.
LAUNCH = """
import sys, time, torch
from pathlib import Path
from sgtool.engine.hooks import CheckpointHook
folder, step, marker = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
def wait_at_step(self, loop, terms):
    if Path(loop.folder) == folder and loop.state.step == step:
        marker.write_text(str(step))
        time.sleep(600)  # the test kills the process here
        sys.exit(1)
CheckpointHook.after_step = wait_at_step
torch.set_num_threads(1)
from sgtool.cli import main
main(sys.argv[4:])
"""


def _launch_until(folder: Path, step: int, marker: Path, ws: Path, args: list[str], name: str) -> subprocess.Popen:
    """`sgtool -w WS -q ARGS --name NAME`, held after optimiser step `step` of the loop in `folder`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, str(folder), str(step), str(marker), "-w", str(ws), "-q",
                             *args, "--name", name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_at_step(proc: subprocess.Popen, marker: Path) -> None:
    """SIGKILL the run once it waits at its step (the marker exists)."""
    deadline = time.time() + 900  # a hang guard, not a timing: a crowded machine can take minutes to get there
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the run did not reach its step within 15 minutes"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "model.pt", map_location="cpu", weights_only=False)["model"]["model"]


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_same_weights_and_metrics(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    killed, marker = ws.run_dir("killed"), tmp_path / "at-step"
    proc = _launch_until(killed, 3 * 24 + 12, marker, ws.root, TRAIN, "killed")  # mid X_sel phase, after epoch 3
    _kill_at_step(proc, marker)
    assert proc.returncode == -signal.SIGKILL
    status = json.loads((killed / "run.json").read_text())["status"]
    assert status == "running" and not (killed / "metrics.json").exists()
    saved = load_state(killed / "checkpoints" / LAST)["loop"]
    assert (saved["epoch"], saved["step"]) == (3, 72)  # the kill lost the 12 steps after the last checkpoint
    # atomic writes: a kill mid-write may leave a temp file beside it, never a half-written checkpoint
    assert all(path.suffix == ".tmp" for path in killed.rglob(".*"))

    straight = cli("-w", ws.root, "-q", *TRAIN, "--name", "straight")
    resumed = cli("-w", ws.root, "-q", "train", "--resume", "killed")
    assert straight.code == 0 and resumed.code == 0, resumed.err
    a, b = _weights(ws.run_dir("straight")), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # exact on CPU
    metrics = [json.loads((ws.run_dir(r) / "metrics.json").read_text())["metrics"] for r in ("straight", "killed")]
    assert metrics[0] == metrics[1]
    for split in ("val", "test"):
        p, q = (read_predictions(ws.run_dir(r) / "predictions" / f"{split}.h5") for r in ("straight", "killed"))
        assert np.array_equal(p.rel_scores, q.rel_scores) and np.array_equal(p.pairs, q.pairs)
    epochs = [json.loads(line)["epoch"] for line in (killed / "log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert epochs == list(range(1, 6))
    assert json.loads((killed / "run.json").read_text())["status"] == "complete"
    assert not list(killed.rglob(".*.tmp"))  # resume removes what the kill left


def test_resume_refuses_complete_runs_other_heads_and_new_settings(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    assert cli("-w", ws.root, "-q", "train", "--head", "tensor", "--epochs", "1", "--name", "done",
               "--set", "sel_epochs=0").code == 0
    assert cli("-w", ws.root, "-q", "train", "--head", "freq", "--name", "counts").code == 0
    run = ws.run_dir("done")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "running"}))
    cases = [
        (["--resume", "nope"], "No run named 'nope'"),
        (["--resume", "counts"], "not a run of a trainable relation head"),
        (["--resume", "done", "--head", "reldn"], "trains the tensor head, not reldn"),
        (["--resume", "done", "--dataset", "other"], "trains on 'tiny', not 'other'"),
        (["--resume", "done", "--epochs", "5"], "does not take --epochs"),
    ]
    for args, words in cases:
        before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}
        result = cli("-w", ws.root, "train", *args)
        assert result.code == 2 and words in result.err and "Traceback" not in result.err, (args, result.err)
        assert before == {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}
    (run / "checkpoints" / LAST).unlink()
    assert "before its first checkpoint" in cli("-w", ws.root, "train", "--resume", "done").err
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "complete"}))
    result = cli("-w", ws.root, "train", "--resume", "done")
    assert result.code == 2 and "is complete; there is nothing to resume" in result.err


def test_the_same_seed_gives_the_same_predictions_and_metrics(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    args = ["train", "--head", "tensor", "--epochs", "3", "--set", "sel_epochs=1"]
    for name, seed, extra in (("a", 0, []), ("b", 0, ["--set", "deterministic=true"]), ("c", 1, [])):
        assert cli("-w", ws.root, "-q", "--seed", seed, *args, *extra, "--name", name).code == 0
    torch.use_deterministic_algorithms(False)
    metrics = {r: json.loads((ws.run_dir(r) / "metrics.json").read_text())["metrics"] for r in "abc"}
    assert metrics["a"] == metrics["b"]
    for split in ("val", "test"):
        a, b, c = (read_predictions(ws.run_dir(r) / "predictions" / f"{split}.h5") for r in "abc")
        for field in ("boxes", "labels", "scores", "pairs", "rel_scores", "pair_offsets"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert not np.array_equal(a.rel_scores, c.rel_scores)  # another seed, other numbers


# ---------------------------------------------------------------- every kind on the one loop

HEAD = ["--batch-size", "8", "--set", "val_every=100"]
KINDS = {  # small networks, 3 batches per epoch, validation at the end only: seconds per run
    "tensor": ["train", "--head", "tensor", *HEAD, "--epochs", "4", "--set", "sel_epochs=1", "--set", "hidden=16"],
    "reldn": ["train", "--head", "reldn", *HEAD, "--epochs", "4", "--set", "spatial_hidden=16", "--set", "visual_hidden=16"],
    "nodis": ["train", "--head", "nodis", *HEAD, "--epochs", "4", "--set", "hidden=16", "--set", "embed=8",
              "--set", "mask_size=8"],
    "iwsl": ["train", "--head", "iwsl", *HEAD, "--epochs", "4", "--samples", "2", "--set", "hidden=16"],
    # two seeds of a narrow auto-encoder on 56 Simple Shape drawings (3 batches per epoch); the kill comes
    # in the second seed, so the first is kept from the run's progress and the second resumed
    "ae": ["train", "--head", "ae", "--epochs", "4", "--batch-size", "16", "--seeds", "2", "--set", "width=8",
           "--set", "threads=1"],
    # the tiny Faster R-CNN on 8 blank 100-px images, 4 batches per epoch; an epoch budget (a time budget's
    # lr follows the clock, so it cannot repeat exactly)
    "detector": ["train-detector", "--epochs", "4", "--batch-size", "2", "--threads", "1"],
}
BATCHES = {"ae": 3, "detector": 4}  # per epoch; 3 for the relation heads


def _kill_step(kind: str) -> int:
    """The step a kind is killed after: from a generator seeded by its name, in epoch 2 or 3 (after a checkpoint)."""
    per_epoch = BATCHES.get(kind, 3)
    return random.Random(kind).randint(per_epoch + 1, 3 * per_epoch)


def _same(a, b) -> bool:
    """Equal nested states: tensors and arrays bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_sigkilled_at_a_step_mid_epoch_resumes_bit_identical(tmp_path, cli, kind):
    ws = Workspace(tmp_path / "ws")
    if kind == "ae":
        from sgtool.data.shapes import prepare_shapes

        prepare_shapes(ws, images=70, seed=0, workers=1)
    else:
        save_tiny(ws, **({"with_images": True, "splits": (8, 1, 2)} if kind == "detector" else {}))
    args = KINDS[kind]
    folder = ws.run_dir("killed") / ("training/seed1" if kind == "ae" else "")  # ae: the second seed's loop
    marker = tmp_path / "at-step"
    step = _kill_step(kind)
    proc = _launch_until(folder, step, marker, ws.root, args, "killed")
    _kill_at_step(proc, marker)
    assert proc.returncode == -signal.SIGKILL
    assert load_state(folder / "checkpoints" / LAST)["loop"]["epoch"] == (step - 1) // BATCHES.get(kind, 3)
    assert not (ws.run_dir("killed") / "metrics.json").exists()
    assert json.loads((ws.run_dir("killed") / "run.json").read_text())["status"] == "running"

    straight = cli("-w", ws.root, "-q", *args, "--name", "straight")
    resumed = cli("-w", ws.root, "-q", args[0], "--resume", "killed")
    assert straight.code == 0 and resumed.code == 0, resumed.err
    if kind == "ae":
        _same_ae_runs(ws.run_dir("straight"), ws.run_dir("killed"))
        return
    a, b = (torch.load(ws.run_dir(r) / "checkpoints" / "model.pt", weights_only=False)["model"] for r in ("straight", "killed"))
    assert _same(a, b)  # the seconds trained are the clock hook's (in last.pt), not the model's  # exact on CPU
    if kind == "detector":
        metrics = [json.loads((ws.run_dir(r) / "metrics.json").read_text())["metrics"] for r in ("straight", "killed")]
        assert metrics[0]["mAP"] == metrics[1]["mAP"] and metrics[0]["AP_per_class"] == metrics[1]["AP_per_class"]
        return
    for split in ("val", "test"):
        p, q = (read_predictions(ws.run_dir(r) / "predictions" / f"{split}.h5") for r in ("straight", "killed"))
        assert np.array_equal(p.rel_scores, q.rel_scores) and np.array_equal(p.labels, q.labels)


def _same_ae_runs(straight: Path, killed: Path) -> None:
    """Every seed's weights and predictions bit for bit, the same validation scores, each step logged once."""
    assert json.loads((killed / "run.json").read_text())["seeds"] == [0, 1]
    for seed in (0, 1):
        a, b = (torch.load(r / "checkpoints" / f"model-seed{seed}.pt", weights_only=False)["model"] for r in (straight, killed))
        assert _same(a, b), seed
        for split in ("val", "test"):
            p, q = (read_predictions(r / "predictions" / f"seed{seed}" / f"{split}.h5") for r in (straight, killed))
            assert np.array_equal(p.rel_scores, q.rel_scores) and np.array_equal(p.boxes, q.boxes)
    metrics = [json.loads((r / "metrics.json").read_text())["per_seed"] for r in (straight, killed)]
    assert metrics[0] == metrics[1]
    epochs = [(r["seed"], r["epoch"]) for r in map(json.loads, (killed / "log.jsonl").read_text().splitlines())
              if r["event"] == "epoch"]
    assert epochs == [(seed, epoch) for seed in (0, 1) for epoch in range(1, 5)]
    assert json.loads((killed / "run.json").read_text())["status"] == "complete"


def test_the_checkpoint_carries_a_heads_own_generator():
    from sgtool.engine.checkpoint import rng_states, set_rng_states
    from sgtool.heads import get_head, make_config

    iwsl = get_head("iwsl")
    head = iwsl(make_config(iwsl, {}), 5, 4)
    head.generator.manual_seed(7)
    torch.rand(3, generator=head.generator)  # somewhere mid-training
    rng = np.random.default_rng(0)
    saved = rng_states(rng, head)
    expected = torch.rand(5, generator=head.generator)
    fresh = iwsl(make_config(iwsl, {}), 5, 4)  # a resumed process: the generator re-seeded by build
    assert not torch.equal(torch.rand(5, generator=fresh.generator), expected)
    set_rng_states(saved, rng, fresh)
    assert torch.equal(torch.rand(5, generator=fresh.generator), expected)
