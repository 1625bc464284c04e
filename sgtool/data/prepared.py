"""A prepared dataset in the workspace: writing one atomically, and loading it back.

Every `prepare` (synth, vg, vrd, custom, shapes) ends in `save_prepared`, which writes
sgg.h5, dicts.json, image_data.json and manifest.json beside the images the recipe staged,
computes the priors, and swaps the folder into place in one rename.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgtool import __version__, atomic
from sgtool.data.graphs import SceneGraphs
from sgtool.data.sgg_h5 import (
    Vocabulary, dicts_payload, image_data_payload, read_json, read_image_data, read_sgg_h5,
    vocabulary_from_dicts, write_sgg_h5,
)
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.priors import GroupRule, compute_priors, load_priors, save_priors
from sgtool.workspace import Workspace, check_name

MANIFEST = "manifest.json"


@dataclass
class Staged:
    """What a recipe's builder returns after writing its images into the staging folder."""

    graphs: SceneGraphs
    vocab: Vocabulary
    notes: dict  # recipe-specific facts for the manifest (dropped items, where sizes came from, ...)


@dataclass
class PreparedDataset:
    name: str
    path: Path
    graphs: SceneGraphs
    vocab: Vocabulary
    manifest: dict

    @property
    def has_images(self) -> bool:
        return bool(self.manifest.get("has_images"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_replace_allowed(ws: Workspace, name: str, recipe: str, parameters: dict, force: bool) -> None:
    manifest_path = ws.data_dir(name) / MANIFEST
    if force or not manifest_path.exists():
        return
    try:
        old = read_json(manifest_path)
    except SgtoolError as exc:
        raise SgtoolError(f"The dataset '{name}' has a corrupt {MANIFEST} ({manifest_path}), so it cannot be told apart "
                          "from another preparation.", f"Pass {flag('force')} to prepare it again in its place.") from exc
    if not isinstance(old, dict) or old.get("recipe") != recipe or old.get("parameters") != parameters:
        raise SgtoolError(f"The workspace already holds a dataset '{name}' prepared with other parameters.",
                          f"Pass {flag('force')} to replace it, or {flag('name')} to prepare it under another name.")


def save_prepared(ws: Workspace, name: str, recipe: str, parameters: dict,
                  build: Callable[[Path], Staged], groups: GroupRule | None = None,
                  force: bool = False) -> PreparedDataset:
    """Build a dataset into a staging folder and move it, with its priors, into the workspace."""
    check_name(name, "dataset name")
    ws.check_writable()
    with atomic.new_folder_kept_on_success(ws.data_dir(name).parent), \
            atomic.exclusive(ws.data_dir(name), f"the dataset '{name}'"):
        return _save_prepared(ws, name, recipe, parameters, build, groups, force)


def _save_prepared(ws: Workspace, name: str, recipe: str, parameters: dict, build: Callable[[Path], Staged],
                   groups: GroupRule | None, force: bool) -> PreparedDataset:
    _check_replace_allowed(ws, name, recipe, parameters, force)
    with atomic.atomic_directory(ws.data_dir(name)) as staging:
        staged = build(staging)
        graphs, vocab = staged.graphs, staged.vocab
        if graphs.num_images == 0:
            raise SgtoolError(f"The dataset '{name}' would hold no images.", "Check the source and its filters.")
        check_objects_per_image(graphs, name)
        widened = write_sgg_h5(staging / "sgg.h5", graphs)
        atomic.write_json(staging / "dicts.json", dicts_payload(vocab, graphs))
        atomic.write_json(staging / "image_data.json", image_data_payload(graphs))
        priors = compute_priors(graphs.split_subset("train"), vocab.num_object_classes,
                                vocab.num_predicate_classes, groups)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {
            "dataset": name,
            "recipe": recipe,
            "parameters": parameters,
            "seed": parameters.get("seed"),
            "sgtool_version": __version__,
            "num_object_classes": len(vocab.objects),
            "num_predicates": len(vocab.predicates),
            "has_images": any(f for f in graphs.files),
            "has_complete_ground_truth": graphs.complete is not None,
            "counts": graphs.counts_by_split(),
            **staged.notes,
            "boxes_kept_1_unit_wide": widened,
            "sha256": {str(p.relative_to(staging)): sha256_of(p) for p in files},
        }
        atomic.write_json(staging / MANIFEST, manifest)
        save_priors(ws.priors_path(name), priors)
    ws.set_latest("dataset", name)
    return PreparedDataset(name, ws.data_dir(name), graphs, vocab, manifest)


MAX_OBJECTS_PER_IMAGE = 2000  # priors and heads look at every ordered pair of an image's objects (4 million here)


def check_objects_per_image(graphs: SceneGraphs, name: str) -> None:
    """One sentence for an image with more objects than sgtool pairs up (a dense n x n per image)."""
    counts = graphs.box_counts()
    if len(counts) and counts.max() > MAX_OBJECTS_PER_IMAGE:
        worst = int(counts.argmax())
        raise SgtoolError(f"Image {int(graphs.image_ids[worst])} of the dataset '{name}' holds {int(counts[worst]):,} "
                          f"objects, more than the {MAX_OBJECTS_PER_IMAGE:,} per image sgtool pairs up.",
                          f"Keep at most {MAX_OBJECTS_PER_IMAGE:,} objects per image (e.g. the largest), or split the image.")


def load_prepared(ws: Workspace, name: str | None = None) -> PreparedDataset:
    """Load a prepared dataset (the latest one when no name is given)."""
    name = name if name is not None else ws.latest_dataset()
    path = ws.require_dataset(name)
    manifest = read_json(path / MANIFEST)
    vocab = vocabulary_from_dicts(read_json(path / "dicts.json"), path / "dicts.json")
    image_ids, widths, heights, files = read_image_data(path / "image_data.json")
    graphs = read_sgg_h5(path / "sgg.h5", widths, heights)
    graphs.image_ids, graphs.files = image_ids, files
    check_labels_in_vocabulary(graphs, vocab, path)
    return PreparedDataset(name, path, graphs, vocab, manifest)


def dataset_fingerprint(prepared: PreparedDataset) -> str:
    """One sha256 over the manifest's per-file sha256s: changes whenever any file of the dataset does."""
    files = prepared.manifest.get("sha256") if isinstance(prepared.manifest, dict) else None
    listing = "\n".join(f"{k}={v}" for k, v in sorted((files or {}).items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def check_same_dataset(prepared: PreparedDataset, fingerprint: str | None, run: str) -> None:
    """A run resumes only on the dataset it started on (runs older than the fingerprint are not checked)."""
    if fingerprint is not None and dataset_fingerprint(prepared) != fingerprint:
        raise SgtoolError(f"The dataset '{prepared.name}' was prepared again since run '{run}' started (its files' "
                          "sha256 differ), so the run cannot resume on it.",
                          f"Train a new run instead; keep a dataset a run uses under its own name (prepare {flag('name')}).")


def check_labels_in_vocabulary(graphs: SceneGraphs, vocab: Vocabulary, path: Path) -> None:
    if len(graphs.labels) and graphs.labels.max() > len(vocab.objects):
        raise SgtoolError(f"{path}: object label {graphs.labels.max()} is outside the vocabulary of {len(vocab.objects)} classes.",
                          "The dicts file does not belong to this h5 file.")
    for rels in (graphs.relations, graphs.complete):
        if rels is not None and len(rels) and rels.predicates.max() > len(vocab.predicates):
            raise SgtoolError(f"{path}: predicate {rels.predicates.max()} is outside the vocabulary of {len(vocab.predicates)} predicates.",
                              "The dicts file does not belong to this h5 file.")


def load_prepared_priors(ws: Workspace, name: str) -> dict:
    return load_priors(ws.priors_path(name))
