"""The iwsl head: the bound (exact and sampled with fixed noise), a mirror ascent that reaches the bound's
optimum on toy graphs and decides the labels, annealing that reaches tau_min, no label leak in SGCls, its
generator in the checkpoint, training."""
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
from sgtool.heads import ObjectPredictions, TrainData, get_head, gt_objects, make_config
from sgtool.heads._relbatch import RelBatch
from sgtool.heads.iwsl import (
    IwslHead, Potentials, annealing_rate, entropic_mirror_ascent, exact_image_bound, gumbel_noise, image_log_weights,
    importance_bound, infer, node_bounds, random_simplex, sample_concrete, sample_log_q, surrogate_logits, temperature,
)
from sgtool.workspace import Workspace

C, P = 5, 4
SMALL = {"hidden": 16, "rank": 4, "batch_size": 4, "samples": 8}


def built(**settings) -> tuple[IwslHead, object]:
    graphs = tiny_graphs(splits=(8, 2, 4))
    head = IwslHead(make_config(IwslHead, {**SMALL, **settings}), C, P)
    head.build(TrainData(graphs.split_subset("train"), graphs.split_subset("val"), None, {}))
    return head, graphs


def potentials_of_first_batch(head: IwslHead, graphs):
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    with torch.no_grad():
        return batch, head.model(batch).detach()


def inferred_objects(graphs, labels=None, seed: int = 0) -> ObjectPredictions:
    """SGCls-like objects: GT boxes, labels that are only a guess (labels_given False)."""
    rng = np.random.default_rng(seed)
    n = len(graphs.labels)
    labels = graphs.labels if labels is None else labels
    class_scores = rng.dirichlet(np.ones(C + 1), n).astype(np.float32)
    return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, labels.copy(),
                             rng.random(n).astype(np.float32), labels_given=False, class_scores=class_scores)


def trained(steps: int = 15, **settings) -> tuple[IwslHead, object]:
    head, graphs = built(**settings)
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    losses_over_steps(head, batch, steps=steps)
    return head, graphs


# ---------------------------------------------------------------- the bound and the density

def test_log_q_is_the_categorical_log_probability_at_the_corners_eq_16():
    log_pi = torch.tensor([0.2, 0.5, 0.3]).log()
    for k in range(3):
        assert float(sample_log_q(F.one_hot(torch.tensor(k), 3).float(), log_pi)) == pytest.approx(float(log_pi[k]))
    # Eq. 16 with pi's log-probabilities as logits: <theta, z> - max(theta) - log ||exp(theta - max theta)||_1
    z = torch.tensor([0.1, 0.6, 0.3])
    eq16 = (log_pi * z).sum() - log_pi.max() - (log_pi - log_pi.max()).exp().sum().log()
    assert float(sample_log_q(z, log_pi)) == pytest.approx(float(eq16), abs=1e-6)


def test_l1_is_the_one_sample_elbo_estimate_of_each_node():
    gen = torch.Generator().manual_seed(3)
    local, log_pi = torch.randn(6, 4, generator=gen), random_simplex((6, 4), gen)
    noise = gumbel_noise((1, 6, 4), gen)
    y = sample_concrete(log_pi, 0.9, 1, noise=noise).exp()
    elbo = (y * local).sum(-1)[0] - (y * log_pi).sum(-1)[0]
    torch.testing.assert_close(node_bounds(local, log_pi, 0.9, noise), elbo)


def test_the_per_node_bound_rises_with_more_samples_in_expectation():
    gen = torch.Generator().manual_seed(0)
    local, log_pi = 3 * torch.randn(20, 5, generator=gen), random_simplex((20, 5), gen)
    means = [float(torch.stack([node_bounds(local, log_pi, 1.0, gumbel_noise((s, 20, 5), gen)).mean()
                                for _ in range(300)]).mean()) for s in (1, 4, 16)]
    assert means[0] < means[1] < means[2]


