"""The tensor head (Dupty, Zhang, Lee 2020): label-free inputs, the PredCls slice and the SGCls joint
top-k against the explicit tensor, k per box pair, X_sel and the prior switches, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgg_fixtures import tiny_graphs
from sgtool.data.graphs import offsets_from_counts
from sgtool.data.predictions import Predictions, read_predictions
from sgtool.data.synth import prepare_synth
from sgtool.engine.loop import run_loop
from sgtool.engine.objects import unlabelled_gt_objects
from sgtool.eval import evaluate
from sgtool.heads import ObjectPredictions, TrainData, gt_objects, make_config
from sgtool.heads.tensor import TensorHead, label_free_pair_inputs, selection_pairs
from sgtool.losses.tensor import log_full_tensor
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

C, P = 5, 4  # tiny vocabulary sizes with background


def tiny_data() -> TrainData:
    graphs = tiny_graphs()
    train_split = graphs.split_subset("train")
    return TrainData(train_split, graphs.split_subset("test"), None, compute_priors(train_split, C, P), "cpu", 0)


def tensor_head(**settings) -> TensorHead:
    return TensorHead(make_config(TensorHead, {"hidden": 16, "sel_hidden": 8, "mask_size": 16, "spatial_dim": 8,
                                               **settings}), C, P)


def trained(tmp_path, **settings) -> tuple[TensorHead, TrainData]:
    data = tiny_data()
    head = tensor_head(**{"epochs": 1, "sel_epochs": 1, "rank": 3, **settings})
    run_loop(head, data, tmp_path, lambda: {})
    return head, data


def explicit(head: TensorHead, objects: ObjectPredictions, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the explicit (M, S, P, O) probability tensor ψ_c (normalised) and P(sel) of the pairs."""
    model = head.model
    inputs = label_free_pair_inputs(objects.box_offsets, objects.boxes, pairs[:, 0], pairs[:, 1], head.config.mask_size)
    with torch.no_grad():
        branch = model.inputs(inputs)
        log_y = log_full_tensor(*model.factors(branch))
        sel = model.sel(branch[2]).squeeze(1).sigmoid().numpy()
    y = log_y.exp().numpy()
    return y / y.sum((1, 2, 3), keepdims=True), sel


def test_predcls_distribution_is_the_tensor_slice_times_the_prior_times_sel(tmp_path):
    head, data = trained(tmp_path, k="10")
    objects = gt_objects(data.val)
    pred = head.predict(objects)
    assert pred.pair_labels is None
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, rtol=1e-5)
    y, sel = explicit(head, objects, pred.pairs)
    s, o = pred.labels[pred.pairs[:, 0]], pred.labels[pred.pairs[:, 1]]
    sliced = y[np.arange(len(s)), s, 1:, o] * data.priors["triplet_prior"][s, o, 1:]
    expected = sliced / sliced.sum(1, keepdims=True) * sel[:, None]
    np.testing.assert_allclose(pred.rel_scores[:, 1:], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.rel_scores[:, 0], 1 - sel, rtol=1e-5)


def test_sgcls_rows_are_the_joint_top_k_of_the_explicit_tensor(tmp_path):
    head, data = trained(tmp_path, k="10")
    objects = unlabelled_gt_objects(data.val)
    pred = head.predict(objects)
    assert pred.pair_labels is not None and (pred.pair_labels >= 1).all()
    box_pairs = np.unique(pred.pairs, axis=0)
    y, sel = explicit(head, objects, box_pairs)
    prior = data.priors["triplet_prior"].transpose(0, 2, 1)[1:, 1:, 1:]  # [s, p, o] foreground
    joint = y[:, 1:, 1:, 1:] * prior
    joint = joint / joint.sum((1, 2, 3), keepdims=True) * sel[:, None, None, None]
    for b, (subj, obj) in enumerate(box_pairs):
        rows = np.flatnonzero((pred.pairs[:, 0] == subj) & (pred.pairs[:, 1] == obj))
        written = {(int(pred.pair_labels[r, 0]), int(q), int(pred.pair_labels[r, 1])): pred.rel_scores[r, q]
                   for r in rows for q in np.flatnonzero(pred.rel_scores[r, 1:]) + 1}
        flat = joint[b].ravel()
        best = np.argsort(-flat)[:10]
        expected = {(int(i) + 1, int(j) + 1, int(k) + 1): flat[f]
                    for f, (i, j, k) in zip(best, np.array(np.unravel_index(best, joint[b].shape)).T)}
        assert written.keys() == expected.keys()
        np.testing.assert_allclose([written[t] for t in expected], list(expected.values()), rtol=1e-4, atol=1e-7)
    assert len(np.unique(np.stack([pred.pairs[:, 0], pred.pairs[:, 1], *pred.pair_labels.T], 1), axis=0)) == len(pred.pairs)


