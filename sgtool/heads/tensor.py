"""The tensor head: Dupty, Zhang, Lee, "Visual Relationship Detection with Low Rank Non-Negative
Tensor Decomposition" (AAAI 2020). Equation-to-code map and deviations: docs/methods/tensor.md.

Per box pair the network emits R score vectors for the subject classes, the predicates and the
object classes (three branches, eq. 2); φ = exp(score) is a rank-R non-negative CP decomposition
of ψ_c(s, p, o | pair), normalised by Z (eq. 3, 6) without building the S×P×O tensor
(`sgtool.losses.tensor`). No label enters the network, in any task:

    subject branch    [subject ROI vector (visual) | subject box coordinates]      -> R × |S|
    object branch     [object ROI vector (visual)  | object box coordinates]       -> R × |O|
    predicate branch  [union ROI vector (visual)   | spatial feature]              -> R × |P|
    spatial feature   = conv net over the 2-channel binary box masks (subject, object) + the RelDN box deltas
    X_sel             one hidden layer over the predicate branch's input            -> P(sel | pair)

The pixel-free variant (features=spatial, annotation-only data) drops the ROI vectors.

    phase "triplet"  (epochs)      annotated triplets only, loss = −log y(s*, p*, o*) (eq. 4)
    phase "sel"      (sel_epochs)  X_sel on balanced annotated / unannotated pairs, binary cross
                                   entropy, the triplet network frozen

Prediction (eq. 7): score(s, p, o, pair) = P(boxes) · P(s, p, o | pair) · P(sel | pair), with
P(s, p, o | pair) ∝ ψ_c · ψ_u (`prior`; ψ_u = the +1-smoothed, normalised triplet counts) and
P(sel) = 1 without X_sel (`sel`). PredCls: the given labels select the slice p(p | s*, o*, pair) of
the same joint. SGCls / SGDet (phrase classification / detection): the head labels the objects
itself: the top-k triplets of S×P×O per pair (`k` = 1 | 10 | free; free k is chosen on the val
split from `k_grid` by R@50 and stored in the head state), written as one pair row per kept (s, o)
labelling with `Predictions.pair_labels`, its kept predicates' scores in the row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.config import how_to_set, option
from sgtool.errors import SgtoolError
from sgtool.features.source import VisualSource
from sgtool.features.spatial import SPATIAL_DIM, normalized_coords, pair_masks, spatial_features
from sgtool.flags import flag
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, VisualInputs, register_head
from sgtool.heads._layers import two_hidden_layer_mlp
from sgtool.heads._pairs import cap_boxes, frame_sizes, random_rank
from sgtool.losses.tensor import factored_nll, predicate_log_probs, topk_triplets

K_CHOICES = ("1", "10", "free")
PRESETS = ("cpu", "paper")
PHASES = ("triplet", "sel")
_CHUNK_PAIRS = 4096  # pairs through the network at once in predict
_FEATURE_CLIP = 10.0  # spatial numbers are clipped to ±this (degenerate boxes give huge ratios)
_PRIOR_FLOOR = 1e-12
COORD_DIM = 5


@dataclass
class TensorConfig(VisualHeadConfig):
    epochs: int = option(10, "Epochs of the triplet phase.", min=1)
    batch_size: int = option(16, "Images per batch.", min=1)
    lr: float = 1e-3
    grad_clip: float = 20.0  # the paper's gradient-norm clip
    val_metric: str = "kfree-R@50"  # model selection on the reported metric (the paper's free-k R@50)
    rank: int = option(5, "R, the number of rank-1 factors of the decomposition (the paper uses 5).", min=1)
    k: str = option("free", "Triplets per box pair before the per-image top K: 1, 10 or free (chosen on val).",
                    choices=K_CHOICES)
    k_grid: str = option("1,2,3,5,10,20", "The values of k tried on the val split for k=free.", flag=False)
    preset: str = option("cpu", "Optimiser preset: cpu (the settings above) or paper (SGD, lr 1e-4).",
                         choices=PRESETS, flag=False)
    hidden: int = option(128, "Width of the branches' two hidden layers (the paper: 4096).", min=1, flag=False)
    mask_size: int = option(32, "Side of the binary box masks (the paper: 64).", min=8, flag=False)
    spatial_dim: int = option(64, "Size of the spatial feature from the mask conv net (the paper: 512).", min=1,
                              flag=False)
    sel: bool = option(True, "X_sel: multiply by P(pair annotated), trained in a second phase.", flag=False)
    sel_epochs: int = option(2, "Epochs of the X_sel phase (0: no X_sel, like sel=false).", min=0, flag=False)
    sel_hidden: int = option(64, "Hidden width of the X_sel classifier (the paper: 4096).", min=1, flag=False)
    prior: bool = option(True, "Multiply by the triplet prior ψ_u at inference.", flag=False)
    max_boxes: int = option(80, "Detections kept per image (SGDet) before pairing.", min=2, flag=False)

    def validate(self) -> None:
        if self.preset == "paper":  # the paper's optimiser: SGD at lr 1e-4
            self.optimizer, self.lr = "sgd", 1e-4
        super().validate()
        self.k = str(self.k).lower()
        if self.k not in K_CHOICES:
            raise SgtoolError(f"The tensor head's {flag('k')} must be 1, 10 or free, not '{self.k}'.", f"Use {how_to_set(TensorConfig, 'k', 'free')}.")
        from sgtool.config import check_options

        check_options(self)
        self.grid()

    def grid(self) -> list[int]:
        """k_grid as sorted positive integers."""
        try:
            values = sorted({int(part) for part in str(self.k_grid).split(",") if part.strip()})
        except ValueError:
            values = []
        if not values or values[0] < 1:
            raise SgtoolError(f"The tensor head's k_grid must list positive whole numbers, not '{self.k_grid}'.",
                              f"Use {how_to_set(TensorConfig, 'k_grid', '1,2,3,5,10,20')}.")
        return values


# ---------------------------------------------------------------- the network


class MaskNet(nn.Module):
    """2 × M × M binary box masks -> two conv layers -> a fully connected layer (the paper's spatial feature)."""

    def __init__(self, size: int, out: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(2, 16, 5, stride=2, padding=2), nn.ReLU(),
                                   nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU())
        side = (size + 3) // 4
        self.fc = nn.Sequential(nn.Linear(32 * side * side, out), nn.ReLU())

    def forward(self, masks: Tensor) -> Tensor:
        return self.fc(self.convs(masks).flatten(1))


class TensorNet(nn.Module):
    """Subject / object / predicate branches (R vectors each) + the X_sel classifier."""

    def __init__(self, num_objects: int, num_predicates: int, config: TensorConfig, visual_dim: int = 0) -> None:
        super().__init__()
        c, p, r, h = num_objects, num_predicates, config.rank, config.hidden
        self.rank, self.num_objects, self.num_predicates, self.visual_dim = r, c, p, visual_dim
        self.mask_size = config.mask_size
        self.masks = MaskNet(config.mask_size, config.spatial_dim)
        self.visual_norm = nn.LayerNorm(visual_dim) if visual_dim else None  # shared over the three ROI vectors
        pair_dim = visual_dim + config.spatial_dim + SPATIAL_DIM
        self.subject = two_hidden_layer_mlp(visual_dim + COORD_DIM, h, r * c)
        self.object = two_hidden_layer_mlp(visual_dim + COORD_DIM, h, r * c)
        self.predicate = two_hidden_layer_mlp(pair_dim, h, r * p)
        self.sel = nn.Sequential(nn.Linear(pair_dim, config.sel_hidden), nn.ReLU(), nn.Linear(config.sel_hidden, 1))
        self.register_buffer("log_prior", torch.zeros(c, p, c))  # log ψ_u, [s, p, o]
        self.register_buffer("sel_trained", torch.zeros((), dtype=torch.bool))
        self.register_buffer("free_k", torch.zeros((), dtype=torch.long))  # 0: not chosen yet

    def triplet_modules(self) -> list[nn.Module]:
        return [m for m in (self.masks, self.visual_norm, self.subject, self.object, self.predicate) if m is not None]

    def inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Subject, object and predicate branch inputs of the pairs."""
        subj, obj = [batch["subject_coords"]], [batch["object_coords"]]
        pair = [self.masks(batch["masks"]), batch["spatial"].clamp(-_FEATURE_CLIP, _FEATURE_CLIP)]
        if self.visual_norm is not None:
            subj.insert(0, self.visual_norm(batch["subject"]))
            obj.insert(0, self.visual_norm(batch["object"]))
            pair.insert(0, self.visual_norm(batch["union"]))
        return torch.cat(subj, 1), torch.cat(obj, 1), torch.cat(pair, 1)

    def factors(self, inputs: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(B, R, S), (B, R, P), (B, R, O) scores; φ = exp(score)."""
        subj, obj, pair = inputs
        b, r = len(pair), self.rank
        return (self.subject(subj).view(b, r, -1), self.predicate(pair).view(b, r, -1),
                self.object(obj).view(b, r, -1))


# ---------------------------------------------------------------- pairs and inputs

def label_free_pair_inputs(box_offsets: np.ndarray, boxes: np.ndarray, subj: np.ndarray, obj: np.ndarray,
                mask_size: int) -> dict[str, Tensor]:
    """Label-free network inputs of pairs (global box rows): box coordinates, masks, RelDN deltas, in each
    image's box-extent frame (`_pairs.frame_sizes`)."""
    sizes = torch.from_numpy(frame_sizes(box_offsets, boxes)[owner_of_rows(box_offsets)[subj]])
    s, o = torch.from_numpy(boxes[subj].astype(np.float32)), torch.from_numpy(boxes[obj].astype(np.float32))
    return {"subject_coords": normalized_coords(s, sizes), "object_coords": normalized_coords(o, sizes),
            "masks": pair_masks(s, o, mask_size), "spatial": spatial_features(s, o, sizes)}


def selection_pairs(graphs: SceneGraphs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subj, obj, selected) per image: every annotated pair once, and as many random unannotated pairs."""
    n = max(len(graphs.labels), 1)
    pos = np.unique(graphs.relations.pairs[:, 0] * n + graphs.relations.pairs[:, 1])
    image, subj, obj = ordered_pairs(graphs.box_offsets)
    free = ~np.isin(subj * n + obj, pos)
    image, subj, obj = image[free], subj[free], obj[free]
    budget = np.bincount(graphs.image_of_box()[pos // n], minlength=graphs.num_images)
    keep = random_rank(image, rng) < budget[image]
    selected = np.concatenate([np.ones(len(pos), np.float32), np.zeros(int(keep.sum()), np.float32)])
    return np.concatenate([pos // n, subj[keep]]), np.concatenate([pos % n, obj[keep]]), selected


def group_triplets(pair: np.ndarray, triplets: np.ndarray, scores: np.ndarray,
                   num_predicates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept triplets (pair index, (s, p, o), score) -> one row per distinct (pair, s, o):
    (row pair index, (R, 2) labels, (R, P) scores with each kept predicate's score, column 0 = 1 − the rest)."""
    key = np.stack([pair, triplets[:, 0], triplets[:, 2]], 1)
    unique, row = np.unique(key, axis=0, return_inverse=True)
    row = row.ravel()
    rel = np.zeros((len(unique), num_predicates), np.float32)
    rel[row, triplets[:, 1]] = scores
    rel[:, 0] = np.clip(1.0 - rel[:, 1:].sum(1), 0.0, 1.0)
    return unique[:, 0], unique[:, 1:], rel


def box_labels_from_rows(num_boxes: int, pairs: np.ndarray, labels: np.ndarray, score: np.ndarray,
                         fallback: np.ndarray) -> np.ndarray:
    """Each box's label from its best-scoring row (as subject or object); `fallback` for boxes in none."""
    box = np.concatenate([pairs[:, 0], pairs[:, 1]])
    lab = np.concatenate([labels[:, 0], labels[:, 1]])
    order = np.lexsort((-np.concatenate([score, score]), box))
    box, lab = box[order], lab[order]
    first = np.ones(len(box), bool)
    first[1:] = box[1:] != box[:-1]
    out = fallback.astype(np.int64).copy()
    out[box[first]] = lab[first]
    return out


# ---------------------------------------------------------------- the head

KMeasure = Callable[[list[int]], dict[int, float]]  # grid -> val R@50 per k (the engine evaluates)


@register_head("tensor")
class TensorHead(VisualInputs, TrainableHead):
    """Dupty, Zhang, Lee (AAAI 2020): low-rank non-negative CP decomposition of p(s, p, o | pair),
    × ψ_u, × P(X_sel | pair); labels the objects itself in SGCls / SGDet."""

    Config = TensorConfig
    labels_objects: ClassVar[bool] = True

    def __init__(self, config: TensorConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: TensorNet | None = None
        self.visual_source: VisualSource | None = None
        self.phase = PHASES[0]
        self.k_override: int | None = None  # while the engine measures the grid

    # ------------------------------------------------------------ setup
    def _with_visual(self, inputs: dict[str, Tensor], image_ids: np.ndarray, box_offsets: np.ndarray,
                     boxes: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> dict[str, Tensor]:
        if self.uses_visual():
            inputs.update(self.visual_source(image_ids, box_offsets, boxes, np.stack([subj, obj], 1)))
        return inputs

    def _inputs(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray, subj: np.ndarray,
                obj: np.ndarray) -> dict[str, Tensor]:
        return self._with_visual(label_free_pair_inputs(box_offsets, boxes, subj, obj, self.config.mask_size),
                                 image_ids, box_offsets, boxes, subj, obj)

    def _new_model(self, visual_dim: int = 0) -> TensorNet:
        return TensorNet(self.num_object_classes, self.num_predicate_classes, self.config, visual_dim)

    def build(self, data: TrainData) -> TensorNet:
        prior = np.asarray(data.priors["triplet_prior"], dtype=np.float64)
        shape = (self.num_object_classes, self.num_object_classes, self.num_predicate_classes)
        if prior.shape != shape:
            raise SgtoolError(f"The triplet prior has shape {prior.shape}, which does not fit the vocabulary {shape}.",
                              "Run `sgtool prepare` for this dataset again.")
        self.model = self._new_model(int(self.visual_source.dim) if self.wants_visual() else 0)
        log_prior = np.log(np.maximum(prior, _PRIOR_FLOOR)).transpose(0, 2, 1)  # [s, o, p] -> [s, p, o]
        self.model.log_prior.copy_(torch.from_numpy(np.ascontiguousarray(log_prior)).float())
        self.model.to(data.device)
        return self.model

    def _require_model(self) -> TensorNet:
        if self.model is None:
            raise SgtoolError("The tensor head has no network yet.", "Train it or load its checkpoint first.")
        return self.model

    def _device(self) -> torch.device:
        return self._require_model().log_prior.device

    def phases(self) -> list[tuple[str, int]]:
        with_sel = self.config.sel and self.config.sel_epochs > 0
        return [("triplet", self.config.epochs)] + ([("sel", self.config.sel_epochs)] if with_sel else [])

    def begin_phase(self, phase: str) -> None:
        """triplet: train everything but X_sel; sel: train X_sel only, the triplet network frozen."""
        model = self._require_model()
        self.phase = phase
        for module in model.triplet_modules():
            module.requires_grad_(phase == "triplet")
        model.sel.requires_grad_(phase == "sel")
        if phase == "sel":
            model.sel_trained.fill_(True)

    # ------------------------------------------------------------ training
    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> list[dict[str, Tensor]]:
        """Batches of batch_size images (with relations): annotated triplets (triplet phase), or annotated
        and as many unannotated pairs (sel phase)."""
        order = rng.permutation(graphs.num_images) if shuffle else np.arange(graphs.num_images)
        order = order[graphs.relations.counts()[order] > 0]
        size = self.config.batch_size
        return [self.make_batch(graphs.select(np.sort(order[i:i + size])), rng) for i in range(0, len(order), size)]

    def make_batch(self, graphs: SceneGraphs, rng: np.random.Generator) -> dict[str, Tensor]:
        if self.phase == "sel":
            subj, obj, selected = selection_pairs(graphs, rng)
            batch = self._inputs(graphs.image_ids, graphs.box_offsets, graphs.boxes, subj, obj)
            batch["selected"] = torch.from_numpy(selected)
            return batch
        rels = graphs.relations  # one target per annotated triplet: a pair with 2 predicates counts twice
        subj, obj = rels.pairs[:, 0], rels.pairs[:, 1]
        batch = self._inputs(graphs.image_ids, graphs.box_offsets, graphs.boxes, subj, obj)
        batch["target"] = torch.from_numpy(np.stack([graphs.labels[subj], rels.predicates, graphs.labels[obj]],
                                                    1).astype(np.int64))
        return batch

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        model = self._require_model()
        batch = {k: v.to(self._device()) for k, v in batch.items()}
        inputs = model.inputs(batch)
        if self.phase == "sel":
            logits = model.sel(inputs[2].detach()).squeeze(1)
            accuracy = ((logits > 0).float() == batch["selected"]).float().mean()
            return {"loss": F.binary_cross_entropy_with_logits(logits, batch["selected"]), "sel_accuracy": accuracy}
        return {"loss": factored_nll(*model.factors(inputs), batch["target"])}

    # ------------------------------------------------------------ k per pair
    def triplets_per_pair(self) -> int:
        """k: 1, 10, the chosen free k (the grid's largest before it is chosen), or the engine's override."""
        if self.k_override is not None:
            return self.k_override
        if self.config.k != "free":
            return int(self.config.k)
        chosen = int(self._require_model().free_k)
        return chosen or self.config.grid()[-1]

    def select_k(self, measure: KMeasure) -> dict[int, float]:
        """k=free: R@50 of the val split for every k of the grid (`measure` predicts and evaluates with
        the grid's largest k); keep the best (the smallest on ties) in the head state."""
        grid = self.config.grid()
        self.k_override = grid[-1]
        try:
            recalls = measure(grid)
        finally:
            self.k_override = None
        best = max(grid, key=lambda k: (recalls.get(k, float("-inf")), -k))
        self._require_model().free_k.fill_(best)
        return recalls

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def scores(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The three factor score tensors and P(sel) (1 without X_sel) of prepared pair inputs."""
        model = self._require_model()
        was_training = model.training
        model.eval()
        try:
            inputs = {k: v.to(self._device()) for k, v in inputs.items()}
            branch = model.inputs(inputs)
            s, p, o = model.factors(branch)
            use_sel = self.config.sel and bool(model.sel_trained)
            sel = model.sel(branch[2]).squeeze(1).sigmoid() if use_sel else torch.ones(len(s), device=s.device)
            return s.float(), p.float(), o.float(), sel.float()
        finally:
            model.train(was_training)

    def slice_distribution(self, s: Tensor, p: Tensor, o: Tensor, sel: Tensor, subj_labels: Tensor,
                           obj_labels: Tensor) -> Tensor:
        """PredCls (M, P): [1 − P(sel), P(sel) · p(pred | s*, o*, pair)], p ∝ y(s*, ·, o*) ψ_u(s*, ·, o*)."""
        log_p = predicate_log_probs(s, p, o, subj_labels, obj_labels)[:, 1:]
        if self.config.prior:
            log_p = log_p + self._require_model().log_prior[subj_labels, 1:, obj_labels]
        return torch.cat([(1 - sel)[:, None], sel[:, None] * log_p.softmax(-1)], dim=1)

    def joint_topk(self, s: Tensor, p: Tensor, o: Tensor, sel: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Phrase classification: the k best foreground (s, p, o) per pair of P(s, p, o | pair) · P(sel)."""
        prior = self._require_model().log_prior[1:, 1:, 1:] if self.config.prior else None
        k = min(k, (s.shape[2] - 1) * (p.shape[2] - 1) * (o.shape[2] - 1))
        log_probs, triplets = topk_triplets(s[..., 1:], p[..., 1:], o[..., 1:], k, prior=prior, prior_is_log=True)
        return log_probs.exp() * sel[:, None], triplets + 1

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        if objects.detected:
            objects = cap_boxes(objects, self.config.max_boxes)
        image, subj, obj = ordered_pairs(objects.box_offsets)
        k = self.triplets_per_pair()
        parts = []
        for lo in range(0, len(subj), _CHUNK_PAIRS):
            rows = slice(lo, lo + _CHUNK_PAIRS)
            parts.append(self._predict_chunk(objects, subj[rows], obj[rows], k, lo))
        return self._assemble(objects, image, subj, obj, parts)

    def _predict_chunk(self, objects: ObjectPredictions, subj: np.ndarray, obj: np.ndarray, k: int,
                       first: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(pair index, (s, o) labels or None, (rows, P) scores) of one chunk of pairs."""
        s, p, o, sel = self.scores(self._inputs(objects.image_ids, objects.box_offsets, objects.boxes, subj, obj))
        if objects.labels_given:  # PredCls: the slice at the given labels, its k best predicates kept
            labels = [torch.from_numpy(objects.labels[rows].astype(np.int64)).to(s.device) for rows in (subj, obj)]
            dist = self.slice_distribution(s, p, o, sel, *labels).cpu().numpy()
            if k < dist.shape[1] - 1:
                cut = -np.sort(-dist[:, 1:], axis=1)[:, k - 1:k]
                dist[:, 1:] = np.where(dist[:, 1:] >= cut, dist[:, 1:], 0.0)
            return first + np.arange(len(subj)), None, dist
        score, triplets = self.joint_topk(s, p, o, sel, k)
        pair = np.repeat(np.arange(len(subj)), triplets.shape[1])
        index, labels, rel = group_triplets(pair, triplets.reshape(-1, 3).cpu().numpy(),
                                            score.reshape(-1).cpu().numpy(), self.num_predicate_classes)
        return first + index, labels, rel

    def _assemble(self, objects: ObjectPredictions, image: np.ndarray, subj: np.ndarray, obj: np.ndarray,
                  parts: list) -> Predictions:
        num_p = self.num_predicate_classes
        index = np.concatenate([part[0] for part in parts]) if parts else np.zeros(0, np.int64)
        rel = np.concatenate([part[2] for part in parts]) if parts else np.zeros((0, num_p), np.float32)
        pairs = np.stack([subj[index], obj[index]], 1).astype(np.int64)
        labels, pair_labels, scores = objects.labels, None, objects.scores.astype(np.float32)
        if not objects.labels_given:
            pair_labels = (np.concatenate([part[1] for part in parts]) if parts else np.zeros((0, 2), np.int64))
            labels = box_labels_from_rows(len(objects.labels), pairs, pair_labels, rel[:, 1:].max(1, initial=0),
                                          np.ones(len(objects.labels), np.int64))
            if not objects.detected:  # gold boxes: P(boxes) = 1
                scores = np.ones(len(labels), np.float32)
        return Predictions(
            image_ids=objects.image_ids, box_offsets=objects.box_offsets, boxes=objects.boxes, labels=labels,
            scores=scores, pair_offsets=offsets_from_counts(np.bincount(image[index], minlength=objects.num_images)),
            pairs=pairs, rel_scores=rel.astype(np.float32), pair_labels=pair_labels)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "features": "visual" if model.visual_dim else "spatial", "visual_dim": model.visual_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self._new_model(int(state.get("visual_dim", 0)))
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as exc:
            raise SgtoolError("The tensor checkpoint does not fit this head's settings (rank, sizes) or vocabulary.",
                              "Load it with the settings and dataset it was trained with.") from exc
        self.model = model
