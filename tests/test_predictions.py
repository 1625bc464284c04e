"""Predictions files: ranked on disk, and refused by `eval` when made for another dataset."""
from __future__ import annotations

import shutil

import numpy as np

from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions, write_predictions
from sgtool.engine.train import train
from sgtool.heads import get_head, gt_objects, make_config
from sgtool.heads import TrainData
from sgtool.data.prepared import load_prepared_priors
from sgtool.workspace import Workspace


def test_freq_predictions_round_trip_ranked(tmp_path):
    ws = Workspace(tmp_path / "ws")
    prepared = save_tiny(ws)
    head_cls = get_head("freq")
    head = head_cls(make_config(head_cls, {}), prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    graphs = prepared.graphs
    head.fit(TrainData(graphs.split_subset("train"), graphs.split_subset("val"), prepared.vocab,
                       load_prepared_priors(ws, "tiny")), None)
    test = graphs.split_subset("test")
    pred = head.predict(gt_objects(test))
    pred.meta = {"dataset": "tiny"}
    write_predictions(tmp_path / "p.h5", pred)
    back = read_predictions(tmp_path / "p.h5")
    assert back.meta == {"dataset": "tiny"}
    np.testing.assert_array_equal(back.image_ids, test.image_ids)
    np.testing.assert_array_equal(back.pair_offsets, pred.pair_offsets)
    scores, image = back.triplet_scores(), back.image_of_pair()
    assert np.all((np.diff(scores) <= 1e-7) | (np.diff(image) != 0))  # ranked within each image
    key = lambda p: sorted(map(tuple, np.c_[p.pairs, np.round(p.rel_scores, 6)].tolist()))  # noqa: E731
    assert key(back) == key(pred)


def test_eval_refuses_predictions_of_another_dataset(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, "tiny")
    save_tiny(ws, "other", objects=["cat", "sofa", "ball", "box"])
    mine = train(ws, head="freq", dataset="tiny")
    theirs = train(ws, head="freq", dataset="other")
    target = mine.path / "predictions" / "test.h5"
    shutil.copy(theirs.path / "predictions" / "test.h5", target)
    result = cli("-w", ws.root, "eval", "--run", mine.run)
    message = " ".join(result.err.split())
    assert result.code == 2 and "made for 'other'" in message and "vocabulary differs" in message
    assert not ws.report_dir(mine.run).exists()


def test_eval_refuses_predictions_for_other_images(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, "tiny")
    save_tiny(ws, "same-vocab", splits=(24, 6, 5))
    mine = train(ws, head="freq", dataset="tiny")
    theirs = train(ws, head="freq", dataset="same-vocab")
    shutil.copy(theirs.path / "predictions" / "test.h5", mine.path / "predictions" / "test.h5")
    result = cli("-w", ws.root, "eval", "--run", mine.run)
    message = " ".join(result.err.split())
    assert result.code == 2 and "not the 8 test images of 'tiny'" in message
