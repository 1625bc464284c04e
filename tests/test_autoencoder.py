"""The ae auto-encoder: DSNT, differentiable drawing, the triplet F1 matcher, a tiny training run, CLI errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgtool.autoencoder.data import load_split, to_normalised, to_pixels
from sgtool.autoencoder.losses import match_slots, overlap
from sgtool.autoencoder.model import compose, draw_segments, dsnt, node_pairs, pixel_centres
from sgtool.autoencoder.train import AEConfig, GraphAutoEncoder, fit, step_loss
from sgtool.data.prepared import load_prepared
from sgtool.eval.point_graph import PointGraphs, triplet_scores
from sgtool.workspace import Workspace


@pytest.fixture(scope="module")
def shapes_ws(tmp_path_factory):
    from sgtool.data.shapes import prepare_shapes

    ws = Workspace(tmp_path_factory.mktemp("ae"))
    prepare_shapes(ws, images=80, seed=1, workers=1)
    return ws


HEAT_IMAGES, HEAT_STEPS, HEAT_LR, HEAT_SEEDS = 400, 150, 1.2e-3, (0, 1, 2)  # the heat-map test: a small set, trained and scored


@pytest.fixture(scope="module")
def heat_ws(tmp_path_factory):
    from sgtool.data.shapes import prepare_shapes

    ws = Workspace(tmp_path_factory.mktemp("ae-heat"))
    prepare_shapes(ws, images=500, seed=1, workers=1)  # 400 training drawings
    return ws


# ---------------------------------------------------------------- DSNT

def test_dsnt_is_the_centre_of_mass():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 2, 6] = 1.0  # a single pixel: its centre
    heat[0, 1, 1, 1] = heat[0, 1, 5, 3] = 0.5  # two pixels: their midpoint
    c = pixel_centres(8)
    xy = dsnt(heat)[0]
    assert torch.allclose(xy[0], torch.stack([c[6], c[2]]))
    assert torch.allclose(xy[1], torch.stack([(c[1] + c[3]) / 2, (c[1] + c[5]) / 2]))
    assert np.allclose(to_pixels(to_normalised(np.array([[10.0, 20.0]]), 128), 128), [[10.0, 20.0]], atol=1e-5)


# ---------------------------------------------------------------- drawing

def test_drawing_renders_a_known_graph():
    # nodes at pixel centres (8, 16), (40, 16), (40, 48) of a 64-px canvas; edges 0-1 and 1-2 on, 0-2 off
    px = torch.tensor([[[8.0, 16.0], [40.0, 16.0], [40.0, 48.0]]])
    coords = (2 * px + 1) / 64 - 1
    pairs = node_pairs(3)
    prob = torch.tensor([[1.0, 0.0, 1.0]])  # pairs (0,1), (0,2), (1,2)
    canvas = compose(draw_segments(coords, pairs, 64, 0.7), prob)[0, 0]
    assert canvas[16, 12:37].min() > 0.95 and canvas[20:45, 40].min() > 0.95  # along the two drawn edges
    assert canvas[30, 22] < 0.01 and canvas[60, 5] < 0.01  # the diagonal (off) and far away stay blank
    assert canvas[18, 20] < 0.05  # two pixels beside a 0.7-px-sigma line


def test_drawing_passes_gradients_to_nodes_and_edges():
    coords = torch.tensor([[[-0.5, 0.0], [0.5, 0.1]]], requires_grad=True)
    prob = torch.tensor([[0.7]], requires_grad=True)
    target = torch.zeros(64, 64)
    target[36, 10:54] = 1.0  # the line should sit lower
    canvas = compose(draw_segments(coords, node_pairs(2), 64, 1.0), prob)[0, 0]
    ((canvas - target) ** 2).sum().backward()
    assert coords.grad is not None and coords.grad.abs().sum() > 0 and prob.grad.abs().item() > 0
    assert coords.grad[0, :, 1].sum() < 0  # descending the loss moves the nodes down (+y)


def test_overlap_and_matching():
    same = torch.full((1, 2, 4, 4), 1 / 16)
    apart = torch.zeros(1, 2, 4, 4)
    apart[0, 0, 0, 0] = apart[0, 1, 3, 3] = 1.0
    assert overlap(same).item() == pytest.approx(1.0) and overlap(apart).item() == 0.0
    slots = np.array([[0.0, 0.0], [1.0, 1.0], [0.1, 0.0], [5.0, 5.0]])
    assigned = match_slots(slots, np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert assigned[0] == 1 and assigned[1] == 0 and set(assigned) == {0, 1}


# ---------------------------------------------------------------- the F1 matcher

def graphs(counts, points, edges) -> PointGraphs:
    return PointGraphs(np.concatenate([[0], np.cumsum(counts)]), np.array(points, float), np.array(edges, np.int64).reshape(-1, 2))


def test_f1_matcher_hand_made():
    # image 0: triangle (0,1,2); image 1: a line (3,4)
    gt = graphs([3, 2], [[10, 10], [50, 10], [30, 40], [5, 5], [60, 60]], [[0, 1], [1, 2], [0, 2], [3, 4]])
    # image 0: slots 0 and 3 both on GT node 0 (a duplicate), slot 4 far from everything
    pred = graphs([5, 2], [[11, 10], [50, 13], [30, 41], [10, 12], [100, 100], [5, 5], [30, 30]],
                  [[0, 1], [3, 1], [1, 2], [0, 3], [2, 4], [5, 6]])
    s = triplet_scores(pred, gt, threshold=5.0)
    # merged predicted triplets: {0-1 (twice: one), 1-2, 2-far, 5-unmatched, 0-0 (slots 0 and 3 on one node)}
    assert (s["hits"], s["predicted"], s["ground_truth"], s["self_loops"]) == (2, 5, 4, 1)
    assert s["precision"] == pytest.approx(0.4) and s["recall"] == pytest.approx(0.5)
    strict = triplet_scores(pred, gt, threshold=5.0, matching="hungarian")
    # one-to-one: slot 3 loses GT node 0 to slot 0, so 3-1 and 0-3 are two more false positives
    assert (strict["hits"], strict["predicted"], strict["self_loops"]) == (2, 6, 0)
    perfect = triplet_scores(graphs([3, 2], gt.points + 1, gt.edges), gt)
    assert perfect["f1"] == 1.0
    assert triplet_scores(graphs([3, 2], gt.points + 6, gt.edges), gt)["f1"] == 0.0  # 8.5 px away: no match
    assert triplet_scores(graphs([3, 2], gt.points, np.zeros((0, 2))), gt)["f1"] == 0.0


def edge_blind(gt: PointGraphs, k: int) -> PointGraphs:
    """Perfect nodes (surplus slots on the GT nodes in turn), every slot pair predicted as connected."""
    counts = np.diff(gt.node_offsets)
    slots = np.concatenate([gt.node_offsets[i] + np.arange(k) % n for i, n in enumerate(counts)])
    pairs = node_pairs(k).numpy()
    edges = (pairs[None] + k * np.arange(len(counts))[:, None, None]).reshape(-1, 2)
    return PointGraphs(np.arange(len(counts) + 1) * k, gt.points[slots], edges)


def test_an_edge_blind_prediction_scores_below_a_correct_graph_and_falls_with_more_slots():
    from sgtool.data.shapes import shape_edges

    rng = np.random.default_rng(0)
    counts = np.tile([2, 3, 4], 10)  # lines, triangles, rectangles
    points = rng.uniform(0, 128, (counts.sum(), 2))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    edges = np.concatenate([shape_edges(n) + o for n, o in zip(counts, offsets)])
    gt = PointGraphs(offsets, points, edges)
    assert triplet_scores(PointGraphs(offsets, points + 1, edges), gt)["f1"] == 1.0  # the correct graph
    blind = {k: triplet_scores(edge_blind(gt, k), gt) for k in (4, 8)}
    assert all(b["recall"] == 1.0 for b in blind.values())
    assert blind[4]["f1"] < 0.8 and blind[8]["f1"] < blind[4]["f1"] - 0.05, blind
    assert blind[8]["precision"] < blind[4]["precision"]
    strict = triplet_scores(edge_blind(gt, 8), gt, matching="hungarian")
    assert strict["f1"] < blind[8]["f1"]


# ---------------------------------------------------------------- training

def test_tiny_training_lowers_the_loss(shapes_ws):
    data = load_split(load_prepared(shapes_ws, "shapes"), "train", 64)
    config = AEConfig(epochs=5, batch_size=16, lr=3e-3, log_every=1000)
    torch.manual_seed(0)
    model = GraphAutoEncoder(4, 8)
    fixed = np.arange(16)
    model.eval()
    with torch.no_grad():
        before = step_loss(model, config, data, fixed, config.sigma_end, "cpu")["loss"].item()
    model.train()
    log = fit(model, data, config, 0, "cpu")
    model.eval()
    with torch.no_grad():
        after = step_loss(model, config, data, fixed, config.sigma_end, "cpu")["loss"].item()
    assert log[-1]["steps"] == 5 * (len(data) // 16)
    assert after < before - 0.02, (before, after)


# ---------------------------------------------------------------- CLI

def test_cli_bad_input(cli, shapes_ws, tmp_path):
    r = cli("-w", shapes_ws.root, "train", "--head", "ae", "--max-nodes", "1")
    assert r.code == 2 and "--max-nodes" in r.err and "Traceback" not in r.err
    r = cli("-w", shapes_ws.root, "train", "--head", "freq", "--supervised")
    assert r.code == 2 and "ae head" in r.err
    r = cli("-w", shapes_ws.root, "train", "--head", "ae", "--rank", "3")
    assert r.code == 2 and "The ae head does not take --rank" in r.err and "Traceback" not in r.err
    cli("-w", tmp_path, "prepare", "synth", "--images", "20", "--workers", "1")
    r = cli("-w", tmp_path, "train", "--head", "ae", "--dataset", "synth")
    assert r.code == 2 and "shapes dataset" in r.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_train_eval_draw(cli, shapes_ws, tmp_path):
    r = cli("-w", shapes_ws.root, "--json", "train", "--head", "ae", "--epochs", "1", "--batch-size", "16",
            "--seeds", "2", "--set", "width=8", "--set", "train_images=32", "--set", "threads=1", "--name", "tiny")
    assert r.code == 0, r.err
    run = shapes_ws.run_dir("tiny")
    import json

    val = json.loads((run / "metrics.json").read_text())["per_seed"]
    stuck = [seed for seed, m in zip((0, 1), val) if m["recall"] == 0]
    assert json.loads(r.out)["stuck_seeds"] == stuck
    assert ("found no edge on the validation split" in r.err) == bool(stuck)
    assert (run / "checkpoints" / "model-seed1.pt").exists() and (run / "predictions" / "seed0" / "test.h5").exists()
    r = cli("-w", shapes_ws.root, "--json", "eval", "--run", "tiny")
    assert r.code == 0, r.err
    payload = json.loads(r.out)
    assert set(payload["per_seed"]) == {"0", "1"} and 0 <= payload["summary"]["f1"]["mean"] <= 1
    report = shapes_ws.report_dir("tiny")
    assert (report / "reconstructions.png").stat().st_size > 0
    before = (report / "report.json").stat().st_mtime_ns
    r = cli("-w", shapes_ws.root, "eval", "--run", "tiny", "--metric", "mR@50")
    assert r.code == 2 and "--metric does not apply to an ae run" in r.err
    assert (report / "report.json").stat().st_mtime_ns == before  # the report is left as it was
    pred_graph = sorted((report / "graphs").glob("*.pred.json"))[0]
    r = cli("-w", shapes_ws.root, "draw", pred_graph, "--out", tmp_path / "g.png")
    assert r.code == 0, r.err
    assert (tmp_path / "g.png").stat().st_size > 0
    assert (run / "training-curves.png").stat().st_size > 0
    r = cli("-w", shapes_ws.root, "train", "--resume", "tiny")
    assert r.code == 2 and "is complete; there is nothing to resume" in r.err
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "running"}))
    r = cli("-w", shapes_ws.root, "eval", "--run", "tiny")
    assert r.code == 2 and "has not finished training" in r.err and "--resume tiny" in r.err
    r = cli("-w", shapes_ws.root, "train", "--resume", "tiny", "--head", "tensor")
    assert r.code == 2 and "trains the ae head, not tensor" in r.err


def test_a_seed_stuck_on_the_plateau_is_named(capsys, tmp_path):
    from sgtool.autoencoder.train import AETrainResult, show_ae_train

    metrics = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    show_ae_train(AETrainResult("r", tmp_path, "shapes", [3, 4], metrics, 1.0, stuck_seeds=[3]))
    err = capsys.readouterr().err
    assert "seed(s) 3 found no edge on the validation split" in err and "another --seed" in err
    show_ae_train(AETrainResult("r", tmp_path, "shapes", [4], {**metrics, "recall": 0.5}, 1.0))
    assert "found no edge" not in capsys.readouterr().err


# ---------------------------------------------------------------- the paper's forms (issue 18)

def test_eq5_auxiliary_loss_on_a_hand_case():
    from sgtool.autoencoder.losses import auxiliary_loss, stacking

    first = torch.tensor([[[0.4, 0.2], [0.2, 0.2]], [[0.1, 0.1], [0.1, 0.7]]])  # two slots, 2 x 2 maps
    second = torch.full((2, 2, 2), 0.25)  # flat maps: max-normalised to all ones
    attention = torch.stack([first, second])
    # image 0 by hand: max-normalised [[1, .5], [.5, .5]] + [[1/7, 1/7], [1/7, 1]] = [[8/7, 9/14], [9/14, 3/2]]
    by_hand = ((8 / 7 - 1) ** 2 + 0 + 0 + (3 / 2 - 1) ** 2) / 4
    assert stacking(attention)[0].item() == pytest.approx(by_hand)
    assert stacking(attention)[1].item() == pytest.approx(1.0)  # 1 + 1 - 1 = 1 everywhere
    # only the images whose similarity is below the batch mean pay; the batch mean of that
    assert auxiliary_loss(attention, torch.tensor([0.2, 0.9])).item() == pytest.approx(by_hand / 2)
    assert auxiliary_loss(attention, torch.tensor([0.9, 0.2])).item() == pytest.approx(1.0 / 2)
    apart = torch.zeros(1, 2, 4, 4)
    apart[0, 0, 0, 0] = apart[0, 1, 3, 3] = 1.0
    assert stacking(apart).item() == 0.0  # distinct nodes: no penalty


def test_switching_the_auxiliary_loss_changes_the_loss():
    from sgtool.autoencoder.losses import self_supervised_loss

    torch.manual_seed(0)
    attention = torch.rand(4, 4, 8, 8).flatten(2).softmax(-1).view(4, 4, 8, 8)
    image = (torch.rand(4, 1, 64, 64) > 0.9).float()
    out = {"attention": attention, "refined": torch.rand(4, 1, 64, 64), "coarse": torch.rand(4, 1, 64, 64)}
    paper = self_supervised_loss(out, image, aux="paper")
    overlap_form = self_supervised_loss(out, image, aux="overlap")
    off = self_supervised_loss(out, image, aux_weight=0.0)
    assert paper["aux"].item() > 0 and paper["aux"].item() != pytest.approx(overlap_form["aux"].item())
    assert paper["loss"].item() == pytest.approx(off["loss"].item() + paper["aux"].item())
    assert self_supervised_loss(out, image, on="coarse")["loss"].item() != pytest.approx(paper["loss"].item())
    assert self_supervised_loss(out, image, kind="ssim")["loss"].item() != pytest.approx(paper["loss"].item())


def test_the_image_only_edge_classifier_does_not_see_the_candidate_segment():
    from sgtool.autoencoder.model import EdgeClassifier

    torch.manual_seed(0)
    image = torch.rand(2, 1, 32, 32)
    coords = torch.tensor([[[-0.5, -0.5], [0.5, 0.4], [0.0, 0.6]]]).expand(2, 3, 2)
    pairs = node_pairs(3)
    lines, other = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for edge_input, sees in (("image", False), ("image+segment", True)):
        classifier = EdgeClassifier(edge_input).eval()
        a, b = classifier(image, lines, coords, pairs), classifier(image, other, coords, pairs)
        assert torch.allclose(a, b) != sees, edge_input
        assert not torch.allclose(a, classifier(torch.rand(2, 1, 32, 32), lines, coords, pairs))  # the image matters
    assert EdgeClassifier("image").conv[0].in_channels == 1 and EdgeClassifier("image").conv[4].out_channels == 16


def test_the_two_supervised_baselines_differ_and_freezing_leaves_only_the_edges(shapes_ws):
    from sgtool.autoencoder.losses import supervised_loss

    data = load_split(load_prepared(shapes_ws, "shapes"), "train", 64)
    torch.manual_seed(0)
    model = GraphAutoEncoder(4, 8)
    index = np.arange(8)
    out = model(torch.from_numpy(data.images[index]).float()[:, None] / 255, 1.0)
    points, edges = [data.points[i] for i in index], [data.edges[i] for i in index]
    paper, strong = supervised_loss(out, points, edges, "paper"), supervised_loss(out, points, edges, "strong")
    assert "coord" in strong and "coord" not in paper and paper["loss"].item() != pytest.approx(strong["loss"].item())
    frozen = supervised_loss(out, points, edges, "paper", frozen=True)
    assert frozen["loss"].item() == pytest.approx(paper["bce"].item())
    assert paper["loss"].item() == pytest.approx(paper["heatmap"].item())  # the attention alone first


def test_the_paper_heat_map_loss_compares_the_raw_channel_sum():
    from sgtool.autoencoder.losses import paper_heatmap_loss

    attention = torch.zeros(1, 2, 8, 8)
    attention[0, 0, 2, 3] = attention[0, 1, 5, 6] = 1.0  # one-hot maps on the two nodes
    c = pixel_centres(8)
    points = [np.array([[c[3], c[2]], [c[6], c[5]]])]
    assert paper_heatmap_loss(attention, points, 0.05, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # half the mass on each node: the raw sum peaks at 0.5, so the loss sees the missing half
    spread = torch.zeros(1, 2, 8, 8)
    spread[0, :, 2, 3] = spread[0, :, 5, 6] = 0.5
    assert paper_heatmap_loss(spread, points, 0.05, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert paper_heatmap_loss(attention * 0.5, points, 0.05, 1.0).item() == pytest.approx(2 * 0.25 / 64)


@pytest.mark.slow
def test_heat_map_training_alone_localises_the_nodes(heat_ws):
    """The paper baseline's first stage alone (the raw channel sum vs the heat map, with the sigma and peak
    chosen on validation: the AEConfig defaults) puts a DSNT point within 5 px of at least 70 % of the
    nodes of its small training set, on every seed (docs/methods/ae.md: at peak 1 it does not)."""
    from sgtool.autoencoder.evaluate import gt_point_graphs, predicted_point_graphs
    from sgtool.autoencoder.inference import predict
    from sgtool.eval.point_graph import localised

    data = load_split(load_prepared(heat_ws, "shapes"), "train", 64, HEAT_IMAGES)
    config = AEConfig(supervised=True, steps=HEAT_STEPS, batch_size=16, width=24, lr=HEAT_LR,
                      freeze_attention_epochs=1000, log_every=1000)
    before, after = [], []
    for seed in HEAT_SEEDS:
        torch.manual_seed(seed)
        model = GraphAutoEncoder(4, 24)
        before.append(localised(predicted_point_graphs(predict(model, data, config, "cpu")), gt_point_graphs(data)))
        fit(model, data, config, seed, "cpu")
        after.append(localised(predicted_point_graphs(predict(model, data, config, "cpu")), gt_point_graphs(data)))
    assert max(before) < 0.3 and min(after) >= 0.7, (before, after)


@pytest.mark.parametrize("freeze_epochs, encoder_moves", [(0.0, False), (1.0, True)])
def test_the_paper_baseline_trains_attention_then_edges(shapes_ws, freeze_epochs, encoder_moves):
    data = load_split(load_prepared(shapes_ws, "shapes"), "train", 64)
    config = AEConfig(supervised=True, steps=3, batch_size=16, width=8, freeze_attention_epochs=freeze_epochs,
                      log_every=1000)
    torch.manual_seed(0)
    model = GraphAutoEncoder(4, 8)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    fit(model, data, config, 0, "cpu")
    after = dict(model.named_parameters())
    encoder_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    edges_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("edges."))
    assert encoder_changed == encoder_moves and edges_changed != encoder_moves  # one stage at a time (weights)


def test_the_paper_optimiser_and_schedule(shapes_ws):
    from sgtool.autoencoder.trainee import AETrainee
    from sgtool.engine.loop import make_optimizer

    model = GraphAutoEncoder(4, 8)
    data = load_split(load_prepared(shapes_ws, "shapes"), "train", 64)

    def first_group(config: AEConfig) -> dict:  # the optimiser the one loop builds for the trainee
        trainee = AETrainee(config, model, data, "cpu")
        optimizer, _ = make_optimizer(trainee.config, model, trainee.config.epochs)
        assert isinstance(optimizer, torch.optim.Adam) and trainee.config.grad_clip == 5.0
        return optimizer.param_groups[0]

    group = first_group(AEConfig())
    assert group["betas"] == (0.6, 0.9) and group["lr"] == 5e-4
    assert first_group(AEConfig(supervised=True))["lr"] == 3e-4
    assert (AEConfig().batch_size, AEConfig().epochs) == (128, 30)
    log = fit(model, data, AEConfig(steps=6, batch_size=16, lr=1e-3, lr_drop_at=0.5, log_every=1), 0, "cpu")
    assert [r["lr"] for r in log if r["event"] == "train"] == pytest.approx([1e-3] * 3 + [1e-4] * 3)


# ---------------------------------------------------------------- step budget, time cap, plateau restarts

def test_the_step_budget_is_the_exact_number_of_optimiser_steps(shapes_ws, tmp_path):
    from sgtool.engine.loop import LAST, load_state

    data = load_split(load_prepared(shapes_ws, "shapes"), "train", 64)
    assert len(data) // 16 < 7  # the budget crosses an epoch boundary (and outlasts --epochs 1)
    torch.manual_seed(0)
    log = fit(GraphAutoEncoder(4, 8), data, AEConfig(steps=7, epochs=1, batch_size=16, log_every=1), 0, "cpu",
              folder=tmp_path)
    assert log[-1]["steps"] == 7 and [r["step"] for r in log if r["event"] == "train"] == list(range(1, 8))
    saved = load_state(tmp_path / "checkpoints" / LAST)
    assert saved["loop"]["step"] == 7
    assert {int(state["step"]) for state in saved["optimizer"]["state"].values()} == {7}  # Adam's own count
    capped = fit(GraphAutoEncoder(4, 8), data, AEConfig(steps=10_000, batch_size=16, minutes=1e-4), 0, "cpu")
    assert capped[-1]["steps"] < 10_000  # the time cap still ends training


def test_a_plateau_seed_is_restarted_with_the_next_seed(shapes_ws, monkeypatch):
    import json

    from sgtool.autoencoder import train as ae_train

    calls = []
    monkeypatch.setattr(ae_train, "on_plateau", lambda scores: calls.append(1) or len(calls) == 1)
    options = ["steps=1", "batch_size=16", "width=8", "train_images=32", "threads=1"]
    result = ae_train.train_autoencoder(shapes_ws, dataset="shapes", name="restarted", seed=5,
                                        overrides=[*options, "plateau_restarts=1"])
    assert (result.seeds, result.restarts, result.plateau_seeds, result.stuck_seeds) == ([6], 1, [5], [])
    saved = json.loads((result.path / "metrics.json").read_text())
    assert saved["plateau_restarts"] == 1 and saved["seeds"] == [6]
    assert (result.path / "checkpoints" / "model-seed6.pt").exists()
    assert not (result.path / "checkpoints" / "model-seed5.pt").exists()
    monkeypatch.setattr(ae_train, "on_plateau", lambda scores: True)
    kept = ae_train.train_autoencoder(shapes_ws, dataset="shapes", name="kept", seed=5, overrides=options)
    assert (kept.seeds, kept.restarts, kept.stuck_seeds) == ([5], 0, [5])  # no restarts asked: named, kept


def test_a_checkpoint_from_before_the_paper_forms_still_loads(tmp_path):
    from dataclasses import asdict

    from sgtool.autoencoder.inference import load_model

    model = GraphAutoEncoder(4, 8, edge_input="image+segment")
    earlier = {k: v for k, v in asdict(AEConfig(width=8)).items()
               if k not in ("edge_input", "aux", "baseline", "steps", "beta1", "beta2")}
    torch.save({"head": "ae", "config": earlier, "state": model.state_dict()}, tmp_path / "old.pt")
    loaded, config = load_model(tmp_path / "old.pt")
    assert config.edge_input == "image+segment" and loaded.edges.with_segment