def test_surrogate_logits_are_the_local_scores_of_eq_11_12_less_the_node_bound():
    head, graphs = built()
    _, pot = potentials_of_first_batch(head, graphs)
    inference = infer(pot, 1.0, 4, head.config, torch.Generator().manual_seed(0))
    pi_obj, pi_pred = inference.log_pi_obj.exp(), inference.log_pi_pred.exp()
    phi_obj, phi_pred = surrogate_logits(pot, inference)
    for node, (a, b) in ((2, (3, 1)), (0, (1, 2))):  # an object node, then a predicate node
        changed = [pi_obj.clone(), pi_obj.clone()]
        for y, k in zip(changed, (a, b)):
            y[node] = F.one_hot(torch.tensor(k), C).float()
        image = int(pot.box_image[node])
        diff = pot.log_score(changed[0][None], pi_pred[None])[0, image] - pot.log_score(changed[1][None], pi_pred[None])[0, image]
        assert float(phi_obj[node, a] - phi_obj[node, b]) == pytest.approx(float(diff), abs=1e-3)
        changed = [pi_pred.clone(), pi_pred.clone()]
        for y, k in zip(changed, (a, b)):
            y[node] = F.one_hot(torch.tensor(k), P).float()
        image = int(pot.pair_image[node])
        diff = pot.log_score(pi_obj[None], changed[0][None])[0, image] - pot.log_score(pi_obj[None], changed[1][None])[0, image]
        assert float(phi_pred[node, a] - phi_pred[node, b]) == pytest.approx(float(diff), abs=1e-3)
    local_obj, _ = pot.local_logits(pi_obj, pi_pred)
    torch.testing.assert_close(phi_obj, local_obj - inference.bound_obj[:, None])


# ---------------------------------------------------------------- mirror descent and the temperature

def test_mirror_descent_stays_on_the_simplex_and_climbs_a_concave_objective():
    target = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])

    def objective(pis):  # per group: cross entropy sum_k t_k log pi_k, concave, maximised at pi = t
        return (target * pis[0].clamp(min=1e-30).log()).sum(1)

    log_pi = torch.full((2, 3), 1 / 3).log()
    ascent = entropic_mirror_ascent(objective, [log_pi], [torch.arange(2)], 2, step=0.5, iters=200, tol=1e-9)
    pi = ascent.log_pis[0].exp()
    assert torch.all(pi >= 0) and torch.allclose(pi.sum(1), torch.ones(2), atol=1e-6)
    assert all(b >= a for a, b in zip(ascent.history, ascent.history[1:])) and torch.all(ascent.final > ascent.start)
    assert torch.allclose(pi, target, atol=1e-3) and bool(ascent.converged.all())


def test_a_too_large_step_is_halved_instead_of_lowering_the_bound():
    def objective(pis):
        return -((pis[0] - torch.tensor([0.9, 0.05, 0.05])) ** 2).sum(1) * 1e3

    log_pi = torch.tensor([[0.1, 0.1, 0.8]]).log()
    ascent = entropic_mirror_ascent(objective, [log_pi], [torch.zeros(1, dtype=torch.long)], 1, step=100.0,
                                    iters=30, tol=0.0)
    assert all(b >= a for a, b in zip(ascent.history, ascent.history[1:])) and float(ascent.final) > float(ascent.start)


def toy_graph(seed: int, c: int, p: int, both_directions: bool, coupling: float = 1.0) -> Potentials:
    """Two object nodes (c classes) and one or two predicate nodes (p classes): 3 or 4 nodes, one image."""
    gen = torch.Generator().manual_seed(seed)
    draw = (lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64))
    pairs = torch.tensor([[0, 1], [1, 0]] if both_directions else [[0, 1]])
    m, r = len(pairs), 2
    tables = {k: draw(n, r) for k, n in {"E_s": c, "F_s": p, "E_o": c, "F_o": p, "G_s": c, "G_o": c}.items()}
    return Potentials(2 * draw(2, c), 2 * draw(m, p), coupling * draw(m, r), coupling * draw(m, r),
                      coupling * draw(m, r), tables, pairs, torch.zeros(2, dtype=torch.long),
                      torch.zeros(m, dtype=torch.long), 1)


