"""Shared steps of the real-data recipes (VG, VRD, custom): vectorised over flat arrays.

Every reader turns its source into flat arrays — one row per box with its image index, one
row per relation with global box rows — and these helpers clip, drop, merge, de-duplicate,
split and assemble them into `SceneGraphs`. Nothing here loops over boxes or relations.
"""
from __future__ import annotations

import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.geometry import rowwise_iou

_PAIR_CHUNK_IMAGES = 20_000


@dataclass
class FlatGraphs:
    """Boxes and relations of many images before assembly; rows sorted by image."""

    box_image: np.ndarray  # (N,) image index of each box
    boxes: np.ndarray  # (N, 4) float64 xyxy pixels
    labels: np.ndarray  # (N,) 1-based
    rel_image: np.ndarray  # (M,) image index of each relation
    pairs: np.ndarray  # (M, 2) global box rows, -1 where an endpoint is gone
    predicates: np.ndarray  # (M,) 1-based, 0 = outside the vocabulary


# ---------------------------------------------------------------- names

_PUNCTUATION = re.compile(r"[^\w\s]|_", re.UNICODE)
_ARTICLES = ("a ", "an ", "the ")


def clean_name(name: str) -> str:
    """Lower case, NFC, hyphens as spaces, punctuation dropped, articles and extra spaces gone."""
    text = unicodedata.normalize("NFC", str(name)).lower().replace("-", " ")
    text = " ".join(_PUNCTUATION.sub("", text).split())
    for article in _ARTICLES:
        if text.startswith(article):
            text = text[len(article):]
    return text


def fold_accents(name: str) -> str:
    """'zébra' -> 'zebra': drop combining marks (a fallback for English vocabularies)."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))


def singular_candidates(name: str) -> list[str]:
    """Regular English singulars of a (possibly) plural noun phrase, most likely first."""
    head, _, last = name.rpartition(" ")
    prefix = f"{head} " if head else ""
    out = []
    if last.endswith("ies") and len(last) > 4:
        out.append(prefix + last[:-3] + "y")
    if last.endswith("es") and len(last) > 3:
        out.append(prefix + last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 2:
        out.append(prefix + last[:-1])
    return out


class NameMapper:
    """Raw name -> 1-based class id (0 when outside the vocabulary), memoised.

    Order of rules: the cleaned name itself, then the alias table, then a regular singular
    of it (only when the plural is not itself a class: VG150 has both 'man' and 'men'); all of
    that again with accents folded ('Zébra' -> 'zebra') when nothing matched.
    """

    def __init__(self, vocabulary: list[str], aliases: dict[str, str], plurals: bool = True) -> None:
        self.index = {name: i + 1 for i, name in enumerate(vocabulary)}
        self.aliases = {clean_name(k): clean_name(v) for k, v in aliases.items()}
        self.plurals = plurals
        self.cache: dict[str, int] = {}

    def __call__(self, raw: object) -> int:
        key = raw if isinstance(raw, str) else str(raw)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self._lookup(clean_name(key))
        return found

    def _lookup(self, name: str) -> int:
        found = self._lookup_exact(name)
        folded = fold_accents(name)
        return found or (self._lookup_exact(folded) if folded != name else 0)

    def _lookup_exact(self, name: str) -> int:
        for candidate in (name, self.aliases.get(name)):
            if candidate in self.index:
                return self.index[candidate]
        if self.plurals:
            for candidate in singular_candidates(name):
                target = self.aliases.get(candidate, candidate)
                if target in self.index:
                    return self.index[target]
        return 0


def read_alias_file(path: Path) -> dict[str, str]:
    """Visual Genome alias files: one comma-separated line per group, the first name is the target."""
    aliases: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        names = [n.strip() for n in line.split(",") if n.strip()]
        for alias in names[1:]:
            aliases.setdefault(alias, names[0])
    return aliases


# ---------------------------------------------------------------- boxes

def drop_boxes(flat: FlatGraphs, keep: np.ndarray) -> tuple[FlatGraphs, int]:
    """Remove boxes and every relation without both endpoints; returns how many relations lost one here."""
    new_row = np.full(len(keep) + 1, -1, dtype=np.int64)  # index -1 maps to -1
    new_row[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int64)
    pairs = new_row[flat.pairs]
    alive = (pairs >= 0).all(axis=1)
    lost = ~alive & (flat.pairs >= 0).all(axis=1)
    return FlatGraphs(flat.box_image[keep], flat.boxes[keep], flat.labels[keep],
                      flat.rel_image[alive], pairs[alive], flat.predicates[alive]), int(lost.sum())


def merge_same_label_boxes(flat: FlatGraphs, iou_threshold: float) -> tuple[FlatGraphs, int]:
    """Merge boxes of one image and one label whose IoU >= threshold into the first of them."""
    n = len(flat.labels)
    offsets = offsets_from_counts(np.bincount(flat.box_image, minlength=_num_images(flat)))
    rep = np.arange(n, dtype=np.int64)
    for start in range(0, len(offsets) - 1, _PAIR_CHUNK_IMAGES):
        stop = min(start + _PAIR_CHUNK_IMAGES, len(offsets) - 1)
        base = offsets[start]
        _, subj, obj = ordered_pairs(offsets[start:stop + 1] - base)
        subj, obj = subj + base, obj + base
        keep = (subj < obj) & (flat.labels[subj] == flat.labels[obj])
        subj, obj = subj[keep], obj[keep]
        close = rowwise_iou(flat.boxes[subj], flat.boxes[obj], legacy=False) >= iou_threshold
        np.minimum.at(rep, obj[close], subj[close])
    while True:  # follow chains a -> b -> c to the first box
        nxt = rep[rep]
        if np.array_equal(nxt, rep):
            break
        rep = nxt
    pairs = np.where(flat.pairs >= 0, rep[np.maximum(flat.pairs, 0)], -1)
    merged = FlatGraphs(flat.box_image, flat.boxes, flat.labels, flat.rel_image, pairs, flat.predicates)
    is_rep = rep == np.arange(n)
    result, _ = drop_boxes(merged, is_rep)
    return result, int(n - is_rep.sum())


def _num_images(flat: FlatGraphs) -> int:
    top = [flat.box_image.max() + 1 if len(flat.box_image) else 0,
           flat.rel_image.max() + 1 if len(flat.rel_image) else 0]
    return int(max(top))


# ---------------------------------------------------------------- relations

def drop_relations(flat: FlatGraphs, keep: np.ndarray) -> FlatGraphs:
    return FlatGraphs(flat.box_image, flat.boxes, flat.labels, flat.rel_image[keep], flat.pairs[keep], flat.predicates[keep])


def first_occurrences(rows: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each distinct row (order kept)."""
    keep = np.zeros(len(rows), dtype=bool)
    if len(rows):
        _, first = np.unique(rows, axis=0, return_index=True)
        keep[first] = True
    return keep


