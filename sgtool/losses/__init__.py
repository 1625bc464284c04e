"""Loss functions of the relation heads: the tensor head's factored likelihood, RelDN's contrastive losses."""
from __future__ import annotations

from sgtool.losses.contrastive import (
    DEFAULT_MARGIN,
    DEFAULT_WEIGHTS,
    LOSS_NAMES,
    graphical_contrastive_losses,
    parse_losses,
    reldn_total_loss,
)
from sgtool.losses.tensor import (
    factored_nll,
    full_tensor_nll,
    log_full_tensor,
    log_joint,
    log_partition,
    predicate_log_probs,
    topk_predicates,
    topk_triplets,
)

__all__ = [
    "DEFAULT_MARGIN", "DEFAULT_WEIGHTS", "LOSS_NAMES", "factored_nll", "full_tensor_nll",
    "graphical_contrastive_losses", "log_full_tensor", "log_joint", "log_partition", "parse_losses", "predicate_log_probs", "reldn_total_loss",
    "topk_predicates", "topk_triplets",
]
