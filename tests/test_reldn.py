"""The reldn head: branch sum, semantic = freq, pair sampling caps, training, the CLI, prediction layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgg_fixtures import tiny_graphs
from sgtool.data.graphs import RelationSet, SceneGraphs, ordered_pairs
from sgtool.errors import SgtoolError
from sgtool.heads import TrainData, get_head, gt_objects, make_config
from sgtool.heads.freq import FreqHead
from sgtool.heads.reldn import ReldnHead, sample_image_pairs
from sgtool.priors import compute_priors

C, P = 5, 4  # tiny vocabulary sizes with background
DIM = 6


class FakeVisual:
    """Deterministic per-pair 'ROI features' computed from the boxes (no detector needed)."""

    dim = DIM

    def __call__(self, image_ids, box_offsets, boxes, pairs):
        s, o = torch.from_numpy(boxes[pairs[:, 0]]), torch.from_numpy(boxes[pairs[:, 1]])
        return {"subject": torch.cat([s, s[:, :2] * 0.5], 1) / 100, "object": torch.cat([o, o[:, 2:] * 0.3], 1) / 100,
                "union": torch.cat([s - o, s[:, :2] + o[:, :2]], 1) / 100}


def built_head(settings: dict | None = None, visual: bool = False, graphs: SceneGraphs | None = None,
               num=(C, P)) -> tuple[ReldnHead, SceneGraphs, dict]:
    graphs = graphs if graphs is not None else tiny_graphs()
    train = graphs.split_subset("train")
    priors = compute_priors(train, *num)
    settings = {"predicate_branch": "frozen", **(settings or {})}  # FakeVisual has no backbone to copy
    head = ReldnHead(make_config(ReldnHead, settings), *num)
    if visual:
        head.attach_visual(FakeVisual())
    head.build(TrainData(train, graphs.split_subset("val"), None, priors))
    return head, graphs, priors


def test_logits_are_the_sum_of_the_three_branches():
    head, graphs, _ = built_head({"features": "visual"}, visual=True)
    batch = head.make_batch(graphs.split_subset("train"), np.random.default_rng(0))
    model = head.model
    with torch.no_grad():
        branches = model.branches(batch)
        assert set(branches) == {"semantic", "spatial", "visual"}
        torch.testing.assert_close(model(batch), branches["semantic"] + branches["spatial"] + branches["visual"])
        full = model(batch)
        for layer in (model.visual[-1], model.subject_skip, model.object_skip):  # zero the visual branch
            layer.weight.zero_(), layer.bias.zero_()
        torch.testing.assert_close(model(batch), full - branches["visual"])
        model.spatial[-1].weight.zero_(), model.spatial[-1].bias.zero_()
        torch.testing.assert_close(model(batch), branches["semantic"])
        labels = batch["subj_label"], batch["obj_label"]
        torch.testing.assert_close(model(batch), torch.from_numpy(compute_priors(
            graphs.split_subset("train"), C, P)["log_freq"])[labels])


def test_auto_features_pick_spatial_without_a_visual_source():
    head, _, _ = built_head({"features": "auto"})
    assert head.model.visual_dim == 0 and not hasattr(head.model, "visual")
    with pytest.raises(SgtoolError, match="visual features"):
        built_head({"features": "visual"})


def test_semantic_branch_alone_reproduces_freq():
    head, graphs, priors = built_head()
    with torch.no_grad():
        head.model.spatial[-1].weight.zero_(), head.model.spatial[-1].bias.zero_()
    test = graphs.split_subset("test")
    ours = head.predict(gt_objects(test))
    for overlap in (True, False):
        freq = FreqHead(make_config(FreqHead, {"overlap": overlap}), C, P)
        freq.fit(TrainData(graphs.split_subset("train"), graphs.split_subset("val"), None, priors), None)
        theirs = freq.distribution(test.labels[ours.pairs[:, 0]], test.labels[ours.pairs[:, 1]])
        if overlap:  # the priors file's table: the very same distribution
            np.testing.assert_allclose(ours.rel_scores, theirs, rtol=1e-5, atol=1e-7)
        # either way the same predicate ranking per pair (only the background column differs)
        np.testing.assert_array_equal(np.argsort(-ours.rel_scores[:, 1:], 1, kind="stable"),
                                      np.argsort(-theirs[:, 1:], 1, kind="stable"))


def one_image(boxes: int, relations: list[tuple[int, int, int]]) -> SceneGraphs:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 80, (boxes, 2))
    rel = np.array(relations, np.int64).reshape(-1, 3)
    return SceneGraphs(np.array([7]), np.array([100]), np.array([100]), np.zeros(1, np.int8),
                       np.array([0, boxes]), np.concatenate([xy, xy + 15], 1).astype(np.float32),
                       rng.integers(1, C, boxes), RelationSet(rel[:, :2], rel[:, 2], np.array([0, len(rel)])))


def test_pair_sampling_caps_positives_and_pairs():
    _, subj, obj = ordered_pairs(np.array([0, 30]))
    chosen = np.random.default_rng(2).choice(len(subj), 200, replace=False)  # 200 annotated pairs, 870 in all
    graphs = one_image(30, [(subj[c], obj[c], 1 + c % 3) for c in chosen])
    sample = sample_image_pairs(graphs, np.random.default_rng(0), 512, 128)
    assert len(sample.predicate) == 512 and (sample.predicate > 0).sum() == 128
    codes = sample.subj * 30 + sample.obj
    assert len(np.unique(codes)) == 512 and np.all(sample.subj != sample.obj)
    annotated = set((subj[chosen] * 30 + obj[chosen]).tolist())
    assert all(c in annotated for c in codes[sample.predicate > 0])
    assert not any(c in annotated for c in codes[sample.predicate == 0])


def test_pair_sampling_keeps_every_positive_when_fewer():
    rels = [(0, 1, 1), (0, 1, 2), (2, 0, 3)]  # pair (0, 1) carries two predicates: two positive rows
    graphs = one_image(4, rels)
    sample = sample_image_pairs(graphs, np.random.default_rng(0), 512, 128)
    got = sorted(zip(sample.subj[sample.predicate > 0], sample.obj[sample.predicate > 0], sample.predicate[sample.predicate > 0]))
    assert [tuple(map(int, r)) for r in got] == sorted(rels)
    assert (sample.predicate == 0).sum() == 12 - 2  # every other ordered pair, once
    small = sample_image_pairs(graphs, np.random.default_rng(0), 5, 2)
    assert len(small.predicate) == 5 and (small.predicate > 0).sum() == 2


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from sgtool.data.prepared import load_prepared, load_prepared_priors
    from sgtool.data.synth import prepare_synth
    from sgtool.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("ws"))
    prepared = prepare_synth(ws, images=40, workers=1)
    return prepared, load_prepared_priors(ws, prepared.name)


@pytest.mark.parametrize("losses", ["L0", "L0,L1,L2,L3"])
def test_a_few_steps_lower_the_loss(synth, losses):
    prepared, priors = synth
    train = prepared.graphs.split_subset("train")
    vocab = prepared.vocab
    head = ReldnHead(make_config(ReldnHead, {"losses": losses, "batch_size": 32}),
                     vocab.num_object_classes, vocab.num_predicate_classes)
    head.build(TrainData(train, prepared.graphs.split_subset("val"), vocab, priors))
    batch = next(head.batches(train, shuffle=False, rng=np.random.default_rng(0)))
    optimiser = torch.optim.Adam(head.model.parameters(), lr=head.config.lr)
    first = head.loss(batch)
    assert set(first) == {"loss", *losses.split(",")}
    for _ in range(15):
        optimiser.zero_grad()
        head.loss(batch)["loss"].backward()
        optimiser.step()
    assert head.loss(batch)["loss"].item() < 0.8 * first["loss"].item()


def test_unknown_loss_on_the_cli_is_one_sentence(cli, tmp_path):
    result = cli("-w", tmp_path, "train", "--head", "reldn", "--losses", "L4")
    assert result.code == 2
    text = (result.out + result.err).strip()
    assert "Unknown loss 'L4'" in text and "Traceback" not in text
    assert text.splitlines()[0].count(".") == 1
    with pytest.raises(SgtoolError, match="features"):
        make_config(get_head("reldn"), {"features": "pixels"})


def test_predictions_layout_and_checkpoint_round_trip():
    head, graphs, _ = built_head({"features": "visual"}, visual=True)
    test = graphs.split_subset("test")
    objects = gt_objects(test)
    objects.scores = np.random.default_rng(3).uniform(0.2, 1, len(objects.scores)).astype(np.float32)
    pred = head.predict(objects)
    counts = np.diff(test.box_offsets)
    np.testing.assert_array_equal(np.diff(pred.pair_offsets), counts * (counts - 1))
    image = pred.image_of_pair()
    assert np.all(pred.pairs[:, 0] != pred.pairs[:, 1])
    assert np.all((pred.pairs >= test.box_offsets[image, None]) & (pred.pairs < test.box_offsets[image + 1, None]))
    assert len({tuple(p) for p in pred.pairs}) == len(pred.pairs)
    assert pred.rel_scores.shape == (len(pred.pairs), P)
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, rtol=1e-5)
    triplet = pred.rel_scores[:, 1:].max(1) * objects.scores[pred.pairs[:, 0]] * objects.scores[pred.pairs[:, 1]]
    np.testing.assert_allclose(pred.triplet_scores(), triplet, rtol=1e-6)
    for i in range(pred.num_images):  # ranked by p(s) p(pred) p(o) within each image
        lo, hi = pred.pair_offsets[i], pred.pair_offsets[i + 1]
        assert np.all(np.diff(triplet[lo:hi]) <= 1e-7)
    again = ReldnHead(head.config, C, P)
    again.attach_visual(FakeVisual())
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again.predict(objects).rel_scores, pred.rel_scores, rtol=1e-6)


def test_visual_variant_on_a_detector_backbone():
    from sgtool.data.sgg_h5 import Vocabulary
    from sgtool.detect.api import Detector
    from sgtool.detect.model import DetectorSpec, build_model
    from sgtool.features.visual import pair_visual_features
    from sgtool.heads.reldn import DetectorVisualFeatures

    torch.manual_seed(0)
    spec = DetectorSpec("tiny", C - 1, 128, 128)
    detector = Detector(build_model(spec), spec, Vocabulary(["a", "b", "c", "d"], ["p", "q", "r"]))
    graphs = tiny_graphs(splits=(4, 2, 2))
    pixels = {int(i): torch.randint(0, 255, (3, 100, 100), dtype=torch.uint8) for i in graphs.image_ids}
    source = DetectorVisualFeatures(detector, {i: (lambda im=im: im) for i, im in pixels.items()}, grid=1)
    train = graphs.split_subset("train")
    rows = np.array([[train.box_offsets[2] + 1, train.box_offsets[2]], [0, 1], [train.box_offsets[2], train.box_offsets[2] + 2]])
    got = source(train.image_ids, train.box_offsets, train.boxes, rows)
    lo, hi = train.box_offsets[2], train.box_offsets[3]
    direct = pair_visual_features(detector, [pixels[int(train.image_ids[2])]], [torch.from_numpy(train.boxes[lo:hi])],
                                  [torch.tensor([[1, 0], [0, 2]])])
    torch.testing.assert_close(got["union"][[0, 2]], direct["union"].mean((2, 3)))
    assert got["subject"].shape == (3, detector.out_channels) == (3, source.dim)
    head, _, _ = built_head({"features": "auto", "batch_size": 4}, graphs=graphs)
    assert head.model.visual_dim == 0
    head = ReldnHead(make_config(ReldnHead, {"features": "visual"}), C, P)
    head.attach_visual(source)
    head.build(TrainData(train, graphs.split_subset("val"), None, compute_priors(train, C, P)))
    head.loss(next(head.batches(train, shuffle=False, rng=np.random.default_rng(0))))["loss"].backward()
    assert head.model.subject_skip.weight.grad is not None
    pred = head.predict(gt_objects(graphs.split_subset("test")))
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, rtol=1e-5)


def _keyed_scores(path):
    from sgtool.data.predictions import read_predictions

    pred = read_predictions(path)
    key = pred.image_of_pair() * 10**6 + pred.pairs[:, 0] * 1000 + pred.pairs[:, 1]
    order = np.argsort(key)
    return key[order], pred.rel_scores[order]


def test_l3_is_active_and_changes_the_predictions(tmp_path, cli):
    """The issue's check on a smaller synth: L3 logs >= 0.02 every epoch, and L0+L1+L2 vs +L3 differ."""
    import json

    from sgtool.data.synth import prepare_synth
    from sgtool.workspace import Workspace

    prepare_synth(Workspace(tmp_path), images=60, size=64, seed=12, workers=1)
    base = ["-w", tmp_path, "-q", "train", "--head", "reldn", "--epochs", "2", "--set", "features=spatial"]
    assert cli(*base, "--name", "all").code == 0
    assert cli(*base, "--losses", "L0,L1,L2", "--name", "no3").code == 0
    records = [json.loads(line) for line in (tmp_path / "runs/all/log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["train"]["L3"] >= 0.02 for e in epochs), [e["train"]["L3"] for e in epochs]
    key_all, with_l3 = _keyed_scores(tmp_path / "runs/all/predictions/test.h5")
    key_no3, without = _keyed_scores(tmp_path / "runs/no3/predictions/test.h5")
    assert np.array_equal(key_all, key_no3)
    assert np.abs(with_l3 - without).max() > 1e-3
