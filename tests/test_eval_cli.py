"""`sgtool eval`: the numbers are the engine's, the report is complete, bad input is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared_priors
from sgtool.engine.train import train
from sgtool.eval import evaluate
from sgtool.viz.graph_json import read_graph
from sgtool.workspace import Workspace


@pytest.fixture
def trained(tmp_path):
    ws = Workspace(tmp_path / "ws")
    prepared = save_tiny(ws, with_images=True)
    result = train(ws, head="freq")
    return ws, prepared, result.run


def direct(ws, prepared, run, split="test", ks=(20, 50, 100)):
    gt = prepared.graphs.split_subset(split)
    pred = read_predictions(ws.run_dir(run) / "predictions" / f"{split}.h5")
    priors = load_prepared_priors(ws, prepared.name)
    seen = [[s, p, o] for s, o, p in zip(*np.nonzero(priors["counts"] > 0)) if p > 0]
    return evaluate(gt, pred, task="predcls", num_predicates=len(prepared.vocab.predicates) + 1, ks=ks,
                    predicate_groups=priors["predicate_groups"], seen_triplets=np.array(seen).reshape(-1, 3))


def test_metric_json_equals_the_engine(trained, cli):
    ws, prepared, run = trained
    result = cli("-w", ws.root, "eval", "--metric", "R@50", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"R@50": pytest.approx(direct(ws, prepared, run).metrics["R@50"], abs=1e-12)}
    both = cli("-w", ws.root, "eval", "--metric", "mR@100", "--metric", "R@20", "--json")
    assert list(json.loads(both.out)) == ["mR@100", "R@20"]
    plain = cli("-w", ws.root, "eval", "--metric", "R@50")
    assert plain.out.split()[0] == "R@50" and len(plain.out.strip().splitlines()) == 1


def test_report_files_and_table(trained, cli):
    ws, prepared, run = trained
    result = cli("-w", ws.root, "eval", "--split", "val", "--k", "5,10")
    assert result.code == 0, result.err
    assert "R@K" in result.out and "@5" in result.out and "@10" in result.out and "convention" in result.out
    folder = ws.report_dir(run)
    report = json.loads((folder / "report.json").read_text())
    expected = direct(ws, prepared, run, "val", (5, 10)).metrics
    assert report["split"] == "val" and report["ks"] == [5, 10]
    assert report["metrics"]["R@10"] == pytest.approx(expected["R@10"])
    assert set(report["metrics"]) == set(expected)
    assert set(report["per_predicate"]["R@10"]) == set(prepared.vocab.predicates)
    markdown = (folder / "report.md").read_text()
    assert "| R@10 |" in markdown and "## Conventions" in markdown
    with Image.open(folder / "per_predicate_recall.png") as img:
        assert img.format == "PNG"


def test_dump_graphs_mark_hits_consistent_with_recall(trained, cli):
    ws, prepared, run = trained
    result = cli("-w", ws.root, "eval", "--dump-graphs", "100", "--k", "20")
    assert result.code == 0, result.err
    gt = prepared.graphs.split_subset("test")
    folder = ws.report_dir(run) / "graphs"
    recalls = []
    for image_id in gt.image_ids[gt.relations.counts() > 0]:
        truth = read_graph(folder / f"{image_id}.gt.json")
        pred = read_graph(folder / f"{image_id}.pred.json")
        assert truth["image"] and (folder / truth["image"]).is_file()
        assert len(pred["relations"]) <= 20 and all(isinstance(r["hit"], bool) for r in pred["relations"])
        recalls.append(np.mean([r["hit"] for r in truth["relations"]]))
        if any(r["hit"] for r in truth["relations"]):
            assert any(r["hit"] for r in pred["relations"])
    assert np.mean(recalls) == pytest.approx(direct(ws, prepared, run, ks=(20,)).metrics["R@20"])
    drawn = cli("draw", folder / f"{gt.image_ids[0]}.pred.json", "--json")
    assert drawn.code == 0 and json.loads(drawn.out)["with_image"] is True


def test_unknown_metric_lists_the_valid_ones(trained, cli):
    ws, _, run = trained
    result = cli("-w", ws.root, "eval", "--metric", "Q@7")
    assert result.code == 2
    message = " ".join(result.err.split())
    assert "Q@7" in message and "mR@K" in message and "zR@K" in message
    assert not ws.report_dir(run).exists()


@pytest.mark.parametrize("args, words", [
    (["--run", "nope"], "No run named 'nope'"),
    (["--split", "dev"], "Unknown split"),
    (["--k", "0"], "--k"),
    (["--k", "a,b"], "--k"),
    (["--task", "sgdet"], "predcls predictions"),
])
def test_eval_refuses_bad_options(trained, cli, args, words):
    ws, _, run = trained
    result = cli("-w", ws.root, "eval", *args)
    assert result.code == 2 and words in " ".join(result.err.split()), result.err
    assert not ws.report_dir(run).exists()


def test_eval_without_runs_is_a_user_error(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    result = cli("-w", ws.root, "eval")
    assert result.code == 2 and "no training run" in result.err


def test_metric_names_are_taken_as_written_and_uncomputed_ones_refused(trained, cli):
    ws, prepared, run = trained
    result = cli("-w", ws.root, "eval", "--metric", "R@50", "--metric", "R@50", "--json")
    assert result.code == 0 and list(json.loads(result.out)) == ["R@50"]
    assert cli("-w", ws.root, "eval", "--metric", "r@50").code == 2
    missing = cli("-w", ws.root, "eval", "--metric", "k5-R@50")
    assert missing.code == 2 and "k5-R@50 is not computed" in " ".join(missing.err.split())


def test_empty_images_skip_leaves_out_an_image_without_pairs(trained, cli):
    """An image with GT relations and no candidate pair: 0 by default, left out with --empty-images skip."""
    from dataclasses import replace

    from sgtool.data.graphs import offsets_from_counts
    from sgtool.data.predictions import write_predictions

    ws, prepared, run = trained
    path = ws.run_dir(run) / "predictions" / "test.h5"
    pred = read_predictions(path)
    gt = prepared.graphs.split_subset("test")
    first = int(np.flatnonzero(gt.relations.counts() > 0)[0])
    drop = pred.image_of_pair() == first  # that image keeps its boxes but loses every pair
    counts = np.diff(pred.pair_offsets)
    counts[first] = 0
    write_predictions(path, replace(pred, pair_offsets=offsets_from_counts(counts), pairs=pred.pairs[~drop],
                                    rel_scores=pred.rel_scores[~drop]))
    values = {}
    for mode in ("zero", "skip"):
        result = cli("-w", ws.root, "eval", "--empty-images", mode, "--json", "--metric", "R@100", "--metric", "A@100")
        assert result.code == 0, result.err
        values[mode] = json.loads(result.out)
        report = json.loads((ws.report_dir(run) / "report.json").read_text())
        wording = "counts 0" if mode == "zero" else "is left out (as SGB does)"
        assert all(wording in line for line in report["conventions"].values())
        assert "ties in every ranking keep the input order" in report["conventions"]["R@100"]
        assert "ties stably" in report["conventions"]["ng-R@100"]
    with_gt = int((gt.relations.counts() > 0).sum())
    assert values["zero"]["R@100"] == pytest.approx(values["skip"]["R@100"] * (with_gt - 1) / with_gt)
    assert values["zero"]["A@100"] < values["skip"]["A@100"]
    bad = cli("-w", ws.root, "eval", "--empty-images", "drop")
    assert bad.code == 2
