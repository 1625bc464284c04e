"""RelDN (Zhang et al., CVPR 2019): semantic + spatial + visual predicate logits, Graphical Contrastive Losses.

Per candidate ordered pair (s, o), with P = predicates + 1 columns (column 0 = no relation):

    semantic  = log_freq[label_s, label_o]            the frequency prior (a learnable copy by default)
    spatial   = MLP([spatial_features(s, o), emb(label_s), emb(label_o)])   RelDN eq. 9-11 (+ class embeddings)
    visual    = MLP([f_s, f_o, f_u]) + W_s f_s + W_o f_o                     ROI features, subject/object skips
    logits    = semantic + spatial (+ visual);  p(pred | s, o) = softmax(logits)

`features`: "spatial" needs no pixels (annotation-only datasets such as VRD); "visual" needs a
visual feature source (ROI features of a trained detector, `sgtool.features.source.DetectorVisualFeatures`) attached
with `attach_visual` before `build`; "auto" uses one when attached, else the spatial variant.

Training samples, per image, up to `pairs_per_image` ordered pairs with up to
`positives_per_image` annotated rows (a pair with several predicates gives several rows), the
rest unannotated pairs (label 0), and minimises L0 (cross entropy) + λ1 L1 + λ2 L2 + λ3 L3
(`sgtool.losses.contrastive.reldn_total_loss`). Prediction scores every ordered pair and keeps the
full distribution; triplets rank by p(s)·p(pred)·p(o) (object scores; 1 in PredCls).

Box coordinates are normalised by each image's box extent (max x2, max y2 of its boxes), in
training and prediction alike, because the objects a head receives carry no image size.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sgtool.data.graphs import SceneGraphs, ordered_pairs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.features.source import DetectorVisualFeatures, VisualSource  # noqa: F401 (re-exported)
from sgtool.features.spatial import SPATIAL_DIM
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, VisualInputs, register_head
from sgtool.heads._pairs import pair_inputs, random_rank, score_all_pairs
from sgtool.losses.contrastive import LOSS_NAMES, parse_losses, reldn_total_loss

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

    def validate(self) -> None:
        super().validate()
        parse_losses(self.losses)
        checks = [
            (len(self.lambdas) == 3 and all(x >= 0 for x in self.lambdas),
             f"lambdas must be three non-negative weights (λ1, λ2, λ3), not {self.lambdas}", "Use --set lambdas=[1.0,0.5,0.1]."),
            (self.positives_per_image <= self.pairs_per_image,
             f"positives_per_image ({self.positives_per_image}) must be between 1 and pairs_per_image "
             f"({self.pairs_per_image})", "Use --set pairs_per_image=512 --set positives_per_image=128."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(f"The reldn head's {message}.", hint)

    def loss_weights(self) -> dict[str, float]:
        return {"L0": 1.0, "L1": self.lambdas[0], "L2": self.lambdas[1], "L3": self.lambdas[2]}


# ---------------------------------------------------------------- the network

def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


class ReldnNet(nn.Module):
    """The three RelDN branches; `branches` returns each branch's (M, P) logits, `forward` their sum."""

    def __init__(self, log_freq: np.ndarray, config: ReldnConfig, visual_dim: int = 0) -> None:
        super().__init__()
        num_classes, _, num_p = log_freq.shape
        self.semantic = nn.Parameter(torch.as_tensor(log_freq, dtype=torch.float32).clone(),
                                     requires_grad=config.learn_semantic)
        emb = config.class_embedding
        self.embedding = nn.Embedding(num_classes, emb) if emb else None
        self.spatial = _mlp(SPATIAL_DIM + 2 * emb, config.spatial_hidden, num_p)
        self.visual_dim = visual_dim
        if visual_dim:
            self.visual = _mlp(3 * visual_dim, config.visual_hidden, num_p)
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


def sample_pairs(graphs: SceneGraphs, rng: np.random.Generator, pairs_per_image: int = 512,
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


# ---------------------------------------------------------------- the head

@register_head("reldn")
class ReldnHead(VisualInputs, TrainableHead):
    """RelDN with the Graphical Contrastive Losses."""

    Config = ReldnConfig

    def __init__(self, config: ReldnConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.losses = parse_losses(config.losses)
        self.model: ReldnNet | None = None
        self.visual_source: VisualSource | None = None

    # ------------------------------------------------------------ setup
    def _new_model(self, log_freq: np.ndarray, visual_dim: int) -> ReldnNet:
        shape = (self.num_object_classes, self.num_object_classes, self.num_predicate_classes)
        if log_freq.shape != shape:
            raise SgtoolError(f"The priors have shape {log_freq.shape}, which does not fit the vocabulary {shape}.",
                              "Run `sgtool prepare` for this dataset again.")
        return ReldnNet(log_freq, self.config, visual_dim)

    def build(self, data: TrainData) -> ReldnNet:
        torch.manual_seed(data.seed)
        dim = self.visual_source.dim if self.wants_visual() else 0
        self.model = self._new_model(np.asarray(data.priors["log_freq"], dtype=np.float32), dim).to(data.device)
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
        c = self.config
        sample = sample_pairs(graphs, rng, c.pairs_per_image, c.positives_per_image)
        batch = pair_inputs(graphs.box_offsets, graphs.boxes, graphs.labels, sample.subj, sample.obj, sample.image)
        batch.update(pair_image=torch.from_numpy(sample.image), subj_index=torch.from_numpy(sample.subj),
                     obj_index=torch.from_numpy(sample.obj), predicate=torch.from_numpy(sample.predicate))
        if self.uses_visual():
            batch.update(self.visual_source(graphs.image_ids, graphs.box_offsets, graphs.boxes,
                                            np.stack([sample.subj, sample.obj], 1)))
        return batch

    def loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        model = self._require_model()
        device = self._device()
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch)
        terms = reldn_total_loss(logits, batch["pair_image"], batch["subj_index"], batch["obj_index"],
                                 batch["subj_label"], batch["obj_label"], batch["predicate"], losses=self.losses,
                                 margin=self.config.margin, weights=self.config.loss_weights())
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
        return self.distribution(inputs).numpy()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "visual_dim": model.visual_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["model"]
        log_freq = np.asarray(weights["semantic"], dtype=np.float32)
        self.model = self._new_model(log_freq, int(state.get("visual_dim", 0)))
        self.model.load_state_dict(weights)