def mean_field_optimum(pot: Potentials, starts: int = 6) -> float:
    """The ELBO's best value from mean-field coordinate ascent (pi_n <- softmax of n's local scores) run to
    convergence from several random starts."""
    best = -math.inf
    for seed in range(starts):
        gen = torch.Generator().manual_seed(1000 + seed)
        pis = [random_simplex(pot.object_unary.shape, gen).double(), random_simplex(pot.predicate_unary.shape, gen).double()]
        for _ in range(5000):
            before = [q.clone() for q in pis]
            for which, rows in ((0, len(pis[0])), (1, len(pis[1]))):
                for n in range(rows):
                    local = pot.local_logits(pis[0].exp(), pis[1].exp())[which]
                    pis[which][n] = F.log_softmax(local[n], -1)
            if max(float((q - b).abs().max()) for q, b in zip(pis, before)) < 1e-13:
                break
        best = max(best, float(exact_image_bound(pot, pis[0], pis[1], None)[0]))
    return best


@pytest.mark.parametrize("c, p, both", [(3, 3, False), (4, 5, True), (5, 3, True)])
def test_mirror_ascent_reaches_the_elbo_optimum_of_toy_graphs(c, p, both):
    head_config = make_config(IwslHead, {"emd_tol": 1e-10, "emd_iters": 5000})
    for seed in range(4):
        pot = toy_graph(seed, c, p, both)
        inference = infer(pot, 0.5, 1, head_config, torch.Generator().manual_seed(seed))  # the random pi_0
        assert bool(inference.converged.all())
        assert float(inference.final[0]) == pytest.approx(mean_field_optimum(pot), abs=1e-3)


def test_mirror_ascent_reaches_the_optimum_of_the_fixed_noise_s1_bound():
    from scipy.optimize import minimize

    head_config = make_config(IwslHead, {"emd_tol": 1e-10, "emd_iters": 5000, "estimator": "sampled"})
    for seed in (2,):
        pot = toy_graph(seed, 3, 3, False, coupling=0.5)
        inference = infer(pot, 0.5, 1, head_config, torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)  # the same draws as infer: pi_0, then the noise
        random_simplex((2, 3), gen), random_simplex((1, 3), gen)
        noise_obj, noise_pred = gumbel_noise((1, 2, 3), gen).double(), gumbel_noise((1, 1, 3), gen).double()

        def negative_bound(theta):  # the same s = 1 bound, softmax-parametrised for Nelder-Mead
            t = torch.tensor(theta)
            log_obj, log_pred = F.log_softmax(t[:6].view(2, 3), -1), F.log_softmax(t[6:].view(1, 3), -1)
            return -float(image_log_weights(pot, log_obj, log_pred, 0.5, noise_obj, noise_pred, None)[0, 0])

        starts = np.random.default_rng(seed).normal(size=(3, 9))
        best = max(-minimize(negative_bound, x0, method="Nelder-Mead",
                             options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 6000, "maxfev": 6000}).fun
                   for x0 in starts)
        assert float(inference.final[0]) == pytest.approx(best, abs=1e-3)


