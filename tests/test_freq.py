"""The freq head (Motifs FREQ): numbers against a brute-force computation, candidates, the train stage."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from sgg_fixtures import save_tiny, tiny_graphs
from sgtool.data.predictions import read_predictions, vocabulary_fingerprint
from sgtool.engine.train import train
from sgtool.errors import SgtoolError
from sgtool.heads import ObjectPredictions, available_heads, get_head, gt_objects, make_config
from sgtool.heads._pairs import cap_boxes
from sgtool.heads.freq import FreqHead, all_pair_counts, candidate_pairs
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

C, P = 5, 4  # tiny vocabulary sizes with background


def fitted_head(overlap: bool) -> tuple[FreqHead, object, dict]:
    graphs = tiny_graphs()
    train_split = graphs.split_subset("train")
    priors = compute_priors(train_split, C, P)
    head = FreqHead(make_config(FreqHead, {"overlap": overlap}), C, P)
    from sgtool.heads import TrainData

    head.fit(TrainData(train_split, graphs.split_subset("val"), None, priors), None)
    return head, graphs, priors


def brute_force_table(train, overlap: bool, priors: dict) -> np.ndarray:
    fg = np.zeros((C, C, P))
    for (s, o), p in zip(train.relations.pairs, train.relations.predicates):
        fg[train.labels[s], train.labels[o], p] += 1
    bg = np.zeros((C, C))
    for i in range(train.num_images):
        rows = range(train.box_offsets[i], train.box_offsets[i + 1])
        pairs = [(a, b) for a in rows for b in rows if a != b]
        if overlap:
            def hits(a, b):
                ba, bb = train.boxes[a], train.boxes[b]
                return min(ba[2], bb[2]) - max(ba[0], bb[0]) > 0 and min(ba[3], bb[3]) - max(ba[1], bb[1]) > 0
            pairs = [pq for pq in pairs if hits(*pq)] or pairs
        for a, b in pairs:
            bg[train.labels[a], train.labels[b]] += 1
    fg[:, :, 0] = bg + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(fg / fg.sum(2, keepdims=True) + 1e-3)


@pytest.mark.parametrize("overlap", [False, True])
def test_freq_predictions_equal_brute_force(overlap):
    head, graphs, priors = fitted_head(overlap)
    train_split, test = graphs.split_subset("train"), graphs.split_subset("test")
    table = brute_force_table(train_split, overlap, priors)
    np.testing.assert_allclose(head.log_freq, table, rtol=1e-5, atol=1e-6)
    pred = head.predict(gt_objects(test))
    got = {(int(s), int(o)): pred.rel_scores[m] for m, (s, o) in enumerate(pred.pairs)}
    expected_pairs = set()
    for i in range(test.num_images):
        rows = range(test.box_offsets[i], test.box_offsets[i + 1])
        expected_pairs |= {(a, b) for a in rows for b in rows if a != b}
    if not overlap:
        assert set(got) == expected_pairs
    for (s, o), dist in got.items():
        probs = np.exp(table[test.labels[s], test.labels[o]])
        np.testing.assert_allclose(dist, probs / probs.sum(), rtol=1e-5)
    best = np.array([got[k][1:].max() for k in got])
    np.testing.assert_allclose(np.sort(pred.triplet_scores()), np.sort(best), rtol=1e-6)


def test_all_pair_counts_match_loops():
    graphs = tiny_graphs()
    counts = np.zeros((C, C), np.int64)
    for i in range(graphs.num_images):
        rows = range(graphs.box_offsets[i], graphs.box_offsets[i + 1])
        for a in rows:
            for b in rows:
                if a != b:
                    counts[graphs.labels[a], graphs.labels[b]] += 1
    np.testing.assert_array_equal(all_pair_counts(graphs, C), counts)


def test_overlap_candidates_on_hand_made_boxes():
    boxes = np.array([
        [0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30],  # image 0: only 0 and 1 overlap
        [0, 0, 10, 10], [10, 0, 20, 10], [50, 50, 60, 60],  # image 1: touching is not overlapping -> all pairs
        [0, 0, 40, 40], [10, 10, 20, 20], [30, 30, 50, 50],  # image 2: 0-1 and 0-2 overlap, 1-2 do not
    ], dtype=np.float32)
    offsets = np.array([0, 3, 6, 9])
    image, subj, obj = candidate_pairs(offsets, boxes, overlap=True)
    got = {(int(i), int(s), int(o)) for i, s, o in zip(image, subj, obj)}
    assert got == {(0, 0, 1), (0, 1, 0),
                   (1, 3, 4), (1, 4, 3), (1, 3, 5), (1, 5, 3), (1, 4, 5), (1, 5, 4),
                   (2, 6, 7), (2, 7, 6), (2, 6, 8), (2, 8, 6)}
    assert len(candidate_pairs(offsets, boxes, overlap=False)[0]) == 18


def test_sgdet_detections_capped_per_image_by_score():
    objects = ObjectPredictions(np.array([1, 2]), np.array([0, 4, 5]), np.zeros((5, 4), np.float32),
                                np.array([1, 2, 3, 4, 1]), np.array([0.1, 0.9, 0.5, 0.7, 0.3], np.float32), True)
    capped = cap_boxes(objects, 2)
    np.testing.assert_array_equal(capped.box_offsets, [0, 2, 3])
    np.testing.assert_array_equal(capped.labels, [2, 4, 1])


def test_sgcls_uses_the_pluggable_object_source(tmp_path):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)

    def fake_classifier(graphs):  # GT boxes, every label replaced by class 1, scores 0.5
        return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes,
                                 np.ones(len(graphs.labels), np.int64), np.full(len(graphs.labels), 0.5, np.float32))

    result = train(ws, head="freq", task="sgcls", object_source=fake_classifier)
    pred = read_predictions(result.path / "predictions" / "test.h5")
    assert pred.meta["task"] == "sgcls" and set(pred.labels.tolist()) == {1}
    assert np.allclose(pred.triplet_scores(), pred.rel_scores[:, 1:].max(1) * 0.25)


def test_registry_lists_heads_and_refuses_unknown():
    assert "freq" in available_heads()
    assert get_head("freq") is FreqHead
    with pytest.raises(SgtoolError, match="known heads: .*freq"):
        get_head("nope")


# ---------------------------------------------------------------- the train command

def test_train_writes_a_complete_run_and_never_overwrites(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    prepared = save_tiny(ws)
    first = cli("-w", ws.root, "train", "--head", "freq", "--json")
    assert first.code == 0, first.err
    payload = json.loads(first.out)
    run = ws.run_dir(payload["run"])
    assert payload["run"] == "freq-tiny-predcls"
    for part in ("config.yaml", "run.json", "log.jsonl", "metrics.json", "checkpoints/model.npz",
                 "predictions/val.h5", "predictions/test.h5"):
        assert (run / part).is_file(), part
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["head"], config["dataset"], config["task"], config["seed"]) == ("freq", "tiny", "predcls", 0)
    pred = read_predictions(run / "predictions" / "test.h5")
    assert pred.meta["vocabulary_fingerprint"] == vocabulary_fingerprint(prepared.vocab)
    assert (pred.meta["dataset"], pred.meta["split"], pred.meta["head"], pred.meta["run"]) == ("tiny", "test", "freq", run.name)
    with np.load(run / "checkpoints" / "model.npz") as state:
        assert state["log_freq"].shape == (C, C, P)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["R@50"] <= 1
    before = (run / "predictions" / "test.h5").read_bytes()

    second = cli("-w", ws.root, "train", "--head", "freq", "--overlap", "--json")
    assert second.code == 0, second.err
    assert json.loads(second.out)["run"] == "freq-tiny-predcls-2"
    assert (run / "predictions" / "test.h5").read_bytes() == before
    assert json.loads((ws.root / "workspace.json").read_text())["latest_run"] == "freq-tiny-predcls-2"
    info = json.loads(cli("-w", ws.root, "info", "--json").out)
    assert info["runs"]["freq-tiny-predcls-2"]["head"] == "freq"


@pytest.mark.parametrize("args, words", [
    (["--head", "nope"], "known heads: .*freq"),
    (["--task", "sgcls"], "needs images"),
    (["--task", "sgdet"], "needs images"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--set", "bogus=1"], "Unknown setting 'bogus'"),
    (["--dataset", "missing"], "No prepared dataset named 'missing'"),
])
def test_train_refuses_bad_input_and_leaves_workspace_unchanged(tmp_path, cli, args, words):
    import re

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    before = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
    result = cli("-w", ws.root, "train", *args)
    assert result.code == 2
    assert re.search(words, " ".join(result.err.split())), result.err
    assert "Traceback" not in result.err
    assert sorted(p.relative_to(ws.root) for p in ws.root.rglob("*")) == before


def test_train_refuses_an_existing_run_name(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    assert cli("-w", ws.root, "train", "--name", "mine").code == 0
    again = cli("-w", ws.root, "train", "--name", "mine")
    assert again.code == 2 and "already exists" in again.err


def test_checkpoint_reloads_to_the_same_predictions(tmp_path):
    from sgtool.engine.train import load_trained_head

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = train(ws, head="freq", overlap=True)
    model, record, prepared = load_trained_head(ws, result.run)
    assert record.options["overlap"] is True and model.config.overlap is True
    stored = read_predictions(result.path / "predictions" / "test.h5")
    again = model.predict(gt_objects(prepared.graphs.split_subset("test"))).ranked()
    np.testing.assert_array_equal(again.pairs, stored.pairs)
    np.testing.assert_allclose(again.rel_scores, stored.rel_scores)
