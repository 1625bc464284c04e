"""The iwsl head: the importance-weighted bound, the concrete density, mirror descent, annealing, training."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sgg_fixtures import losses_over_steps, save_tiny, tiny_graphs
from sgtool.data.graphs import ordered_pairs
from sgtool.errors import SgtoolError
from sgtool.heads import TrainData, get_head, gt_objects, make_config
from sgtool.heads.iwsl import (
    IwslHead, concrete_log_density, entropic_mirror_ascent, gumbel_noise, infer, log_bound, sample_concrete,
    surrogate_logits, temperature,
)
from sgtool.workspace import Workspace

C, P = 5, 4
SMALL = {"hidden": 16, "embed": 8, "rank": 4, "batch_size": 4, "samples": 8}


def built(**settings) -> tuple[IwslHead, object]:
    graphs = tiny_graphs(splits=(8, 2, 4))
    head = IwslHead(make_config(IwslHead, {**SMALL, **settings}), C, P)
    head.build(TrainData(graphs.split_subset("train"), graphs.split_subset("val"), None, {}))
    return head, graphs


def potentials_of_first_batch(head: IwslHead, graphs):
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    with torch.no_grad():
        return batch, head.model(batch).detach()


def start(pot):
    return F.log_softmax(pot.object_unary, -1), F.log_softmax(pot.predicate_unary, -1)


# ---------------------------------------------------------------- the bound and the density

def test_concrete_density_matches_the_closed_form_and_integrates_to_one():
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    y = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    tau, k = 0.7, 3
    closed = (math.gamma(k) * tau ** (k - 1) * float((pi / y ** tau).sum()) ** (-k)
              * float((pi / y ** (tau + 1)).prod()))
    assert float(concrete_log_density(y.log(), pi.log(), tau)) == pytest.approx(math.log(closed), rel=1e-9)
    # K = 2: the density of y_1 on (0, 1) integrates to 1
    grid = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    points = torch.stack([grid, 1 - grid], 1).log()
    density = concrete_log_density(points, torch.tensor([0.3, 0.7], dtype=torch.float64).log(), 0.8).exp()
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=2e-3)


def test_l1_is_the_one_sample_elbo_estimate():
    head, graphs = built()
    _, pot = potentials_of_first_batch(head, graphs)
    log_obj, log_pred = start(pot)
    gen = torch.Generator().manual_seed(3)
    noise_obj, noise_pred = gumbel_noise((1, *log_obj.shape), gen), gumbel_noise((1, *log_pred.shape), gen)
    bound = log_bound(pot, log_obj, log_pred, 0.9, noise_obj, noise_pred)
    y_obj = sample_concrete(log_obj, 0.9, 1, noise=noise_obj)
    y_pred = sample_concrete(log_pred, 0.9, 1, noise=noise_pred)
    log_q = torch.zeros(pot.num_images)
    log_q.index_add_(0, pot.box_image, concrete_log_density(y_obj, log_obj, 0.9)[0])
    log_q.index_add_(0, pot.pair_image, concrete_log_density(y_pred, log_pred, 0.9)[0])
    elbo = pot.log_score(y_obj.exp(), y_pred.exp())[0] - log_q
    torch.testing.assert_close(bound, elbo)


def test_the_bound_does_not_decrease_with_more_samples_in_expectation():
    head, graphs = built()
    _, pot = potentials_of_first_batch(head, graphs)
    log_obj, log_pred = start(pot)
    gen = torch.Generator().manual_seed(0)
    means = []
    for s in (1, 4, 16):
        draws = [log_bound(pot, log_obj, log_pred, 1.0, gumbel_noise((s, *log_obj.shape), gen),
                           gumbel_noise((s, *log_pred.shape), gen)).mean() for _ in range(300)]
        means.append(float(torch.stack(draws).mean()))
    assert means[0] < means[1] < means[2]


def test_surrogate_logits_equal_the_score_with_one_node_changed():
    head, graphs = built()
    _, pot = potentials_of_first_batch(head, graphs)
    log_obj, log_pred, bound, _ = infer(pot, 1.0, 4, head.config, torch.Generator().manual_seed(0))
    pi_obj, pi_pred = log_obj.exp(), log_pred.exp()
    phi_obj, phi_pred = surrogate_logits(pot, pi_obj, pi_pred, bound)
    for node, k in ((2, 3), (0, 1)):  # an object node, then a predicate node
        changed = pi_obj.clone()
        changed[node] = F.one_hot(torch.tensor(k), C).float()
        image = int(pot.box_image[node])
        expected = pot.log_score(changed[None], pi_pred[None])[0, image] - bound[image]
        assert float(phi_obj[node, k]) == pytest.approx(float(expected), abs=1e-3)
        changed = pi_pred.clone()
        changed[node] = F.one_hot(torch.tensor(k), P).float()
        image = int(pot.pair_image[node])
        expected = pot.log_score(pi_obj[None], changed[None])[0, image] - bound[image]
        assert float(phi_pred[node, k]) == pytest.approx(float(expected), abs=1e-3)


# ---------------------------------------------------------------- mirror descent and the temperature

def test_mirror_descent_stays_on_the_simplex_and_climbs_a_concave_objective():
    target = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])

    def objective(pis):  # cross entropy sum_k t_k log pi_k: concave, maximised at pi = t
        return (target * pis[0].clamp(min=1e-30).log()).sum()

    log_pi = torch.full((2, 3), 1 / 3).log()
    (final,), history = entropic_mirror_ascent(objective, [log_pi], step=0.5, iters=40, tol=0.0)
    pi = final.exp()
    assert torch.all(pi >= 0) and torch.allclose(pi.sum(1), torch.ones(2), atol=1e-6)
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))
    assert history[-1] > history[0]
    assert torch.allclose(pi, target, atol=0.02)


def test_mirror_descent_raises_the_importance_weighted_bound():
    head, graphs = built(emd_iters=8, emd_tol=0.0)
    _, pot = potentials_of_first_batch(head, graphs)
    log_obj, log_pred, _, history = infer(pot, 1.0, 8, head.config, torch.Generator().manual_seed(0))
    assert max(history) > history[0]
    assert torch.allclose(log_obj.exp().sum(1), torch.ones(len(log_obj)), atol=1e-5)
    assert torch.allclose(log_pred.exp().sum(1), torch.ones(len(log_pred)), atol=1e-5)


def test_temperature_schedule():
    assert temperature(0, 1.0, 0.5, 0.1) == 1.0
    assert temperature(3, 1.0, 0.5, 0.1) == pytest.approx(math.exp(-0.3))
    assert temperature(100, 1.0, 0.5, 0.1) == 0.5
    head, graphs = built(tau=2.0, tau_min=0.5, tau_decay=0.5)
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    taus = [float(head.loss(batch)["tau"]) for _ in range(4)]
    assert taus == pytest.approx([2.0, 2.0 * math.exp(-0.5), 2.0 * math.exp(-1.0), 0.5])  # floored at tau_min
    assert head.state_dict()["step"] == 4


# ---------------------------------------------------------------- the head

def test_a_few_steps_lower_the_loss():
    head, graphs = built()
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    losses, terms = losses_over_steps(head, batch)
    assert losses[-1] < 0.8 * losses[0]
    assert np.isfinite(float(terms["bound"]))


def test_predictions_layout_and_checkpoint_round_trip():
    assert get_head("iwsl") is IwslHead
    head, graphs = built()
    test = graphs.split_subset("test")
    pred = head.predict(gt_objects(test))
    _, subj, obj = ordered_pairs(test.box_offsets)
    assert pred.rel_scores.shape == (len(subj), P)
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, atol=1e-5)
    assert sorted(map(tuple, pred.pairs)) == sorted(zip(subj, obj))
    assert np.isfinite(head.predict_stats["bound_per_image"])
    again = IwslHead(head.config, C, P)
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again.predict(gt_objects(test)).rel_scores, pred.rel_scores, atol=1e-5)


@pytest.mark.parametrize("settings, words", [
    ({"samples": 0}, "--samples must be at least 1, not 0."),
    ({"samples": -3}, "--samples must be at least 1, not -3."),
    ({"tau_min": 2.0}, "0 < tau_min <= tau"),
    ({"emd_step": 0}, "emd_step must be positive"),
])
def test_bad_settings_are_one_sentence(settings, words):
    with pytest.raises(SgtoolError, match=words):
        make_config(IwslHead, settings)


def test_bad_samples_on_the_cli_exit_2(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "iwsl", "--samples", "0")
    assert result.code == 2 and "--samples must be at least 1, not 0." in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())


def test_trains_through_the_cli(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(8, 3, 3))
    result = cli("-w", ws.root, "--quiet", "train", "--head", "iwsl", "--epochs", "1", "--samples", "10",
                 "--set", "hidden=16", "--json")
    assert result.code == 0, result.err
    run = ws.run_dir(json.loads(result.out)["run"])
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r.get("event") == "epoch")
    assert np.isfinite(epoch["train"]["bound"]) and epoch["train"]["tau"] <= 1.0


def test_bilevel_resampling_repeats_rare_images_and_thins_common_instances():
    from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts
    from sgtool.heads.iwsl import instance_filter, repeat_factors, resampled_order

    # 10 images of 2 boxes; predicate 1 everywhere, predicate 3 only in image 0 (same pair direction reversed)
    pairs = [(2 * i, 2 * i + 1) for i in range(10)] + [(1, 0)]
    preds = [1] * 10 + [3]
    order = np.argsort([p[0] // 2 for p in pairs], kind="stable")
    rel = RelationSet(np.array(pairs)[order], np.array(preds)[order], offsets_from_counts(np.array([2] + [1] * 9)))
    boxes = np.tile(np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32), (10, 1))
    graphs = SceneGraphs(np.arange(10), np.full(10, 30), np.full(10, 30), np.zeros(10, np.int8),
                         offsets_from_counts(np.full(10, 2)), boxes, np.ones(20, np.int64), rel)
    r_image, r_pred = repeat_factors(graphs, P, thresh=0.4)
    assert r_pred[3] == pytest.approx(2.0) and r_pred[1] == 1.0  # sqrt(0.4 / 0.1), and f = 1 for predicate 1
    np.testing.assert_allclose(r_image, [2.0] + [1.0] * 9)
    visits = resampled_order(r_image, np.random.default_rng(0))
    assert np.sum(visits == 0) == 2 and len(visits) == 11
    keep = instance_filter(r_image, r_pred, drop_rate=1.0)
    kept = np.mean([keep(graphs.select([0]), np.array([0]), np.random.default_rng(s)) for s in range(400)], axis=0)
    assert kept[list(graphs.select([0]).relations.predicates).index(3)] == 1.0  # the rare one is never dropped
    assert kept[list(graphs.select([0]).relations.predicates).index(1)] == pytest.approx(0.5, abs=0.08)
    head, g = built(resample=True)
    batches = list(head.batches(g.split_subset("train"), shuffle=True, rng=np.random.default_rng(0)))
    assert batches and all(len(b.pairs) for b in batches)
