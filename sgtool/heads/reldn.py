"""RelDN: Zhang, Shih, Elgammal, Tao, Catanzaro, "Graphical Contrastive Losses for Scene Graph Parsing",
CVPR 2019. Semantic + spatial + visual predicate logits (Eq. 9-12), Graphical Contrastive Losses (Eq. 1-8).

Per candidate ordered pair (s, o), with P = predicates + 1 columns (column 0 = no relation):

    semantic  = log_freq[label_s, label_o]            the frequency prior (a learnable copy by default)
    spatial   = MLP([spatial_features(s, o), emb(label_s), emb(label_o)])   RelDN eq. 9-11 (+ class embeddings)
    visual    = MLP([f_s, f_o, f_u]) + W_s f_s + W_o f_o                     ROI features, subject/object skips
                f_s, f_o: ROI vectors on the frozen detector backbone (conv_body_det);
                f_u: the union box's ROI vector on the predicate branch (conv_body_rel): with
                predicate_branch=trained (default, the paper's) a copy of the detector's backbone trained
                end to end with the head (`sgtool.features.union_branch`), with frozen the detector's own map
    logits    = semantic + spatial (+ visual);  p(pred | s, o) = softmax(logits)

`features`: "spatial" needs no pixels (annotation-only datasets such as VRD, or an explicit choice);
"visual" needs a visual feature source (ROI features of a trained detector,
`sgtool.features.source.DetectorVisualFeatures`) attached with `attach_visual` before `build`; "auto"
uses one when attached, else the spatial variant. The train stage attaches one for auto on every
dataset with images and stops with one sentence when there is no detector (`pixels_by_default`).

Training draws two samples per image (RelDN §5): for L0, up to `pairs_per_image` ordered pairs
with up to `positives_per_image` annotated rows (a pair with several predicates gives several
rows), the rest unannotated pairs (label 0); for L1-L3, separately, up to `contrastive_anchors`
subjects with an annotated relation, each with all its annotated pairs and up to
`contrastive_negatives` of its unannotated ones, and the same for objects. It minimises L0 (cross
entropy) + λ1 L1 + λ2 L2 + λ3 L3 (`sgtool.losses.contrastive.reldn_total_loss`). Prediction
scores every ordered pair and keeps the full distribution; triplets rank by p(s)·p(pred)·p(o) (object scores; 1 in PredCls).

Box coordinates are normalised by each image's box extent (max x2, max y2 of its boxes), in
training and prediction alike, because the objects a head receives carry no image size.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from sgtool.config import check_options, how_to_set, option
from sgtool.data.graphs import SceneGraphs, ordered_pairs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError
from sgtool.features.source import DetectorVisualFeatures, VisualSource  # noqa: F401 (re-exported)
from sgtool.features.spatial import SPATIAL_DIM
from sgtool.flags import setting
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, VisualInputs, register_head
from sgtool.heads._layers import two_hidden_layer_mlp
from sgtool.heads._pairs import pair_inputs, random_rank, score_all_pairs
from sgtool.losses.contrastive import AVERAGINGS, BOTH_SIDES, LOSS_NAMES, OBJECT_SIDE, SUBJECT_SIDE, parse_losses, reldn_total_loss

if TYPE_CHECKING:  # torchvision is imported only where it is used (a broken pair must not stop freq)
    from sgtool.features.union_branch import UnionBranch

_CHUNK_PAIRS = 200_000  # candidate pairs scored at once in predict


@dataclass
class ReldnConfig(VisualHeadConfig):
    epochs: int = 12
    batch_size: int = 8
    lr: float = 3e-3  # Adam
    weight_decay: float = 1e-5
    losses: str = option("L0,L1,L2,L3", "Losses to optimise, comma-separated from L0,L1,L2,L3 (default: all).")
    margin: float = option(0.2, "Margin of the contrastive losses.", min=0, flag=False)
    lambdas: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.1])  # λ1, λ2, λ3
    pairs_per_image: int = option(512, "Pairs sampled per training image.", min=1, flag=False)
    positives_per_image: int = option(128, "Annotated pairs among them at most.", min=1, flag=False)
    spatial_hidden: int = option(128, "Width of the spatial branch.", min=1, flag=False)
    class_embedding: int = option(16, "Class embedding size of the spatial branch (0: none).", min=0, flag=False)
    visual_hidden: int = option(256, "Width of the visual branch.", min=1, flag=False)
    learn_semantic: bool = option(True, "Learn the semantic (frequency) branch; false: the prior stays fixed.", flag=False)
    max_boxes: int = option(80, "Detections kept per image (SGDet) before pairing.", min=2, flag=False)
    predicate_branch: str = option(
        "trained", "union-box features with visual features: trained (a copy of the detector's backbone trained end "
        "to end with the head, RelDN's conv_body_rel) or frozen (the detector's own backbone)",
        choices=("frozen", "trained"), flag=False)
    contrastive_anchors: int = option(128, "subjects (and objects) with an annotated relation sampled per image for "
                                      "L1-L3", min=1, flag=False)
    contrastive_averaging: str = option(
        "official", "how L1-L3 average their groups: official (NVIDIA/ContrastiveLosses4VRD, the paper's numbers) or "
        "paper (Eq. 3, 5, 7 per anchor)", choices=AVERAGINGS, flag=False)
    contrastive_negatives: int = option(64, "unannotated pairs sampled per contrastive anchor (RelDN's K)", min=1,
                                        flag=False)

    def validate(self) -> None:
        super().validate()
        check_options(self)
        parse_losses(self.losses)
        checks = [
            (len(self.lambdas) == 3 and all(x >= 0 for x in self.lambdas),
             f"lambdas must be three non-negative weights (λ1, λ2, λ3), not {self.lambdas}", f"Use {how_to_set(ReldnConfig, 'lambdas', '[1.0,0.5,0.1]')}."),
            (self.positives_per_image <= self.pairs_per_image,
             f"positives_per_image ({self.positives_per_image}) must be between 1 and pairs_per_image "
             f"({self.pairs_per_image})", f"Use {how_to_set(ReldnConfig, 'pairs_per_image', 512)} {how_to_set(ReldnConfig, 'positives_per_image', 128)}."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(f"The reldn head's {message}.", hint)

    def loss_weights(self) -> dict[str, float]:
        return {"L0": 1.0, "L1": self.lambdas[0], "L2": self.lambdas[1], "L3": self.lambdas[2]}


# ---------------------------------------------------------------- the network


class ReldnNet(nn.Module):
    """The three RelDN branches; `branches` returns each branch's (M, P) logits, `forward` their sum."""

    def __init__(self, log_freq: np.ndarray, config: ReldnConfig, visual_dim: int = 0,
                 union_branch: UnionBranch | None = None) -> None:
        super().__init__()
        self.union_branch = union_branch
        num_classes, _, num_p = log_freq.shape
        self.semantic = nn.Parameter(torch.as_tensor(log_freq, dtype=torch.float32).clone(),
                                     requires_grad=config.learn_semantic)
        emb = config.class_embedding
        self.embedding = nn.Embedding(num_classes, emb) if emb else None
        self.spatial = two_hidden_layer_mlp(SPATIAL_DIM + 2 * emb, config.spatial_hidden, num_p)
        self.visual_dim = visual_dim
        if visual_dim:
            self.visual = two_hidden_layer_mlp(3 * visual_dim, config.visual_hidden, num_p)
            self.subject_skip = nn.Linear(visual_dim, num_p)
            self.object_skip = nn.Linear(visual_dim, num_p)

    def branches(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        s, o = batch["subj_label"], batch["obj_label"]
        out = {"semantic": self.semantic[s, o]}
        spatial_in = batch["spatial"]
        if self.embedding is not None:
            spatial_in = torch.cat([spatial_in, self.embedding(s), self.embedding(o)], dim=1)
        out["spatial"] = self.spatial(spatial_in)
        if self.visual_dim:
            fs, fo, fu = batch["subject"], batch["object"], batch["union"]
            if self.union_branch is not None and "union_images" in batch:
                fu = self.union_branch(batch["union_images"], batch["union_rois"])
            out["visual"] = (self.visual(torch.cat([fs, fo, fu], dim=1))
                             + self.subject_skip(fs) + self.object_skip(fo))
        return out

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return sum(self.branches(batch).values())


# ---------------------------------------------------------------- pairs and batches

@dataclass
class PairSample:
    """Training rows of a set of images: global box rows, image index and predicate (0 = none) per row."""

    image: np.ndarray
    subj: np.ndarray
    obj: np.ndarray
    predicate: np.ndarray


def sample_image_pairs(graphs: SceneGraphs, rng: np.random.Generator, pairs_per_image: int = 512,
                 positives_per_image: int = 128) -> PairSample:
    """Per image: up to positives_per_image annotated rows, then unannotated ordered pairs (label 0)
    up to pairs_per_image rows in all; sampled without replacement, all kept when fewer."""
    rels = graphs.relations
    rel_image = owner_of_rows(rels.offsets)
    keep_pos = random_rank(rel_image, rng) < positives_per_image
    pos_image = rel_image[keep_pos]
    image, subj, obj = ordered_pairs(graphs.box_offsets)
    n = max(len(graphs.labels), 1)
    annotated = np.isin(subj * n + obj, rels.pairs[:, 0] * n + rels.pairs[:, 1])
    image, subj, obj = image[~annotated], subj[~annotated], obj[~annotated]
    budget = pairs_per_image - np.bincount(pos_image, minlength=graphs.num_images)
    keep_neg = random_rank(image, rng) < budget[image]
    return PairSample(
        image=np.concatenate([pos_image, image[keep_neg]]),
        subj=np.concatenate([rels.pairs[keep_pos, 0], subj[keep_neg]]),
        obj=np.concatenate([rels.pairs[keep_pos, 1], obj[keep_neg]]),
        predicate=np.concatenate([rels.predicates[keep_pos], np.zeros(int(keep_neg.sum()), np.int64)]),
    )


@dataclass
class ContrastiveSample(PairSample):
    """The L1-L3 sample: rows as in PairSample, plus which side each row anchors (SUBJECT_SIDE / OBJECT_SIDE)."""

    side: np.ndarray


def sample_contrastive(graphs: SceneGraphs, rng: np.random.Generator, anchors: int = 128,
                       negatives: int = 64) -> ContrastiveSample:
    """Per image and side (subjects, objects): up to `anchors` entities with an annotated relation on
    that side, each with all its annotated rows and up to `negatives` of its unannotated ordered
    pairs (label 0), drawn at random without replacement (RelDN §3.4, §5)."""
    rels = graphs.relations
    rel_image = owner_of_rows(rels.offsets)
    box_image = owner_of_rows(graphs.box_offsets)
    image, subj, obj = ordered_pairs(graphs.box_offsets)
    n = max(len(graphs.labels), 1)
    annotated = np.isin(subj * n + obj, rels.pairs[:, 0] * n + rels.pairs[:, 1])
    parts = []
    for side, column, anchor_of_pair in ((SUBJECT_SIDE, 0, subj), (OBJECT_SIDE, 1, obj)):
        entity = np.unique(rels.pairs[:, column])
        is_anchor = np.zeros(len(graphs.labels), bool)
        is_anchor[entity[random_rank(box_image[entity], rng) < anchors]] = True
        pos = is_anchor[rels.pairs[:, column]]
        candidates = np.flatnonzero(~annotated & is_anchor[anchor_of_pair])
        neg = candidates[random_rank(anchor_of_pair[candidates], rng) < negatives]
        parts.append(ContrastiveSample(
            image=np.concatenate([rel_image[pos], image[neg]]), subj=np.concatenate([rels.pairs[pos, 0], subj[neg]]),
            obj=np.concatenate([rels.pairs[pos, 1], obj[neg]]),
            predicate=np.concatenate([rels.predicates[pos], np.zeros(len(neg), np.int64)]),
            side=np.full(int(pos.sum()) + len(neg), side, np.int64)))
    return ContrastiveSample(*(np.concatenate([getattr(p, k) for p in parts])
                               for k in ("image", "subj", "obj", "predicate", "side")))


# ---------------------------------------------------------------- the head

@register_head("reldn")
class ReldnHead(VisualInputs, TrainableHead):
    """RelDN with the Graphical Contrastive Losses. features=auto: on a dataset with images the paper's model (subject/object ROI features of a trained detector, the trained union-box branch, spatial and semantic modules; no detector is an error), on an annotation-only dataset spatial + semantic; the pixel-free variant on images is --set features=spatial.

    `pixels_by_default`: the train stage (`engine/visual.py`) resolves auto as said above.
    """

    Config = ReldnConfig
    pixels_by_default = True

    def __init__(self, config: ReldnConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.losses = parse_losses(config.losses)
        self.model: ReldnNet | None = None
        self.visual_source: VisualSource | None = None

    # ------------------------------------------------------------ setup
    def _new_model(self, log_freq: np.ndarray, visual_dim: int, trained_branch: bool = False) -> ReldnNet:
        shape = (self.num_object_classes, self.num_object_classes, self.num_predicate_classes)
        if log_freq.shape != shape:
            raise SgtoolError(f"The priors have shape {log_freq.shape}, which does not fit the vocabulary {shape}.",
                              "Run `sgtool prepare` for this dataset again.")
        return ReldnNet(log_freq, self.config, visual_dim, self._union_branch() if trained_branch else None)

    def _union_branch(self) -> UnionBranch:
        """conv_body_rel: a trainable copy of the visual source's detector backbone."""
        detector = getattr(self.visual_source, "detector", None)
        if detector is None:
            raise SgtoolError("predicate_branch=trained trains a copy of a detector's backbone, and this reldn head "
                              "has no detector features.",
                              f"Use a detector's features (`sgtool train-detector`), or {setting('predicate_branch', 'frozen')}.")
        from sgtool.features.union_branch import UnionBranch

        return UnionBranch(detector, getattr(self.visual_source, "grid", 2))

    def build(self, data: TrainData) -> ReldnNet:
        torch.manual_seed(data.seed)
        visual = self.wants_visual()
        trained = visual and self.config.predicate_branch == "trained"  # spatial: no visual module at all
        dim = self.visual_source.dim if visual else 0
        self.model = self._new_model(np.asarray(data.priors["log_freq"], dtype=np.float32), dim,
                                     trained).to(data.device)
        return self.model

    def _device(self) -> torch.device:
        return next(self._require_model().parameters()).device

    def _require_model(self) -> ReldnNet:
        if self.model is None:
            raise SgtoolError("The reldn head has no network yet.", "Train it or load its checkpoint first.")
        return self.model

    # ------------------------------------------------------------ training
    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """Batches of batch_size images with sampled pairs (fresh samples on every call)."""
        order = rng.permutation(graphs.num_images) if shuffle else np.arange(graphs.num_images)
        order = order[graphs.relations.counts()[order] > 0]
        for start in range(0, len(order), self.config.batch_size):
            yield self.make_batch(graphs.select(np.sort(order[start:start + self.config.batch_size])), rng)

    def make_batch(self, graphs: SceneGraphs, rng: np.random.Generator) -> dict[str, Any]:
        """The L0 sample's rows, then (when L1-L3 are on) the contrastive sample's rows, in one batch;
        `l0_rows` says where the first ends, `side` which side each contrastive row anchors."""
        c = self.config
        samples: list[PairSample] = [sample_image_pairs(graphs, rng, c.pairs_per_image, c.positives_per_image)]
        if any(name != "L0" for name in self.losses):
            samples.append(sample_contrastive(graphs, rng, c.contrastive_anchors, c.contrastive_negatives))
        image, subj, obj, predicate = (np.concatenate([getattr(x, k) for x in samples])
                                       for k in ("image", "subj", "obj", "predicate"))
        side = np.concatenate([np.full(len(samples[0].subj), BOTH_SIDES, np.int64)]
                              + [x.side for x in samples[1:] if isinstance(x, ContrastiveSample)])
        batch = pair_inputs(graphs.box_offsets, graphs.boxes, graphs.labels, subj, obj, image)
        batch.update(pair_image=torch.from_numpy(image), subj_index=torch.from_numpy(subj),
                     obj_index=torch.from_numpy(obj), predicate=torch.from_numpy(predicate),
                     side=torch.from_numpy(side), l0_rows=torch.tensor(len(samples[0].subj)))
        if self.uses_visual():
            batch.update(self.visual_source(graphs.image_ids, graphs.box_offsets, graphs.boxes, np.stack([subj, obj], 1)))
            branch = self._require_model().union_branch
            if branch is not None:
                images = [self.visual_source.image(int(i)) for i in graphs.image_ids]
                batch.update(branch.inputs(images, graphs.boxes[subj], graphs.boxes[obj], image))
        return batch

    def loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        model = self._require_model()
        device = self._device()
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch)
        n = int(batch["l0_rows"])
        rows = {k: batch[k] for k in ("pair_image", "subj_index", "obj_index", "subj_label", "obj_label", "predicate")}
        contrastive = None
        if len(logits) > n:
            contrastive = {"logits": logits[n:], "side": batch["side"][n:], **{k: v[n:] for k, v in rows.items()}}
        terms = reldn_total_loss(logits[:n], *(v[:n] for v in rows.values()), losses=self.losses,
                                 margin=self.config.margin, weights=self.config.loss_weights(), contrastive=contrastive,
                                 averaging=self.config.contrastive_averaging)
        out = {"loss": terms["total"]}
        out.update({name: terms[name].detach() for name in LOSS_NAMES if name in terms})
        return out

    # ------------------------------------------------------------ prediction
    def distribution(self, inputs: dict[str, Tensor]) -> Tensor:
        """(M, P) softmax over predicates (column 0 = no relation) for prepared pair inputs."""
        model = self._require_model()
        device = self._device()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model({k: v.to(device) for k, v in inputs.items()}).softmax(-1).float().cpu()
        finally:
            model.train(was_training)

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        return score_all_pairs(objects, self.config.max_boxes, self.num_predicate_classes, self._score_pairs,
                               _CHUNK_PAIRS).ranked()

    def _score_pairs(self, objects: ObjectPredictions, image: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> np.ndarray:
        inputs = pair_inputs(objects.box_offsets, objects.boxes, objects.labels, subj, obj, image)
        if self.uses_visual():
            inputs.update(self.visual_source(objects.image_ids, objects.box_offsets, objects.boxes, np.stack([subj, obj], 1)))
            branch = self._require_model().union_branch
            if branch is not None:
                was_training = branch.training
                branch.eval()
                inputs["union"] = branch.encode(self.visual_source.image, objects.image_ids, image,
                                                objects.boxes[subj], objects.boxes[obj])
                branch.train(was_training)
        return self.distribution(inputs).numpy()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "visual_dim": model.visual_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["model"]
        log_freq = np.asarray(weights["semantic"], dtype=np.float32)
        trained = any(key.startswith("union_branch.") for key in weights)
        self.model = self._new_model(log_freq, int(state.get("visual_dim", 0)), trained)
        self.model.load_state_dict(weights)
