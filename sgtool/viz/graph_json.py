"""graph.json: one image's scene graph, for people and for `sgtool draw`.

{"image": path | null, "width": W, "height": H,
 "objects": [{"id", "label", "box": [x1, y1, x2, y2], "score"}],
 "relations": [{"subject": id, "predicate", "object": id, "score"}]}

`image` is absolute or relative to the graph file. Relations may carry a boolean "hit" (written
by `sgtool eval --dump-graphs`: a GT relation recalled in the top K, a prediction matching a GT).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sgtool import atomic
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.errors import SgtoolError
from sgtool.flags import flag

MAX_GRAPH_BYTES = 256 << 20  # bounds the memory json takes to read one (a 51 MB graph takes about 0.5 GB)
_HINT = "See the graph.json format in docs/training.md (Drawing graphs): objects with id, label and box; relations with subject, predicate and object."


def build_graph(*, image: str | None, width: int, height: int, boxes: np.ndarray, labels: np.ndarray,
                vocab: Vocabulary, scores: np.ndarray | None = None, pairs: np.ndarray | None = None,
                predicates: np.ndarray | None = None, rel_scores: np.ndarray | None = None,
                hits: np.ndarray | None = None) -> dict:
    """A graph.json payload from one image's arrays; pairs index the image's boxes (local rows)."""
    objects = [{"id": i, "label": vocab.object_name(int(label)), "box": [round(float(v), 2) for v in box],
                **({"score": round(float(scores[i]), 6)} if scores is not None else {})}
               for i, (box, label) in enumerate(zip(boxes, labels))]
    relations = []
    pairs = np.zeros((0, 2), np.int64) if pairs is None else pairs
    for r, (s, o) in enumerate(pairs):
        relation = {"subject": int(s), "predicate": vocab.predicate_name(int(predicates[r])), "object": int(o)}
        if rel_scores is not None:
            relation["score"] = round(float(rel_scores[r]), 6)
        if hits is not None:
            relation["hit"] = bool(hits[r])
        relations.append(relation)
    return {"image": image, "width": int(width), "height": int(height), "objects": objects, "relations": relations}


def write_graph(path: Path, graph: dict) -> None:
    atomic.write_json(Path(path), graph)


def read_graph(path: Path) -> dict:
    """Read and validate a graph.json; every problem is one sentence naming the file."""
    from sgtool.inputs import parse_json, read_text

    path = Path(path)
    text = read_text(path, "The graph file", MAX_GRAPH_BYTES, f"Keep the best relations only, e.g. with `sgtool predict {flag('top')}`.")
    payload = parse_json(text, path, _HINT)
    validate_graph(payload, path)
    return payload


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_graph(graph: object, path: Path | str) -> None:
    problem = _problem(graph)
    if problem:
        raise SgtoolError(f"{path} is not a valid graph.json: {problem}.", _HINT)


def _problem(graph: object) -> str | None:
    if not isinstance(graph, dict):
        return "the top level must be an object"
    for key in ("width", "height"):
        if key in graph and graph[key] is not None and not (_number(graph[key]) and graph[key] > 0):
            return f"'{key}' must be a positive number"
    if graph.get("image") is not None and not isinstance(graph["image"], str):
        return "'image' must be a path or null"
    if not isinstance(graph.get("objects"), list):
        return "it has no 'objects' list"
    ids, problem = _object_problem(graph["objects"])
    if problem:
        return problem
    relations = graph.get("relations", [])
    if not isinstance(relations, list):
        return "'relations' must be a list"
    return _relation_problem(relations, ids)


def _object_problem(objects: list) -> tuple[set, str | None]:
    ids: set = set()
    for n, obj in enumerate(objects):
        if not isinstance(obj, dict) or "id" not in obj:
            return ids, f"object {n} has no 'id'"
        if not isinstance(obj["id"], (int, str)) or isinstance(obj["id"], bool) or obj["id"] in ids:
            return ids, f"object {n} has a missing, duplicate or invalid id {obj['id']!r}"
        ids.add(obj["id"])
        if not isinstance(obj.get("label"), str):
            return ids, f"object {obj['id']!r} has no text 'label'"
        box = obj.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            return ids, f"the box of object {obj['id']!r} is not 4 numbers [x1, y1, x2, y2]"
        if box[2] < box[0] or box[3] < box[1]:
            return ids, f"the box of object {obj['id']!r} has x2 < x1 or y2 < y1"
        if "score" in obj and obj["score"] is not None and not _number(obj["score"]):
            return ids, f"the score of object {obj['id']!r} is not a number"
    return ids, None


def _relation_problem(relations: list, ids: set) -> str | None:
    for n, rel in enumerate(relations):
        if not isinstance(rel, dict):
            return f"relation {n} is not an object"
        for end in ("subject", "object"):
            if end not in rel:
                return f"relation {n} has no '{end}'"
            if rel[end] not in ids:
                return f"relation {n} points at an unknown {end} id {rel[end]!r}"
        if not isinstance(rel.get("predicate"), str):
            return f"relation {n} has no text 'predicate'"
        if "score" in rel and rel["score"] is not None and not _number(rel["score"]):
            return f"the score of relation {n} is not a number"
        if "hit" in rel and not isinstance(rel["hit"], bool):
            return f"'hit' of relation {n} is not true or false"
    return None


def image_path(graph: dict, graph_path: Path) -> Path | None:
    """The graph's image, resolved against the graph file's folder; None when absent or missing."""
    name = graph.get("image")
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = Path(graph_path).parent / path
    return path if path.is_file() else None


def relative_image(image: Path | None, graph_dir: Path) -> str | None:
    """How a graph written into graph_dir names an image: relative to it when possible."""
    if image is None:
        return None
    try:
        return os.path.relpath(Path(image).resolve(), Path(graph_dir).resolve())
    except ValueError:  # another drive on Windows
        return str(Path(image).resolve())


def top_relations(relations: Sequence[dict], top: int | None) -> list[dict]:
    """The `top` highest-scoring relations, in their order (stable; relations without a score rank last)."""
    if top is None or len(relations) <= top:
        return list(relations)
    scores = np.array([-(r.get("score") or 0.0) for r in relations], dtype=np.float64)
    keep = np.sort(np.argsort(scores, kind="stable")[:max(top, 0)])
    return [relations[i] for i in keep]
