"""train-detector: COCO export and evaluation, a one-epoch run, --resume, the detector API, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import detector_ws_copy
from sgtool.data.prepared import load_prepared
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.data.synth import prepare_synth
from sgtool.detect import load_detector
from sgtool.coco import detections_to_coco, evaluate_coco, gt_to_coco, write_coco
from sgtool.engine.checkpoint import load_state
from sgtool.engine.hooks import read_log
from sgtool.errors import SgtoolError
from sgtool.workspace import Workspace


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detws")
    prepare_synth(Workspace(root), images=30, size=64, seed=3, workers=1)
    return root


@pytest.fixture(scope="module")
def trained_ws(detector_ws_template, tmp_path_factory) -> Path:
    """base_ws's images plus a one-epoch detector run 'd1' (trained through the CLI's stage, once a session)."""
    return detector_ws_copy(detector_ws_template, tmp_path_factory, "trained")


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_coco_export_loads_and_gt_as_detections_scores_one(base_ws, tmp_path):
    from pycocotools.coco import COCO

    prepared = load_prepared(Workspace(base_ws), "synth")
    graphs = prepared.graphs.split_subset("test")
    gt = gt_to_coco(graphs, prepared.vocab.objects)
    owner = graphs.image_of_box()
    per_image = [owner == i for i in range(graphs.num_images)]
    dets = detections_to_coco(graphs.image_ids, [graphs.boxes[m] for m in per_image], [graphs.labels[m] for m in per_image],
                              [torch.ones(int(m.sum())).numpy() for m in per_image])
    gt_path, dt_path = write_coco(tmp_path, "test", gt, dets)
    coco = COCO(str(gt_path))
    assert len(coco.getImgIds()) == graphs.num_images and len(coco.getAnnIds()) == len(graphs.labels)
    assert len(coco.getCatIds()) == len(prepared.vocab.objects)
    ann = coco.loadAnns(coco.getAnnIds())[0]
    x1, y1, x2, y2 = graphs.boxes[0]
    assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3)
    metrics = evaluate_coco(gt_path, dt_path, prepared.vocab.objects)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP@.5"] == pytest.approx(1.0)
    present = {prepared.vocab.objects[label - 1] for label in graphs.labels}
    assert all(metrics["AP_per_class"][name] == pytest.approx(1.0) for name in present)


def test_one_epoch_run_writes_checkpoint_and_metrics(trained_ws):
    run = trained_ws / "runs" / "d1"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "model.pt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "det" and metrics["split"] == "test"
    for key in ("mAP", "mAP@.5", "mAP@.75", "AP_per_class", "inference_images_per_s", "train_images_per_s"):
        assert key in metrics["metrics"]
    assert 0.0 <= metrics["metrics"]["mAP@.5"] <= 1.0
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["head"], config["options"]["arch"], config["dataset"], config["task"]) == ("detector", "tiny", "synth", "det")
    for name in ("gt_test.json", "dt_test.json"):
        assert isinstance(json.loads((run / "coco" / name).read_text()), (dict, list))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1]


def test_resume_continues_from_checkpoint_epoch(trained_ws, tmp_path, cli):
    shutil.copytree(trained_ws, tmp_path / "ws")
    ws = tmp_path / "ws"
    before, logged = load_state(ws / "runs/d1/checkpoints/last.pt")["loop"], read_log(ws / "runs/d1/log.jsonl")
    result = cli("-w", ws, "-q", "--json", "train-detector", "--resume", "d1", "--epochs", "2")
    assert result.code == 0, result.err
    after, log = load_state(ws / "runs/d1/checkpoints/last.pt")["loop"], read_log(ws / "runs/d1/log.jsonl")
    assert (before["epoch"], after["epoch"]) == (1, 2) and after["step"] == 2 * before["step"]
    assert [r["epoch"] for r in log] == [1, 2] and log[0] == logged[0]
    assert json.loads(result.out)["run"] == "d1"
    again = cli("-w", ws, "train-detector", "--resume", "d1", "--epochs", "2")
    assert again.code == 2 and "already trained 2 of 2 epochs" in again.err


def test_load_detector_api_and_vocabulary_check(trained_ws):
    ws = Workspace(trained_ws)
    prepared = load_prepared(ws, "synth")
    detector = load_detector(ws, vocab=prepared.vocab)  # the latest detector
    assert detector.run == "d1" and detector.num_classes == len(prepared.vocab.objects)
    graphs = prepared.graphs.split_subset("test")
    from sgtool.detect.data import SplitImages

    images = SplitImages(prepared.path, graphs)
    boxes = [torch.from_numpy(graphs.boxes[graphs.box_offsets[i]:graphs.box_offsets[i + 1]]) for i in range(2)]
    probs = detector.classify_boxes([images[0], images[1]], boxes)
    assert [p.shape for p in probs] == [(len(b), detector.num_classes + 1) for b in boxes]
    dets = detector.detect([images[0]], top_n=3, score_thresh=0.0)
    boxes_, labels, scores = dets[0]
    assert len(boxes_) <= 3 and (labels >= 1).all() and (scores[:-1] >= scores[1:]).all()
    other = Vocabulary(prepared.vocab.objects[:-1], prepared.vocab.predicates)
    with pytest.raises(SgtoolError, match="another object vocabulary"):
        load_detector(ws, "d1", vocab=other)


@pytest.mark.parametrize("args, needle", [
    (["--arch", "unknown"], "valid: tiny, mobilenet-v3-fpn, resnet50-fpn"),
    (["--epochs", "0"], "--epochs must be greater than 0"),
    (["--dataset", "annotations"], "annotations only"),
    (["--weights", "{bad}"], "is not a PyTorch checkpoint"),
    (["--weights", "{missing}"], "does not exist"),
    (["--weights", "{unfit}"], "No tensor in"),
    (["--resume", "nope"], "No run named 'nope'"),
])
def test_bad_input_exit_2_workspace_unchanged(base_ws, tmp_path, cli, args, needle):
    ws = tmp_path / "ws"
    shutil.copytree(base_ws, ws)
    annotations = ws / "data" / "annotations"
    shutil.copytree(ws / "data" / "synth", annotations)
    shutil.rmtree(annotations / "images")
    manifest = json.loads((annotations / "manifest.json").read_text())
    (annotations / "manifest.json").write_text(json.dumps({**manifest, "dataset": "annotations", "has_images": False}))
    (tmp_path / "bad.pt").write_text("not a checkpoint\n")
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "unfit.pt")
    args = [a.format(bad=tmp_path / "bad.pt", missing=tmp_path / "missing.pt", unfit=tmp_path / "unfit.pt") for a in args]
    before = snapshot(ws)
    result = cli("-w", ws, "train-detector", "--epochs", "1", *args) if "--epochs" not in args else \
        cli("-w", ws, "train-detector", *args)
    assert result.code == 2
    assert needle in " ".join(result.err.split()) and "Traceback" not in result.err
    assert snapshot(ws) == before


def test_feature_cache_matches_direct_roi_features(trained_ws):
    from sgtool.detect.data import SplitImages
    from sgtool.features.cache import cache_split_features, feature_cache_path, read_feature_cache
    from sgtool.features.spatial import spatial_features
    from sgtool.features.visual import roi_features

    ws = Workspace(trained_ws)
    prepared = load_prepared(ws, "synth")
    detector = load_detector(ws, "d1", vocab=prepared.vocab)
    path = cache_split_features(detector, prepared, "test", feature_cache_path(ws, "d1", "synth", "test", 3), output_size=3,
                                batch_size=4)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    cache = read_feature_cache(path)
    graphs = prepared.graphs.split_subset("test")
    counts = graphs.box_counts()
    assert len(cache.pairs) == int((counts * (counts - 1)).sum()) and cache.pair_offsets[-1] == len(cache.pairs)
    assert cache.object_features.shape == (len(graphs.labels), detector.out_channels, 3, 3)
    assert cache.union_features.shape == (len(cache.pairs), detector.out_channels, 3, 3)
    image = SplitImages(prepared.path, graphs)[1]
    lo, hi = graphs.box_offsets[1], graphs.box_offsets[2]
    direct = roi_features(detector.features([image]), [torch.from_numpy(graphs.boxes[lo:hi])], 3)
    torch.testing.assert_close(torch.from_numpy(cache.object_features[lo:hi]).float(), direct, atol=2e-2, rtol=1e-2)
    sizes = torch.full((len(cache.pairs), 2), 64.0)
    expected = spatial_features(torch.from_numpy(graphs.boxes[cache.pairs[:, 0]]),
                                torch.from_numpy(graphs.boxes[cache.pairs[:, 1]]), sizes)
    torch.testing.assert_close(torch.from_numpy(cache.spatial), expected)
    assert cache.attrs["detector_run"] == "d1" and cache.attrs["pairs"] == "all"


def test_same_seed_same_weights_and_weights_file_start(trained_ws, tmp_path, cli):
    shutil.copytree(trained_ws, tmp_path / "ws")
    ws = tmp_path / "ws"
    start = ws / "runs/d1/checkpoints/model.pt"
    for name in ("a", "b"):
        result = cli("-w", ws, "-q", "--seed", "5", "train-detector", "--epochs", "1", "--batch-size", "4",
                     "--name", name, "--weights", start)
        assert result.code == 0, result.err
    a, b = (torch.load(ws / f"runs/{n}/checkpoints/model.pt", weights_only=True)["model"]["model"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((ws / "runs/a/metrics.json").read_text()) ["metrics"]["mAP"] == \
        json.loads((ws / "runs/b/metrics.json").read_text())["metrics"]["mAP"]
    assert json.loads((ws / "runs/a/run.json").read_text())["head"] == "detector"


def test_torchvision_archs_build_offline_and_take_weights(tmp_path):
    from torchvision.models.detection import FasterRCNN

    from sgtool.detect.model import ARCHS, DEFAULT_SIZES, DetectorSpec, build_model, load_weights

    models = {arch: build_model(DetectorSpec(arch, 5, *DEFAULT_SIZES[arch])) for arch in ARCHS}
    for arch, model in models.items():
        assert isinstance(model, FasterRCNN) and model.roi_heads.box_predictor.cls_score.out_features == 6, arch
    torch.save(models["mobilenet-v3-fpn"].state_dict(), tmp_path / "mnv3.pth")
    fresh = build_model(DetectorSpec("mobilenet-v3-fpn", 5, 320, 640))
    assert load_weights(fresh, tmp_path / "mnv3.pth") == len(fresh.state_dict())
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(fresh.state_dict()[key], models["mobilenet-v3-fpn"].state_dict()[key])


def test_progress_total_follows_the_time_budget():
    from sgtool.engine.hooks import expected_steps as _expected_steps

    assert _expected_steps(10, 5000, 0, took=10.0, seconds_left=None) == 5000  # no budget: every step
    assert _expected_steps(10, 5000, 0, took=10.0, seconds_left=90.0) == 100  # 1 step/s, 90 s left
    assert _expected_steps(30, 5000, 20, took=5.0, seconds_left=10.0) == 50  # resumed at step 20: 2 steps/s
    assert _expected_steps(10, 40, 0, took=10.0, seconds_left=90.0) == 40  # the epochs end first
    assert _expected_steps(10, 5000, 0, took=10.0, seconds_left=-1.0) == 10  # over budget: this step is the last
