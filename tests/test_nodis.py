"""The nodis head (neural ODE scene understanding): shapes, NFE, adjoint, front ends, validation, training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgg_fixtures import losses_over_steps, save_tiny, tiny_graphs
from sgtool.data.graphs import ordered_pairs
from sgtool.errors import SgtoolError
from sgtool.heads import TrainData, get_head, gt_objects, make_config
from sgtool.heads.nodis import NodisHead
from sgtool.workspace import Workspace

C, P = 5, 4  # tiny vocabulary sizes with background
SMALL = {"hidden": 16, "embed": 8, "mask_size": 8, "batch_size": 4, "t_end": 0.5}


class FakeVisual:
    dim = 6

    def __call__(self, image_ids, box_offsets, boxes, pairs):
        s, o = torch.from_numpy(boxes[pairs[:, 0]]), torch.from_numpy(boxes[pairs[:, 1]])
        return {"subject": torch.cat([s, s[:, :2]], 1) / 100, "object": torch.cat([o, o[:, :2]], 1) / 100,
                "union": torch.cat([s - o, s[:, :2] + o[:, :2]], 1) / 100}


def built(visual: bool = False, **settings) -> tuple[NodisHead, object]:
    graphs = tiny_graphs(splits=(8, 2, 4))
    head = NodisHead(make_config(NodisHead, {**SMALL, **settings}), C, P)
    if visual:
        head.attach_visual(FakeVisual())
    head.build(TrainData(graphs.split_subset("train"), graphs.split_subset("val"), None, {}))
    return head, graphs


def first_batch(head: NodisHead, graphs):
    return next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))


def test_registered_and_loss_terms():
    assert get_head("nodis") is NodisHead
    head, graphs = built()
    batch = first_batch(head, graphs)
    terms = head.loss(batch)
    assert terms["loss"].ndim == 0 and terms["loss"].requires_grad
    assert terms["nfe"] == terms["nfe_object"] + terms["nfe_pair"] and terms["nfe_object"] > 0 and terms["nfe_pair"] > 0
    out = head.model(batch)
    assert out["object_logits"].shape == (len(batch.labels), C)
    assert out["predicate_logits"].shape == (len(batch.pairs), P)
    annotated = graphs.split_subset("train").select(np.arange(4)).relations
    assert int((batch.targets > 0).sum()) == len(annotated)  # every annotated pair of the 4 images is in the batch
    assert len(batch.pairs) <= 4 * len(annotated) + 4  # and at most bg_ratio = 3 unannotated ones per annotated


def test_nfe_grows_with_t_end():
    head, graphs = built()
    with torch.no_grad():  # a fast-changing vector field, so the step-size control has work to do
        for p in head.model.pair_ode.parameters():
            p.mul_(4)
    batch = first_batch(head, graphs)
    nfe = []
    for t_end in (0.05, 3.0):
        head.config.t_end = t_end
        nfe.append(head.model(batch)["pair_nfe"])
    assert 0 < nfe[0] < nfe[1]


def test_adjoint_and_plain_solve_give_the_same_forward_output():
    head, graphs = built()
    batch = first_batch(head, graphs)
    plain = head.model(batch)["predicate_logits"]
    head.config.adjoint = True
    adjoint = head.model(batch)
    torch.testing.assert_close(adjoint["predicate_logits"], plain)
    head.loss(batch)["loss"].backward()  # the adjoint backward pass runs
    assert head.model.pair_ode.net[0].weight.grad is not None


@pytest.mark.parametrize("front_end", ["fc", "gcn", "lstm"])
def test_each_front_end_lowers_the_loss_in_a_few_steps(front_end):
    head, graphs = built(front_end=front_end)
    batch = first_batch(head, graphs)
    losses, _ = losses_over_steps(head, batch)
    assert losses[-1] < 0.8 * losses[0]


def test_predictions_layout_stats_and_checkpoint_round_trip():
    head, graphs = built(visual=True)
    test = graphs.split_subset("test")
    pred = head.predict(gt_objects(test))
    _, subj, obj = ordered_pairs(test.box_offsets)
    assert pred.rel_scores.shape == (len(subj), P)
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, atol=1e-5)
    assert sorted(map(tuple, pred.pairs)) == sorted(zip(subj, obj))
    np.testing.assert_array_equal(pred.labels, test.labels)  # PredCls keeps the given labels
    assert head.predict_stats["nfe_per_image"] > 0
    again = NodisHead(head.config, C, P)
    again.attach_visual(FakeVisual())
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again.predict(gt_objects(test)).rel_scores, pred.rel_scores, atol=1e-6)
    bare = NodisHead(head.config, C, P)
    bare.load_state_dict(head.state_dict())
    with pytest.raises(SgtoolError, match="visual features"):
        bare.predict(gt_objects(test))


def test_relabel_replaces_labels_with_the_object_classifier():
    head, graphs = built(relabel=True)
    pred = head.predict(gt_objects(graphs.split_subset("test")))
    assert pred.labels.min() >= 1 and pred.labels.max() < C and np.all((pred.scores > 0) & (pred.scores <= 1))


@pytest.mark.parametrize("settings, words", [
    ({"t_end": 0}, "--t-end must be positive"),
    ({"t_end": -1.0}, "--t-end must be positive"),
    ({"front_end": "rnn"}, "Unknown NODIS front end 'rnn'"),
    ({"atol": 0}, "atol and rtol must be positive"),
])
def test_bad_settings_are_one_sentence(settings, words):
    with pytest.raises(SgtoolError, match=words):
        make_config(NodisHead, settings)


@pytest.mark.parametrize("args, words", [
    (["--t-end", "0"], "--t-end must be positive, not 0.0."),
    (["--front-end", "rnn"], "Unknown NODIS front end 'rnn'"),
])
def test_bad_cli_options_exit_2(tmp_path, cli, args, words):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "nodis", *args)
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())


def test_trains_through_the_cli_and_logs_nfe(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(8, 3, 3))
    result = cli("-w", ws.root, "--quiet", "train", "--head", "nodis", "--epochs", "1", "--t-end", "0.5",
                 "--front-end", "gcn", "--set", "hidden=16", "--set", "mask_size=8", "--json")
    assert result.code == 0, result.err
    run = ws.run_dir(json.loads(result.out)["run"])
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r.get("event") == "epoch")
    assert epoch["train"]["nfe"] > 0
    import yaml

    options = yaml.safe_load((run / "config.yaml").read_text())["options"]
    assert (options["t_end"], options["front_end"]) == (0.5, "gcn")