def clean_relations(flat: FlatGraphs, dedupe: bool = True, drop_self: bool = True) -> tuple[FlatGraphs, dict[str, int]]:
    """Drop relations with a missing endpoint or predicate, self-relations (optionally), and exact duplicates (optionally)."""
    valid = (flat.pairs >= 0).all(axis=1) & (flat.predicates > 0)
    self_rel = valid & (flat.pairs[:, 0] == flat.pairs[:, 1])
    flat = drop_relations(flat, valid & ~(self_rel & drop_self))
    notes = {"relations_dropped_unknown": int((~valid).sum()),
             ("relations_dropped_self" if drop_self else "self_relations"): int(self_rel.sum())}
    if dedupe:
        keep = first_occurrences(np.column_stack([flat.pairs, flat.predicates]))
        notes["relations_merged_duplicates"] = int((~keep).sum())
        flat = drop_relations(flat, keep)
    return flat, notes


# ---------------------------------------------------------------- assembly and splits

def assemble(flat: FlatGraphs, image_ids: np.ndarray, widths: np.ndarray, heights: np.ndarray,
             split: np.ndarray, files: list[str | None] | None = None) -> SceneGraphs:
    """Flat rows (any order) -> SceneGraphs with boxes and relations grouped by image."""
    num = len(image_ids)
    order = np.argsort(flat.box_image, kind="stable")
    new_row = np.empty(len(order), dtype=np.int64)
    new_row[order] = np.arange(len(order))
    rel_order = np.argsort(flat.rel_image, kind="stable")
    pairs = new_row[flat.pairs[rel_order]] if len(rel_order) else np.zeros((0, 2), np.int64)
    return SceneGraphs(
        image_ids=np.asarray(image_ids, np.int64), widths=np.asarray(widths, np.int64),
        heights=np.asarray(heights, np.int64), split=np.asarray(split, np.int8),
        box_offsets=offsets_from_counts(np.bincount(flat.box_image, minlength=num)),
        boxes=flat.boxes[order].astype(np.float32), labels=flat.labels[order].astype(np.int64),
        relations=RelationSet(pairs.reshape(-1, 2).astype(np.int64), flat.predicates[rel_order].astype(np.int64),
                              offsets_from_counts(np.bincount(flat.rel_image, minlength=num))),
        files=list(files) if files else [],
    )


VAL_PICKS = ("first", "random")


def carve_val(split: np.ndarray, count: int, seed: int, source: str, pick: str = "random",
              eligible: np.ndarray | None = None) -> np.ndarray:
    """Move `count` training images (among the `eligible` ones, default all) to split 1 (val): the
    first ones in file order (the community loader's rule) or, with pick="random", a sample drawn
    with the seed."""
    split = split.copy()
    train = np.flatnonzero((split == 0) & (True if eligible is None else eligible))
    if pick not in VAL_PICKS:
        raise SgtoolError(f"Unknown validation pick '{pick}'.", f"Use one of: {', '.join(VAL_PICKS)}.")
    if count < 0 or count >= len(train):
        raise SgtoolError(f"Cannot take {count} validation images from the {len(train)} training images of {source}.",
                          f"Pass a smaller {flag('val')} (0 for no validation split).")
    chosen = train[:count] if pick == "first" else np.random.default_rng(seed).choice(train, size=count, replace=False)
    split[chosen] = 1
    return split


def default_val_count(split: np.ndarray, wanted: int) -> int:
    """The recipe's val size, capped at a tenth of the training images for small inputs."""
    return int(min(wanted, int((split == 0).sum()) // 10))


def link_images(staging: Path, sources: list[Path | None], targets: list[str | None]) -> list[str | None]:
    """Symlink (or copy where links fail) each existing source image to staging/target."""
    out: list[str | None] = []
    for src, rel in zip(sources, targets):
        if src is None or rel is None:
            out.append(None)
            continue
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(Path(src).resolve(), dest)
        except OSError:
            shutil.copy2(src, dest)
        out.append(rel)
    return out


def split_counts(split: np.ndarray, values: np.ndarray | None = None) -> dict[str, int]:
    """Per split name, the number of images (or the sum of per-image values)."""
    values = np.ones(len(split), np.int64) if values is None else values
    return {name: int(values[split == code].sum()) for name, code in (("train", 0), ("val", 1), ("test", 2))}