def test_no_label_enters_the_network_in_sgcls(tmp_path):
    head, data = trained(tmp_path)
    objects = unlabelled_gt_objects(data.val)
    rng = np.random.default_rng(3)
    noisy = ObjectPredictions(objects.image_ids, objects.box_offsets, objects.boxes,
                              rng.integers(1, C, len(objects.labels)), objects.scores, labels_given=False)
    a, b = head.predict(objects), head.predict(noisy)
    for name in ("pairs", "pair_labels", "rel_scores", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # in PredCls the given labels select the slice, so other labels give other scores
    given = gt_objects(data.val)
    shuffled = ObjectPredictions(given.image_ids, given.box_offsets, given.boxes, rng.permutation(given.labels),
                                 given.scores)
    assert not np.allclose(head.predict(given).rel_scores, head.predict(shuffled).rel_scores)


def test_k_1_and_k_free_write_different_predictions(tmp_path):
    head, data = trained(tmp_path, k="1")
    objects = unlabelled_gt_objects(data.val)
    one = head.predict(objects)
    head.config.k = "free"
    head.model.free_k.fill_(5)
    free = head.predict(objects)
    assert len(one.pairs) == len(np.unique(one.pairs, axis=0))  # one triplet, hence one row, per box pair
    assert ((one.rel_scores[:, 1:] > 0).sum(1) == 1).all()
    assert (free.rel_scores[:, 1:] > 0).sum() == 5 * len(np.unique(one.pairs, axis=0))
    assert len(free.pairs) > len(one.pairs)


def test_select_k_keeps_the_best_of_the_grid_in_the_state(tmp_path):
    head, _ = trained(tmp_path, k_grid="1,3,7")
    seen = []
    recalls = head.select_k(lambda grid: seen.append((grid, head.triplets_per_pair())) or {1: .2, 3: .5, 7: .5})
    assert seen == [([1, 3, 7], 7)] and recalls[3] == .5
    assert head.triplets_per_pair() == 3  # the smallest of the tied best
    other = tensor_head(rank=3, k_grid="1,3,7")
    other.load_state_dict(head.state_dict())
    assert other.triplets_per_pair() == 3


def best_per_box_pair(pred: Predictions) -> np.ndarray:
    _, group = np.unique(pred.pairs, axis=0, return_inverse=True)
    best = np.zeros(group.max() + 1)
    np.maximum.at(best, group.ravel(), pred.rel_scores[:, 1:].max(1))
    return best


def test_prior_and_sel_switches_change_the_scores(tmp_path):
    head, data = trained(tmp_path, k="10")
    objects = unlabelled_gt_objects(data.val)
    base = head.predict(objects)
    head.config.prior = False
    no_prior = head.predict(objects)
    head.config.prior, head.config.sel = True, False
    no_sel = head.predict(objects)
    assert not np.allclose(best_per_box_pair(base), best_per_box_pair(no_prior))
    # without X_sel a pair's kept triplets carry its joint probabilities alone (P(sel) = 1): larger scores
    assert (best_per_box_pair(no_sel) >= best_per_box_pair(base) - 1e-7).all()
    assert best_per_box_pair(no_sel).sum() > best_per_box_pair(base).sum()
    assert tensor_head(sel=False).phases() == [("triplet", 10)]
    assert [p for p, _ in tensor_head(sel_epochs=3).phases()] == ["triplet", "sel"]


def test_paper_preset_is_sgd_at_1e_4():
    paper = make_config(TensorHead, {"preset": "paper"})
    cpu = make_config(TensorHead, {})
    assert (paper.optimizer, paper.lr) == ("sgd", 1e-4) and (cpu.optimizer, cpu.lr) == ("adam", 1e-3)
    assert paper.grad_clip == 20.0


def test_the_sel_phase_leaves_the_triplet_network_unchanged(tmp_path):
    head, states = tensor_head(epochs=2, sel_epochs=2), []
    run_loop(head, tiny_data(), tmp_path, lambda: states.append(head.state_dict()["model"]) or {})
    assert len(states) == 4
    after_triplets, after_sel = states[1], states[3]
    triplet_keys = [k for k in after_sel if not k.startswith("sel.") and k != "sel_trained"]
    assert any(k.startswith("masks.") for k in triplet_keys) and any(k.startswith("predicate.") for k in triplet_keys)
    for key in triplet_keys:
        assert torch.equal(after_triplets[key], after_sel[key]), key
    assert not torch.equal(after_triplets["sel.0.weight"], after_sel["sel.0.weight"])
    assert not torch.equal(states[0]["predicate.0.weight"], states[1]["predicate.0.weight"])  # trained in phase 1
    assert bool(after_sel["sel_trained"]) and not bool(after_triplets["sel_trained"])


def test_sel_pairs_are_balanced_per_image():
    graphs = tiny_graphs().split_subset("train")
    subj, obj, selected = selection_pairs(graphs, np.random.default_rng(0))
    image = graphs.image_of_box()[subj]
    annotated = {tuple(p) for p in graphs.relations.pairs}
    assert all(((s, o) in annotated) == bool(y) for s, o, y in zip(subj, obj, selected))
    assert np.all(graphs.image_of_box()[obj] == image) and np.all(subj != obj)
    pos = np.bincount(image[selected == 1], minlength=graphs.num_images)
    neg = np.bincount(image[selected == 0], minlength=graphs.num_images)
    possible = graphs.box_counts() * (graphs.box_counts() - 1) - pos
    np.testing.assert_array_equal(neg, np.minimum(pos, possible))


def test_k_per_pair_counts_every_row_of_a_box_pair():
    """Two rows (labellings) of one box pair: k1 keeps only the best entry over both rows."""
    graphs = tiny_graphs(splits=(0, 0, 1))
    rels = graphs.relations
    s, o = rels.pairs[0]
    gt_s, gt_o = graphs.labels[s], graphs.labels[o]
    other = gt_s % (C - 1) + 1
    pairs = np.array([[s, o], [s, o]])
    rel = np.zeros((2, P), np.float32)
    rel[0, 1 + (rels.predicates[0] % (P - 1))] = 0.6  # a wrong predicate with a wrong subject label, best
    rel[1, rels.predicates[0]] = 0.3  # the GT triplet, second
    pred = Predictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, graphs.labels, np.ones(len(graphs.labels),
                       np.float32), offsets_from_counts(np.array([2])), pairs, rel,
                       pair_labels=np.array([[other, gt_o], [gt_s, gt_o]]))
    metrics = evaluate(graphs, pred, task="sgcls", num_predicates=P, ks=(50,), top_k_per_pair=(1, 2)).metrics
    n = len(rels)
    assert metrics["k1-R@50"] == 0 and metrics["k2-R@50"] == pytest.approx(1 / n)


