"""RelDN's trained predicate branch (conv_body_rel) and its separately drawn contrastive sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgg_fixtures import tiny_graphs
from sgtool.data.graphs import RelationSet, SceneGraphs
from sgtool.errors import SgtoolError
from sgtool.heads import TrainData, gt_objects, make_config
from sgtool.heads.reldn import ReldnHead, sample_contrastive
from sgtool.losses.contrastive import OBJECT_SIDE, SUBJECT_SIDE
from sgtool.priors import compute_priors

C, P = 5, 4


def tiny_source(graphs: SceneGraphs):
    from sgtool.data.sgg_h5 import Vocabulary
    from sgtool.detect.api import Detector
    from sgtool.detect.model import DetectorSpec, build_model
    from sgtool.features.source import DetectorVisualFeatures

    torch.manual_seed(0)
    spec = DetectorSpec("tiny", C - 1, 64, 64, tiny_channels=16)
    detector = Detector(build_model(spec), spec, Vocabulary(["a", "b", "c", "d"], ["p", "q", "r"]))
    gen = torch.Generator().manual_seed(1)
    pixels = {int(i): torch.randint(0, 255, (3, 100, 100), dtype=torch.uint8, generator=gen) for i in graphs.image_ids}
    return DetectorVisualFeatures(detector, {i: (lambda im=im: im) for i, im in pixels.items()}, grid=2)


def visual_head(branch: str):
    graphs = tiny_graphs(splits=(6, 2, 2))
    source = tiny_source(graphs)
    train = graphs.split_subset("train")
    head = ReldnHead(make_config(ReldnHead, {"features": "visual", "predicate_branch": branch, "batch_size": 6}), C, P)
    head.attach_visual(source)
    head.build(TrainData(train, graphs.split_subset("val"), None, compute_priors(train, C, P)))
    return head, graphs, source


def steps(head, graphs, n=3):
    optimiser = torch.optim.Adam([p for p in head.model.parameters() if p.requires_grad], lr=1e-2)
    train = graphs.split_subset("train")
    for _ in range(n):
        batch = next(head.batches(train, shuffle=False, rng=np.random.default_rng(0)))
        optimiser.zero_grad()
        head.loss(batch)["loss"].backward()
        optimiser.step()


def backbone_weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k.endswith("weight") and v.dim() == 4}


def test_trained_branch_starts_from_the_detector_and_its_weights_change():
    head, graphs, source = visual_head("trained")
    branch = head.model.union_branch
    detector_before = backbone_weights(source.detector.model.backbone)
    start = backbone_weights(branch.backbone)
    assert start.keys() == detector_before.keys() and len(start) > 3
    assert all(torch.equal(start[k], detector_before[k]) for k in start)  # initialised from conv_body_det
    steps(head, graphs)
    after = backbone_weights(branch.backbone)
    assert all(not torch.equal(after[k], start[k]) for k in after)  # every conv of conv_body_rel trained
    detector_after = backbone_weights(source.detector.model.backbone)
    assert all(torch.equal(detector_after[k], detector_before[k]) for k in detector_after)  # conv_body_det frozen


def test_frozen_branch_trains_no_backbone():
    head, graphs, source = visual_head("frozen")
    assert head.model.union_branch is None
    before = backbone_weights(source.detector.model.backbone)
    steps(head, graphs)
    after = backbone_weights(source.detector.model.backbone)
    assert all(torch.equal(after[k], before[k]) for k in after)


def test_trained_branch_feeds_the_predictions_and_survives_a_checkpoint():
    head, graphs, source = visual_head("trained")
    steps(head, graphs, 1)
    objects = gt_objects(graphs.split_subset("test"))
    pred = head.predict(objects)
    again = ReldnHead(head.config, C, P)
    again.attach_visual(source)
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again.predict(objects).rel_scores, pred.rel_scores, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    with torch.no_grad():  # the union vectors come from the branch: change its weights, the output changes
        for p in again.model.union_branch.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert np.abs(again.predict(objects).rel_scores - pred.rel_scores).max() > 1e-3


def test_predicate_branch_is_a_declared_choice():
    with pytest.raises(SgtoolError, match="predicate_branch must be one of frozen, trained"):
        make_config(ReldnHead, {"predicate_branch": "fine-tuned"})
    graphs = tiny_graphs()
    train = graphs.split_subset("train")
    data = TrainData(train, graphs.split_subset("val"), None, compute_priors(train, C, P))
    assert make_config(ReldnHead, {}).predicate_branch == "trained"  # the paper's conv_body_rel by default
    head = ReldnHead(make_config(ReldnHead, {"features": "spatial"}), C, P)
    assert head.build(data).union_branch is None and head.model.visual_dim == 0  # spatial: no visual module

    class NoBackbone:  # ROI vectors without a detector to copy a backbone from
        dim = 4

    head = ReldnHead(make_config(ReldnHead, {"features": "visual"}), C, P)
    head.attach_visual(NoBackbone())
    with pytest.raises(SgtoolError, match="detector"):
        head.build(data)


def one_image(n: int, relations: list[tuple[int, int, int]]) -> SceneGraphs:
    xy = np.random.default_rng(0).uniform(0, 80, (n, 2))
    rel = np.array(relations, np.int64).reshape(-1, 3)
    return SceneGraphs(np.array([1]), np.array([100]), np.array([100]), np.zeros(1, np.int8), np.array([0, n]),
                       np.concatenate([xy, xy + 10], 1).astype(np.float32), np.ones(n, np.int64),
                       RelationSet(rel[:, :2], rel[:, 2], np.array([0, len(rel)])))


def test_contrastive_sample_anchors_and_caps():
    # 12 entities; subjects 0, 1, 2 relate to 3, 4 / 5 / 5 (entity 0 twice, one pair with two predicates)
    rels = [(0, 3, 1), (0, 4, 2), (0, 4, 3), (1, 5, 1), (2, 5, 2)]
    sample = sample_contrastive(one_image(12, rels), np.random.default_rng(0), anchors=2, negatives=4)
    subj_rows = sample.side == SUBJECT_SIDE
    anchors = np.unique(sample.subj[subj_rows])
    assert len(anchors) == 2 and set(anchors) <= {0, 1, 2}
    for a in anchors:
        mine = subj_rows & (sample.subj == a)
        assert sorted(zip(sample.obj[mine & (sample.predicate > 0)], sample.predicate[mine & (sample.predicate > 0)])) \
            == sorted((o, p) for s, o, p in rels if s == a)  # all its annotated rows
        negatives = sample.obj[mine & (sample.predicate == 0)]
        assert len(negatives) == 4 and len(set(negatives)) == 4 and a not in negatives
        assert not {(a, o) for o in negatives} & {(s, o) for s, o, _ in rels}  # never an annotated pair
    obj_rows = sample.side == OBJECT_SIDE
    assert set(np.unique(sample.obj[obj_rows])) <= {3, 4, 5} and len(np.unique(sample.obj[obj_rows])) == 2
    big = sample_contrastive(one_image(12, rels), np.random.default_rng(1), anchors=128, negatives=64)
    assert set(np.unique(big.subj[big.side == SUBJECT_SIDE])) == {0, 1, 2}
    assert ((big.side == SUBJECT_SIDE) & (big.subj == 0) & (big.predicate == 0)).sum() == 12 - 1 - 2


def test_contrastive_rows_are_drawn_apart_from_the_l0_sample():
    graphs = tiny_graphs()
    train = graphs.split_subset("train")
    priors = compute_priors(train, C, P)
    sizes = {}
    for losses in ("L0", "L0,L1,L2,L3"):
        head = ReldnHead(make_config(ReldnHead, {"losses": losses, "features": "spatial", "batch_size": 4}), C, P)
        head.build(TrainData(train, graphs.split_subset("val"), None, priors))
        batch = head.make_batch(train.select(np.arange(4)), np.random.default_rng(0))
        sizes[losses] = (int(batch["l0_rows"]), len(batch["predicate"]))
    assert sizes["L0"][0] == sizes["L0"][1]  # L0 alone draws no contrastive rows
    assert sizes["L0,L1,L2,L3"][0] == sizes["L0"][0] < sizes["L0,L1,L2,L3"][1]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_cli_default_is_the_paper_model_on_images(tmp_path, cli):
    from sgtool.data.synth import prepare_synth
    from sgtool.engine.train import load_trained_head
    from sgtool.workspace import Workspace

    prepare_synth(Workspace(tmp_path), images=16, size=64, seed=2, workers=1)
    before = _tree(tmp_path)
    result = cli("-w", tmp_path, "train", "--head", "reldn", "--epochs", "1", "--name", "none")
    assert result.code == 2 and "Traceback" not in result.err
    assert "has images" in result.err and "features=spatial" in result.err
    assert _tree(tmp_path) == before  # nothing written
    quick = ["--epochs", "1", "--set", "spatial_hidden=8", "--set", "visual_hidden=8"]
    result = cli("-w", tmp_path, "-q", "train", "--head", "reldn", *quick, "--set", "features=spatial", "--name", "px")
    assert result.code == 0, result.err
    assert load_trained_head(Workspace(tmp_path), "px")[0].model.visual_dim == 0
    assert cli("-w", tmp_path, "-q", "train-detector", "--epochs", "1", "--batch-size", "4", "--name", "d").code == 0
    result = cli("-w", tmp_path, "-q", "train", "--head", "reldn", *quick, "--name", "rt")
    assert result.code == 0, result.err
    head, _, _ = load_trained_head(Workspace(tmp_path), "rt")
    assert (head.config.features, head.model.visual_dim) == ("visual", head.visual_source.dim)
    trained = backbone_weights(head.model.union_branch.backbone)
    detector = backbone_weights(head.visual_source.detector.model.backbone)
    assert trained.keys() == detector.keys()
    assert any(not torch.equal(trained[k], detector[k]) for k in trained)


def test_train_help_says_what_features_auto_picks(cli):
    result = cli("train", "--head", "reldn", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "features=auto: on a dataset with images the paper's model" in text
    assert "annotation-only dataset spatial + semantic" in text and "--set features=spatial" in text
