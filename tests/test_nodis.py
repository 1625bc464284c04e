"""The nodis head (neural ODE scene understanding): shapes, NFE, adjoint, front ends, validation, training,
SGCls labels from the O-ODE without any GT label, the ODE switches and the frequency bias."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from sgg_fixtures import losses_over_steps, save_tiny, tiny_graphs
from sgtool.data.graphs import ordered_pairs
from sgtool.data.predictions import read_predictions
from sgtool.errors import SgtoolError
from sgtool.heads import ObjectPredictions, TrainData, get_head, gt_objects, make_config
from sgtool.heads._relbatch import predict_batches
from sgtool.heads.nodis import ImageSequences, NodisHead, fixed_adjacency_product, noisy_distributions
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
    assert head.model.pair_ode.lstm.weight_ih_l0.grad is not None


@pytest.mark.parametrize("front_end", ["fc", "gcn", "lstm"])
def test_each_front_end_lowers_the_loss_in_a_few_steps(front_end):
    head, graphs = built(front_end=front_end)
    batch = first_batch(head, graphs)
    losses, _ = losses_over_steps(head, batch, steps=12)
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


@pytest.mark.parametrize("settings, words", [
    ({"t_end": 0}, "--t-end must be positive"),
    ({"t_end": -1.0}, "--t-end must be positive"),
    ({"front_end": "rnn"}, "--front-end must be one of fc, gcn, lstm, not 'rnn'"),
    ({"ode": "all"}, "--ode must be one of none, object, pair, both, not 'all'"),
    ({"label_noise": 1.5}, "label_noise must be from 0.0 to 1.0"),
    ({"atol": 0}, "atol and rtol must be positive"),
])
def test_bad_settings_are_one_sentence(settings, words):
    with pytest.raises(SgtoolError, match=words):
        make_config(NodisHead, settings)


@pytest.mark.parametrize("args, words", [
    (["--t-end", "0"], "--t-end must be positive, not 0.0."),
    (["--front-end", "rnn"], "--front-end must be one of fc, gcn, lstm, not 'rnn'"),
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


# ---------------------------------------------------------------- SGCls: labels from the O-ODE, no GT label

def fake_detector_scores(graphs, seed: int = 3) -> np.ndarray:
    """A box classifier that sees only the boxes (a fixed random function of their coordinates)."""
    weights = np.random.default_rng(seed).normal(size=(4, C))
    logits = graphs.boxes / 50 @ weights
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def sgcls_objects(graphs, class_scores=None) -> ObjectPredictions:
    """SGCls objects as a careless source might give them: its `labels` field holds the GT labels."""
    scores = fake_detector_scores(graphs) if class_scores is None else class_scores
    return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, graphs.labels.copy(),
                             scores[np.arange(len(scores)), graphs.labels], labels_given=False, class_scores=scores)


def trained(steps: int = 10, **settings) -> tuple[NodisHead, object]:
    head, graphs = built(visual=True, **settings)
    torch.manual_seed(0)
    losses_over_steps(head, first_batch(head, graphs), steps=steps)
    return head, graphs


def test_sgcls_predictions_do_not_change_when_the_gt_labels_are_randomised():
    head, graphs = trained()
    test = graphs.split_subset("test")
    before = head.predict(sgcls_objects(test))
    shuffled = dataclasses.replace(test, labels=np.random.default_rng(1).integers(1, C, len(test.labels)))
    assert (shuffled.labels != test.labels).mean() > 0.5
    after = head.predict(sgcls_objects(shuffled))
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.rel_scores, before.rel_scores)
    np.testing.assert_array_equal(after.pairs, before.pairs)


def test_sgcls_labels_are_the_o_ode_classifiers_and_follow_its_input_distribution():
    head, graphs = trained()
    test = graphs.split_subset("test")
    objects = sgcls_objects(test)
    pred = head.predict(objects)
    assert NodisHead.labels_objects
    batch = next(iter(predict_batches(test.image_ids, test.box_offsets, test.boxes, test.labels, objects.scores,
                                      len(test.image_ids), head._visual())))
    rng = np.random.default_rng(0)  # the orders predict draws for its one batch
    batch.extra = {"class_dist": torch.from_numpy(objects.class_scores),
                   "order_noise": torch.from_numpy(rng.random(len(batch.pairs))),
                   "object_order": torch.from_numpy(rng.random(len(batch.labels)))}
    with torch.no_grad():
        logits = head.model(batch, own_labels=True)["object_logits"]
    np.testing.assert_array_equal(pred.labels, logits[:, 1:].argmax(1).numpy() + 1)
    chosen = torch.softmax(logits, 1)[torch.arange(len(logits)), torch.from_numpy(pred.labels)]
    np.testing.assert_allclose(pred.scores, chosen.numpy(), atol=1e-6)  # the softmax at the chosen foreground label
    noise = np.random.default_rng(5).dirichlet(np.ones(C), len(test.labels)).astype(np.float32)
    changed = head.predict(sgcls_objects(test, noise))
    assert not np.allclose(changed.rel_scores, pred.rel_scores)  # the detector's distribution reaches the O-ODE
    gt = head.predict(gt_objects(test))
    np.testing.assert_array_equal(gt.labels, test.labels)  # PredCls keeps the GT labels


def test_without_a_detector_the_o_ode_is_trained_on_corrupted_not_clean_gt_distributions():
    labels = np.random.default_rng(0).integers(1, C, 4000)
    dist = noisy_distributions(labels, C, 0.3, np.random.default_rng(1))
    np.testing.assert_allclose(dist.sum(1), 1, atol=1e-5)
    peak = dist.argmax(1)
    assert 0.25 < (peak != labels).mean() < 0.35 and (peak == 0).mean() < 0.02
    assert (dist.max(1) < 0.999).mean() > 0.99  # hardly ever the clean one-hot
    head, graphs = built()
    batch = first_batch(head, graphs)
    assert not np.allclose(batch.extra["class_dist"].numpy(), np.eye(C, dtype=np.float32)[batch.labels.numpy()])


# ---------------------------------------------------------------- switches: ode, frequency bias, front ends

def test_ode_switches_bypass_each_ode_and_change_the_numbers():
    outputs = {}
    for ode in ("none", "object", "pair", "both"):
        head, graphs = trained(steps=4, ode=ode)
        pred = head.predict(sgcls_objects(graphs.split_subset("test")))
        outputs[ode] = pred
        assert (pred.meta["nfe_object"] > 0) == (ode in ("object", "both"))
        assert (pred.meta["nfe_pair"] > 0) == (ode in ("pair", "both"))
        assert pred.meta["nfe_per_image"] == pred.meta["nfe_object"] + pred.meta["nfe_pair"]
    assert not np.allclose(outputs["none"].rel_scores, outputs["both"].rel_scores, atol=1e-3)
    assert not np.allclose(outputs["object"].rel_scores, outputs["pair"].rel_scores, atol=1e-3)


def test_frequency_bias_is_off_by_default_and_switchable():
    assert make_config(NodisHead, {}).freq_bias is False
    head, graphs = trained(steps=2, freq_bias=True)
    test = gt_objects(graphs.split_subset("test"))
    with_bias = head.predict(test).rel_scores
    head.config.freq_bias = False
    without = head.predict(test).rel_scores
    assert not np.allclose(with_bias, without, atol=1e-3)
    assert float(head.model.log_freq.abs().sum()) > 0  # built from the training split when no priors are given


def test_gcn_front_end_uses_the_papers_fixed_adjacency():
    x = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    image = torch.tensor([0, 0, 0, 1])
    out = fixed_adjacency_product(x, image, 2)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.8 + 0.1 * 6, 1.6 + 0.1 * 5, 3.2 + 0.1 * 3, 8.0]))


def test_lstm_front_end_reads_the_pairs_in_the_given_random_order():
    head, graphs = built(front_end="lstm")
    batch = first_batch(head, graphs)
    with torch.no_grad():
        a = head.model(batch)["predicate_logits"]
        batch.extra["order_noise"] = torch.from_numpy(np.random.default_rng(9).random(len(batch.pairs)))
        b = head.model(batch)["predicate_logits"]
        c = head.model(batch)["predicate_logits"]
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, c)


def test_ode_none_and_both_through_the_cli_give_different_numbers(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(8, 3, 3))
    scores = {}
    for ode in ("none", "both"):
        result = cli("-w", ws.root, "--quiet", "train", "--head", "nodis", "--epochs", "1", "--t-end", "0.5",
                     "--set", f"ode={ode}", "--set", "hidden=16", "--set", "mask_size=8", "--json")
        assert result.code == 0, result.err
        pred = read_predictions(ws.run_dir(json.loads(result.out)["run"]) / "predictions" / "test.h5")
        scores[ode] = pred
        assert pred.meta["head_meta"]["ode"] == ode and pred.meta["head"] == "nodis"  # the head's meta survives the engine's
    assert scores["none"].meta["head_meta"]["nfe_per_image"] == 0 and scores["both"].meta["head_meta"]["nfe_per_image"] > 0
    assert not np.allclose(scores["none"].rel_scores, scores["both"].rel_scores, atol=1e-3)


# ---------------------------------------------------------------- context inside each image, none across images

def two_image_rows(seed: int = 0):
    """Rows of two images (5 and 4 rows), their image index and a random order."""
    rng = np.random.default_rng(seed)
    image = torch.tensor([0, 1, 0, 0, 1, 0, 1, 1, 0])
    return image, torch.from_numpy(rng.random(len(image)))


@pytest.mark.parametrize("which", ["object_ode", "pair_ode"])
def test_the_ode_function_reads_its_images_other_rows_and_no_other_image(which):
    head, _ = built()
    func = getattr(head.model, which)
    image, order = two_image_rows()
    func.sequences = ImageSequences(image, 2, order)
    x = torch.randn(len(image), func.lstm.input_size, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[0] += 1.0  # one row of image 0
    with torch.no_grad():
        before, after = func(torch.tensor(0.0), x), func(torch.tensor(0.0), changed)
    moved = (after - before).abs().amax(1)
    same_image, other_image = (image == 0).numpy(), (image == 1).numpy()
    same_image[0] = False
    assert (moved[torch.from_numpy(same_image)] > 1e-4).all()  # every other row of its image feels it
    torch.testing.assert_close(after[image == 1], before[image == 1], rtol=0, atol=0)  # the other image: exactly not
    assert func(torch.tensor(1.0), x).equal(func(torch.tensor(0.0), x))  # f(t, x) is a function of x (autonomous)


def test_changing_one_objects_or_pairs_input_changes_another_ones_output():
    head, graphs = built(visual=True)
    batch = first_batch(head, graphs)
    with torch.no_grad():
        base = head.model(batch)
        batch.extra["class_dist"] = batch.extra["class_dist"].clone()
        batch.extra["class_dist"][0] = torch.roll(batch.extra["class_dist"][0], 1)  # object 0's input only
        changed = head.model(batch)
    first_image = torch.from_numpy(np.arange(len(batch.labels)) < batch.box_offsets[1])
    diff = (changed["object_logits"] - base["object_logits"]).abs().amax(1)
    assert (diff[1:][first_image[1:]] > 1e-5).all()  # the O-ODE carries object 0 to the image's other objects
    head2, _ = built(visual=True, ode="pair")  # the O-ODE off: only the P-ODE can carry context between pairs
    with torch.no_grad():
        base = head2.model(batch)["predicate_logits"]
        batch.visual["union"] = batch.visual["union"].clone()
        batch.visual["union"][0] += 1.0  # pair 0's own union vector only
        changed = head2.model(batch)["predicate_logits"]
    same_image = batch.pair_image == batch.pair_image[0]
    same_image[0] = False
    assert same_image.any() and ((changed - base).abs().amax(1)[same_image] > 1e-5).all()


def test_training_feeds_the_o_ode_the_class_sources_distributions():
    head, graphs = built()
    calls = []

    def detector_like(image_ids, box_offsets, boxes):
        calls.append(len(image_ids))
        rows = np.arange(len(boxes))
        return np.eye(C, dtype=np.float32)[(rows % (C - 1)) + 1] * 0.7 + 0.3 / C

    head.class_source = detector_like
    batch = first_batch(head, graphs)
    assert calls == [batch.num_images]
    np.testing.assert_allclose(batch.extra["class_dist"].numpy(), detector_like([], [], batch.boxes.numpy()))


def test_sgdet_detections_are_capped_at_max_boxes_per_image():
    head, graphs = trained(steps=1, max_boxes=3)
    test = graphs.split_subset("test")
    objects = dataclasses.replace(sgcls_objects(test), detected=True)
    pred = head.predict(objects)
    counts = np.diff(pred.box_offsets)
    np.testing.assert_array_equal(counts, np.minimum(np.diff(test.box_offsets), 3))
    assert len(pred.pairs) == int((counts * (counts - 1)).sum())  # every ordered pair of the kept boxes


def test_sgcls_head_meta_holds_the_heads_and_the_detectors_object_accuracy():
    from types import SimpleNamespace

    from sgg_fixtures import tiny_vocab
    from sgtool.engine.train import predict_split

    head, graphs = trained(steps=2)
    test = graphs.split_subset("test")
    objects = sgcls_objects(test)
    detector_labels = objects.class_scores[:, 1:].argmax(1) + 1
    objects = dataclasses.replace(objects, labels=detector_labels)  # a source's labels: its own argmax
    run = SimpleNamespace(source=lambda g: objects, prepared=SimpleNamespace(name="tiny", vocab=tiny_vocab()),
                          record=SimpleNamespace(task="sgcls", head="nodis", run="r"))
    meta = predict_split(head, test, "test", run).meta["head_meta"]
    assert meta["detector_object_accuracy"] == pytest.approx(float(np.mean(detector_labels == test.labels)))
    pred = head.predict(objects)
    assert meta["object_accuracy"] == pytest.approx(float(np.mean(pred.labels == test.labels)))


def test_detector_skip_starts_the_o_ode_at_the_detectors_labels():
    head, graphs = built(visual=True)
    torch.nn.init.zeros_(head.model.object_classifier.weight)
    torch.nn.init.zeros_(head.model.object_classifier.bias)
    objects = sgcls_objects(graphs.split_subset("test"))
    pred = head.predict(objects)
    np.testing.assert_array_equal(pred.labels, objects.class_scores[:, 1:].argmax(1) + 1)
    head.config.detector_skip = False
    assert (head.predict(objects).labels == 1).all()  # zero logits without the skip: the first class everywhere


def test_sgcls_run_with_a_detector_labels_objects_at_least_as_well_as_the_detector(detector_ws_template,
                                                                                   tmp_path_factory, cli):
    """The issue's done-when: a synthetic workspace with a trained detector; the nodis SGCls run's head meta
    (in its test predictions and in `sgtool eval`'s report) holds both accuracies, the O-ODE's >= the detector's."""
    from conftest import detector_ws_copy

    root = detector_ws_copy(detector_ws_template, tmp_path_factory, "nodis-sgcls-ws")
    result = cli("-w", root, "-q", "train", "--head", "nodis", "--task", "sgcls", "--detector", "d1", "--epochs", "3",
                 "--set", "features=visual", "--set", "hidden=16", "--set", "mask_size=8", "--name", "ns")
    assert result.code == 0, result.err
    saved = read_predictions(root / "runs" / "ns" / "predictions" / "test.h5").meta["head_meta"]
    report = cli("-w", root, "eval", "--run", "ns", "--json")
    assert report.code == 0, report.err
    meta = json.loads(report.out)["head_meta"]
    assert meta["object_accuracy"] == pytest.approx(saved["object_accuracy"])
    assert 0 < meta["detector_object_accuracy"] <= meta["object_accuracy"] < 1