def test_tensor_sgcls_through_the_cli_uses_no_label_and_evaluates(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    prepare_synth(ws, images=40, workers=1)
    trained_run = cli("-w", ws.root, "--quiet", "train", "--head", "tensor", "--rank", "5", "--task", "sgcls",
                      "--epochs", "1", "--set", "sel_epochs=1", "--set", "hidden=16", "--set", "k_grid=1,4", "--json")
    assert trained_run.code == 0, trained_run.err
    name = json.loads(trained_run.out)["run"]
    run = ws.run_dir(name)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r.get("phase") for r in records] == ["triplet", "sel", None]
    state = torch.load(run / "checkpoints" / "model.pt", weights_only=False)
    assert int(state["model"]["model"]["free_k"]) in (1, 4) and set(state["loop"]["free_k"]) == {"1", "4"}
    written = read_predictions(run / "predictions" / "val.h5")
    assert written.pair_labels is not None
    # randomise the split's GT labels: the predictions do not change
    from sgtool.data.prepared import load_prepared
    from sgtool.engine.train import load_trained_head

    head, _, _ = load_trained_head(ws, name)
    val = load_prepared(ws, "synth").graphs.split_subset("val")
    val.labels[:] = np.random.default_rng(0).integers(1, 15, len(val.labels))
    again = head.predict(unlabelled_gt_objects(val)).ranked()
    np.testing.assert_array_equal(again.pair_labels, written.pair_labels)
    np.testing.assert_allclose(again.rel_scores, written.rel_scores, rtol=1e-6)
    evaluated = cli("-w", ws.root, "--quiet", "eval", "--json")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)["metrics"]
    for key in ("phr-R@50", "k1-R@50", "k10-R@50", "kfree-R@50", "R@50"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["kfree-R@50"] >= metrics["k1-R@50"]


@pytest.mark.parametrize("args, words", [
    (["--head", "tensor", "--rank", "0"], "--rank must be at least 1, not 0."),
    (["--head", "tensor", "--k", "3"], "--k must be one of 1, 10, free, not '3'"),
    (["--head", "freq", "--rank", "5"], "The freq head does not take --rank"),
    (["--head", "tensor", "--set", "features=visual"], "features=visual needs images"),
    (["--head", "tensor", "--set", "k_grid=0,2"], "k_grid must list positive whole numbers"),
    (["--head", "tensor", "--set", "preset=fast"], "preset must be one of cpu, paper"),
])
def test_bad_tensor_options_exit_2_with_one_sentence(tmp_path, cli, args, words):
    from sgg_fixtures import save_tiny

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", *args)
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())