def test_without_edges_pi_star_is_the_softmax_of_the_unaries():
    gen = torch.Generator().manual_seed(0)
    n, c, p, r = 12, 6, 4, 2
    tables = {k: torch.randn(size, r, generator=gen) for k, size in
              {"E_s": c, "F_s": p, "E_o": c, "F_o": p, "G_s": c, "G_o": c}.items()}
    pairs = torch.stack([torch.arange(0, n, 2), torch.arange(1, n, 2)], 1)
    zeros = torch.zeros(len(pairs), r)
    pot = Potentials(3 * torch.randn(n, c, generator=gen), torch.randn(len(pairs), p, generator=gen), zeros, zeros,
                     zeros, tables, pairs, torch.arange(n) // 4, torch.arange(len(pairs)) // 2, n // 4)
    head_config = make_config(IwslHead, {"emd_tol": 1e-8, "emd_iters": 3000})
    inference = infer(pot, 0.5, 50, head_config, torch.Generator().manual_seed(1))
    torch.testing.assert_close(inference.log_pi_obj.exp(), F.softmax(pot.object_unary, -1), atol=1e-3, rtol=0)
    per_image = torch.zeros(3).index_add_(0, pot.box_image, torch.logsumexp(pot.object_unary, 1))
    per_image.index_add_(0, pot.pair_image, torch.logsumexp(pot.predicate_unary, 1))
    torch.testing.assert_close(inference.final, per_image, atol=1e-3, rtol=0)  # the ELBO's optimum is log Z


def test_pi_star_is_decided_by_the_inference_not_by_its_start():
    head, graphs = trained(steps=15)
    _, pot = potentials_of_first_batch(head, graphs)
    runs = [infer(pot, head.tau, 8, head.config, torch.Generator().manual_seed(0), None,
                  torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert (runs[0].start_obj - runs[1].start_obj).abs().max() > 0.1  # two different pi_0
    assert bool(runs[0].converged.all()) and torch.all(runs[0].gain > 0)
    for name in ("log_pi_obj", "log_pi_pred"):
        first, second = getattr(runs[0], name).argmax(1), getattr(runs[1], name).argmax(1)
        assert float((first == second).float().mean()) >= 0.95
    kept = (runs[0].log_pi_obj.argmax(1) == runs[0].start_obj.argmax(1)).float().mean()
    assert float(kept) < 0.6
    test = graphs.split_subset("test")
    decided = head.predict(inferred_objects(test))
    assert decided.meta["converged_share"] == 1.0 and decided.meta["bound_gain_per_image"] > 0
    head.config.emd_iters = 0
    still = head.predict(inferred_objects(test))
    assert still.meta["bound_gain_per_image"] == 0 and still.meta["kept_start_argmax_predicates"] == 1.0
    assert np.abs(decided.rel_scores - still.rel_scores).max() > 1e-3


def test_pi_starts_at_random():
    head, graphs = built(emd_iters=0)
    _, pot = potentials_of_first_batch(head, graphs)
    first, second = (infer(pot, 1.0, 2, head.config, torch.Generator().manual_seed(s)) for s in (0, 1))
    assert (first.log_pi_pred - second.log_pi_pred).abs().max() > 0.1
    assert not torch.allclose(first.log_pi_obj, F.log_softmax(pot.object_unary, -1), atol=0.1)


def test_temperature_is_annealed_as_algorithm_1_writes_it_and_reaches_tau_min_at_anneal_steps():
    tau, tau_min, steps = 2.0, 0.5, 10
    beta = annealing_rate(tau, tau_min, steps)
    recursion = [tau]
    for t in range(1, 14):  # step 10 of Alg. 1: tau <- max(tau exp(-beta t), tau_min)
        recursion.append(max(recursion[-1] * math.exp(-beta * t), tau_min))
    assert [temperature(n, tau, tau_min, beta) for n in range(14)] == pytest.approx(recursion)
    assert recursion[steps - 1] > tau_min and recursion[steps] == pytest.approx(tau_min)
    head, graphs = built(tau=tau, tau_min=tau_min, anneal_steps=steps)
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    taus = [float(head.loss(batch)["tau"]) for _ in range(4)]
    assert taus == pytest.approx(recursion[:4])
    assert head.state_dict()["step"] == 4


# ---------------------------------------------------------------- what the head sees and keeps

def test_sgcls_predictions_do_not_depend_on_the_given_labels():
    head, graphs = trained()
    test = graphs.split_subset("test")
    truth = head.predict(inferred_objects(test))
    shuffled = np.random.default_rng(5).integers(1, C, len(test.labels))
    noise = head.predict(inferred_objects(test, labels=shuffled, seed=9))
    np.testing.assert_array_equal(truth.rel_scores, noise.rel_scores)
    np.testing.assert_array_equal(truth.labels, noise.labels)
    np.testing.assert_array_equal(truth.scores, noise.scores)
    assert not np.array_equal(truth.labels, shuffled)  # the returned labels are the head's own
    predcls = head.predict(gt_objects(test))
    np.testing.assert_array_equal(predcls.labels, test.labels)  # PredCls keeps the given labels


def test_predcls_labels_are_observed_nodes():
    head, graphs = trained()
    test = graphs.split_subset("test")
    objects = gt_objects(test)
    other = ObjectPredictions(objects.image_ids, objects.box_offsets, objects.boxes,
                              np.random.default_rng(1).integers(1, C, len(test.labels)), objects.scores)
    assert np.abs(head.predict(objects).rel_scores - head.predict(other).rel_scores).max() > 1e-3


def test_the_generator_state_round_trips():
    head, graphs = built()
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    head.loss(batch)
    saved, step = head.random_state(), head.step  # the step (temperature) travels in state_dict
    first = float(head.loss(batch)["loss"].detach())
    assert float(head.loss(batch)["loss"].detach()) != first  # fresh pi_0 and noise each step
    head.set_random_state(saved)
    head.step = step
    assert float(head.loss(batch)["loss"].detach()) == first


# ---------------------------------------------------------------- the head

def test_a_few_steps_lower_the_loss():
    head, graphs = built()
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    losses, terms = losses_over_steps(head, batch, steps=12)
    assert losses[-1] < 0.8 * losses[0]
    assert np.isfinite(float(terms["bound"])) and float(terms["bound_gain"]) > 0


def test_predictions_layout_and_checkpoint_round_trip():
    assert get_head("iwsl") is IwslHead
    head, graphs = built()
    test = graphs.split_subset("test")
    pred = head.predict(gt_objects(test))
    _, subj, obj = ordered_pairs(test.box_offsets)
    assert pred.rel_scores.shape == (len(subj), P)
    np.testing.assert_allclose(pred.rel_scores.sum(1), 1, atol=1e-5)
    assert sorted(map(tuple, pred.pairs)) == sorted(zip(subj, obj))
    assert np.isfinite(head.predict_stats["bound_per_image"]) and pred.meta["samples"] == 8
    again = IwslHead(head.config, C, P)
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again.predict(gt_objects(test)).rel_scores, pred.rel_scores, atol=1e-5)


def test_the_progress_line_shows_the_bound_gain_and_the_mirror_steps():
    from sgtool.engine.hooks import ProgressHook

    shown = {}

    class Bar:
        def update(self, task, **kwargs):
            shown.update(kwargs)

    class Loop:
        head, state = IwslHead(make_config(IwslHead, SMALL), C, P), type("State", (), {"epoch": 2})()

    ProgressHook(Bar()).after_epoch(Loop(), {"phase": "train", "train": {"loss": 1.5, "bound_gain": 42.5, "emd_iters": 12.5}})
    assert shown["status"] == "train loss 1.5000  bound_gain 42.5  emd_iters 12.5"


@pytest.mark.parametrize("settings, words", [
    ({"samples": 0}, "--samples must be at least 1, not 0."),
    ({"samples": -3}, "--samples must be at least 1, not -3."),
    ({"tau_min": 2.0}, "0 < tau_min <= tau"),
    ({"emd_step": 0}, "The setting emd_step must be at least 1e-08, not 0"),
    ({"emd_iters": -1}, "The setting emd_iters must be from 0 to 10000, not -1"),
])
def test_bad_settings_are_one_sentence(settings, words):
    with pytest.raises(SgtoolError, match=words):
        make_config(IwslHead, settings)


def test_bad_samples_on_the_cli_exit_2(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "train", "--head", "iwsl", "--samples", "0")
    assert result.code == 2 and "--samples must be from 1 to 100000, not 0." in result.err and "Traceback" not in result.err
    assert not (ws.root / "runs").exists() or not any((ws.root / "runs").iterdir())


def test_two_epochs_log_a_bound_gain_and_converged_inference(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(16, 3, 3))
    result = cli("-w", ws.root, "--quiet", "train", "--head", "iwsl", "--epochs", "2", "--samples", "10",
                 "--batch-size", "4", "--set", "hidden=16", "--json")
    assert result.code == 0, result.err
    run = ws.run_dir(json.loads(result.out)["run"])
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch"]
    assert len(epochs) == 2
    for epoch in epochs:
        assert epoch["train"]["bound_gain"] > 0 and epoch["train"]["converged"] > 0.9
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


def crowded_detections(graphs, keep: int, extra: int, seed: int = 0) -> tuple[ObjectPredictions, ObjectPredictions]:
    """SGDet-like objects: the first `keep` GT boxes of each image as its best detections (score 0.9), and the
    same followed by `extra` lower-scoring jittered copies of its GT boxes (what class-wise NMS leaves around
    each object)."""
    rng = np.random.default_rng(seed)
    best_boxes, crowd_boxes, crowd_scores = [], [], []
    for i in range(graphs.num_images):
        own = graphs.boxes[graphs.box_offsets[i]:graphs.box_offsets[i + 1]]
        copies = own[rng.integers(0, len(own), extra)] + rng.uniform(-3, 3, (extra, 4))
        best_boxes.append(own[:keep])
        crowd_boxes += [own[:keep], copies]
        crowd_scores += [np.full(keep, 0.9), rng.uniform(0.05, 0.5, extra)]
    n = graphs.num_images

    def objects(boxes: list, scores: np.ndarray, per_image: int) -> ObjectPredictions:
        stacked = np.concatenate(boxes).astype(np.float32)
        return ObjectPredictions(graphs.image_ids, np.arange(n + 1) * per_image, stacked,
                                 np.ones(len(stacked), np.int64), scores.astype(np.float32), detected=True,
                                 labels_given=False)

    return (objects(best_boxes, np.full(n * keep, 0.9), keep),
            objects(crowd_boxes, np.concatenate(crowd_scores), keep + extra))


def test_sgdet_relates_only_the_max_boxes_best_detections():
    """Every object node sums the messages of all its 2 (N - 1) pairs, so low-scoring duplicates beyond
    max_boxes must not reach the graph: they used to swamp the unaries and turn every label into one class."""
    head, graphs = trained(max_boxes=3)
    best, crowd = crowded_detections(graphs.split_subset("test"), keep=3, extra=25)
    alone, crowded = head.predict(best), head.predict(crowd)
    np.testing.assert_array_equal(crowded.box_offsets, best.box_offsets)
    np.testing.assert_array_equal(crowded.boxes, best.boxes)
    np.testing.assert_array_equal(crowded.labels, alone.labels)
    np.testing.assert_allclose(crowded.rel_scores, alone.rel_scores, atol=1e-6)
    assert len(crowded.pairs) == best.num_images * 3 * 2
    with pytest.raises(SgtoolError):
        make_config(IwslHead, {"max_boxes": 1})


def test_an_image_without_boxes_in_a_batch_changes_nothing_and_keeps_the_gradients_finite():
    """VRD has training images without a relation, hence without boxes: the scene box of such an image is
    undefined (its union of no boxes), and before the fix its NaN reached every weight's gradient at step 1."""
    head, graphs = built()
    batch = next(iter(head.batches(graphs.split_subset("train"), shuffle=False, rng=np.random.default_rng(0))))
    offsets = batch.box_offsets
    with_empty = RelBatch(np.concatenate([batch.image_ids[:1], [-1], batch.image_ids[1:]]),
                          np.concatenate([offsets[:2], offsets[1:]]), batch.boxes, batch.labels, batch.scores,
                          batch.pairs, batch.targets)
    assert with_empty.num_images == batch.num_images + 1 and len(with_empty.boxes) == len(batch.boxes)
    losses, grads = [], []
    for b in (batch, with_empty):
        head.generator.manual_seed(0)
        head.step = 0  # the same temperature
        head.model.zero_grad()
        loss = head.loss(b)["loss"]
        loss.backward()
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.flatten() for p in head.model.parameters() if p.grad is not None]))
    assert math.isfinite(losses[1]) and bool(torch.isfinite(grads[1]).all())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
