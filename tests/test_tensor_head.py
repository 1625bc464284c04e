"""The tensor head (Hwang et al. 2018): predictions against the explicit tensor, phases, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgg_fixtures import tiny_graphs
from sgtool.data.synth import prepare_synth
from sgtool.engine.loop import run_loop
from sgtool.heads import TrainData, gt_objects, make_config
from sgtool.heads.tensor import TensorHead, selection_pairs
from sgtool.losses.tensor import log_full_tensor
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

C, P = 5, 4  # tiny vocabulary sizes with background


def tiny_data() -> TrainData:
    graphs = tiny_graphs()
    train_split = graphs.split_subset("train")
    return TrainData(train_split, graphs.split_subset("test"), None, compute_priors(train_split, C, P), "cpu", 0)


def tensor_head(**settings) -> TensorHead:
    return TensorHead(make_config(TensorHead, {"hidden": 16, "class_embedding": 4, "sel_hidden": 8, **settings}), C, P)


def test_predcls_distribution_is_the_tensor_slice_times_the_prior_times_sel(tmp_path):
    data = tiny_data()
    head = tensor_head(epochs=1, sel_epochs=1, rank=3)
    run_loop(head, data, tmp_path, lambda: {})
    pred = head.predict(gt_objects(data.val))
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, rtol=1e-5)
    # brute force: the explicit S×P×O tensor of each pair, sliced at its labels, × ψ_u[s, o, :]
    from sgtool.heads._pairs import pair_inputs

    model = head.model
    inputs = pair_inputs(pred.box_offsets, pred.boxes, pred.labels, pred.pairs[:, 0], pred.pairs[:, 1])
    with torch.no_grad():
        hidden = model.features(inputs)
        log_y = log_full_tensor(*model.factors(hidden))  # (M, S, P, O)
        sel = model.sel(hidden).squeeze(1).sigmoid().numpy()
    s, o = pred.labels[pred.pairs[:, 0]], pred.labels[pred.pairs[:, 1]]
    y = log_y[torch.arange(len(s)), torch.from_numpy(s), :, torch.from_numpy(o)].exp().numpy()[:, 1:]
    expected = y * data.priors["triplet_prior"][s, o, 1:]
    expected = expected / expected.sum(1, keepdims=True) * sel[:, None]
    np.testing.assert_allclose(pred.rel_scores[:, 1:], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.rel_scores[:, 0], 1 - sel, rtol=1e-5)


def test_the_sel_phase_leaves_the_triplet_network_unchanged(tmp_path):
    head, states = tensor_head(epochs=2, sel_epochs=2), []
    run_loop(head, tiny_data(), tmp_path, lambda: states.append(head.state_dict()["model"]) or {})
    assert len(states) == 4
    after_triplets, after_sel = states[1], states[3]
    triplet_keys = [k for k in after_sel if not k.startswith("sel.") and k != "sel_trained"]
    assert any(k.startswith("trunk.") for k in triplet_keys) and any(k.startswith("predicate.") for k in triplet_keys)
    for key in triplet_keys:
        assert torch.equal(after_triplets[key], after_sel[key]), key
    assert not torch.equal(after_triplets["sel.0.weight"], after_sel["sel.0.weight"])
    assert not torch.equal(states[0]["trunk.0.weight"], states[1]["trunk.0.weight"])  # trained in phase 1
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


def test_tensor_trains_through_the_cli_and_evaluates(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    prepare_synth(ws, images=60, workers=1)
    trained = cli("-w", ws.root, "--quiet", "train", "--head", "tensor", "--rank", "5", "--epochs", "2", "--k", "10",
                  "--json")
    assert trained.code == 0, trained.err
    run = ws.run_dir(json.loads(trained.out)["run"])
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r.get("phase") for r in records] == ["triplet", "triplet", "sel", "sel", None]
    import yaml

    options = yaml.safe_load((run / "config.yaml").read_text())["options"]
    assert (options["rank"], options["k"], options["grad_clip"]) == (5, "10", 20.0)
    evaluated = cli("-w", ws.root, "--quiet", "eval", "--json")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)["metrics"]
    assert 0 < metrics["R@50"] <= 1 and 0 < metrics["k10-R@50"] <= 1


@pytest.mark.parametrize("args, words", [
    (["--head", "tensor", "--rank", "0"], "--rank must be at least 1, not 0."),
    (["--head", "tensor", "--k", "3"], "--k must be 1, 10 or free"),
    (["--head", "freq", "--rank", "5"], "The freq head does not take --rank"),
    (["--head", "tensor", "--set", "features=visual"], "features=visual needs images"),
])
def test_bad_tensor_options_exit_2_with_one_sentence(tmp_path, cli, args, words):
    from sgg_fixtures import save_tiny

    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", *args)
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())
