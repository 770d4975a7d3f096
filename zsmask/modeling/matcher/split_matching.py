"""Split Matching (Chen et al., Sec. 3.2, Eq. 2): seen and candidate queries are matched
separately.

The decoder's Q queries are split into K_s *seen* queries (the first ones) and K_u *candidate*
queries (the last K_u). Targets are Y_p = Y_s ∪ Y_u: the annotated (seen) masks and the pseudo
masks of unannotated regions, marked by ``targets[b]["is_pseudo"]``. Every target's class lives
in the joint class space E = cat(A_s, C_u): seen text embeddings first, then one column per
pseudo mask (its region embedding), so that ``pred_logits`` (B, Q, N_s + U + 1) hold
``S = V E^T`` (the meta-architecture builds them, see ``VocabularyClassifier.joint_logits``).

The cost of a pair is ``w_cls * focal(sigmoid(S)) + w_bce * BCE(M, Y) + w_iou * IoU(M, Y) +
w_dice * Dice(M, Y)`` (the terms of Eq. 3 and Mask2Former's BCE), computed for all pairs in one
batched pass. The Hungarian algorithm then
runs twice per image: seen queries against seen targets (sigma_s*), candidate queries against
pseudo masks (sigma_u*); the two assignments are concatenated into one (sigma*). A seen query is
never assigned a pseudo mask and a candidate query never a seen target.

``hungarian_focal`` (:class:`FocalHungarianMatcher`) is the same costs without the split: one
Hungarian assignment of all queries to the annotated targets. It is Split Matching's control: a
model trained with it and the same losses differs from split matching only by the split, the
candidate queries and their pseudo masks.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from detectron2.config import configurable

from .build import register_matcher
from .costs import batch_dice_cost, batch_focal_class_cost, batch_iou_cost, batch_sigmoid_bce_cost
from .hungarian import HungarianMatcher

__all__ = ["FocalHungarianMatcher", "SplitMatcher", "split_query_counts"]


def split_query_counts(cfg) -> Tuple[int, int]:
    """(K_s, K_u) from ``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES`` and
    ``MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES``."""
    total = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    candidates = cfg.MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES
    if not 0 < candidates < total:
        raise ValueError(
            f"MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES={candidates} must be in [1, NUM_OBJECT_QUERIES={total}): "
            "the last K_u queries are candidate queries, the others seen queries")
    return total - candidates, candidates


@register_matcher("hungarian_focal")
class FocalHungarianMatcher(HungarianMatcher):
    """Mask2Former's Hungarian matching of all queries to all targets, with Eq. 3's costs."""

    @configurable
    def __init__(self, *, cost_class: float = 2.0, cost_bce: float = 5.0, cost_iou: float = 5.0,
                 cost_dice: float = 5.0, num_points: int = 112 * 112, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0):
        """
        Args:
            cost_class: weight of the sigmoid focal classification cost.
            cost_bce: weight of the sigmoid BCE mask cost.
            cost_iou: weight of the soft-IoU mask cost.
            cost_dice: weight of the dice mask cost.
            num_points: random points per image at which masks are compared.
            focal_alpha, focal_gamma: focal cost parameters.
        """
        super().__init__(cost_class=cost_class, cost_mask=cost_bce, cost_dice=cost_dice, num_points=num_points)
        self.cost_iou = cost_iou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg):
        sm = cfg.MODEL.SPLIT_MATCHING
        return {
            "cost_class": cfg.MODEL.MASK_FORMER.CLASS_WEIGHT,
            "cost_bce": cfg.MODEL.MASK_FORMER.MASK_WEIGHT,
            "cost_iou": sm.IOU_WEIGHT,
            "cost_dice": cfg.MODEL.MASK_FORMER.DICE_WEIGHT,
            "num_points": cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS,
            "focal_alpha": sm.FOCAL_ALPHA,
            "focal_gamma": sm.FOCAL_GAMMA,
        }

    def pair_costs(self, pred_logits, labels, pred_points, target_points):
        """Eq. 3's terms: focal cost on ``sigmoid(S)`` ("no object" column unused), BCE, soft IoU
        and dice (B, Q, T)."""
        cost = self.cost_class * batch_focal_class_cost(pred_logits[..., :-1], labels, self.focal_alpha,
                                                        self.focal_gamma)
        if self.cost_mask != 0:
            cost = cost + self.cost_mask * batch_sigmoid_bce_cost(pred_points, target_points)
        if self.cost_iou != 0:
            cost = cost + self.cost_iou * batch_iou_cost(pred_points, target_points)
        if self.cost_dice != 0:
            cost = cost + self.cost_dice * batch_dice_cost(pred_points, target_points)
        return cost

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_bce={self.cost_mask}, cost_iou={self.cost_iou}, "
                f"cost_dice={self.cost_dice}, num_points={self.num_points}")


@register_matcher("split_matching")
class SplitMatcher(FocalHungarianMatcher):
    """Hungarian matching within two query groups (seen / candidate) and two target groups."""

    @configurable
    def __init__(self, *, num_seen_queries: int, **costs):
        """
        Args:
            num_seen_queries: K_s; queries ``[0, K_s)`` are seen queries, the rest candidates.
            costs: the cost weights, points and focal parameters of :class:`FocalHungarianMatcher`.
        """
        super().__init__(**costs)
        if num_seen_queries < 0:
            raise ValueError(f"num_seen_queries must be >= 0, got {num_seen_queries}")
        self.num_seen_queries = num_seen_queries

    @classmethod
    def from_config(cls, cfg):
        if not cfg.MODEL.ZSMASK.PSEUDO_LABELER:
            raise ValueError("MODEL.ZSMASK.MATCHER='split_matching' needs pseudo masks for its candidate queries: "
                             "set MODEL.ZSMASK.PSEUDO_LABELER (e.g. 'clip_kmeans')")
        return dict(FocalHungarianMatcher.from_config(cfg), num_seen_queries=split_query_counts(cfg)[0])

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor],
                targets: Sequence[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Eq. 2: ``targets[b]`` needs ``labels`` (T,) in the joint class space, ``masks``
        (T, H, W) and ``is_pseudo`` (T,) bool. Returns per image ``(query_idx, target_idx)``
        int64 CPU tensors sorted by query, the concatenation of sigma_s* and sigma_u*."""
        num_queries = outputs["pred_logits"].shape[1]
        if num_queries <= self.num_seen_queries:
            raise ValueError(f"split matching needs more than K_s={self.num_seen_queries} queries "
                             f"(K_s seen + K_u candidate), the decoder returned {num_queries}")
        for b, target in enumerate(targets):
            if "is_pseudo" not in target:
                raise ValueError(f"targets[{b}] has no 'is_pseudo' flags: split matching needs the pseudo "
                                 "targets of MODEL.ZSMASK.PSEUDO_LABELER")
        indices = []
        for cost, target in zip(self.compute_cost_matrices(outputs, targets), targets):
            is_pseudo = target["is_pseudo"].cpu().numpy().astype(bool)
            groups = ((np.arange(self.num_seen_queries), np.flatnonzero(~is_pseudo)),
                      (np.arange(self.num_seen_queries, num_queries), np.flatnonzero(is_pseudo)))
            query_idx, target_idx = [], []
            for queries, members in groups:
                if len(members) == 0 or len(queries) == 0:
                    continue
                rows, cols = linear_sum_assignment(cost.numpy()[np.ix_(queries, members)])
                query_idx.append(queries[rows])
                target_idx.append(members[cols])
            if not query_idx:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            query_idx, target_idx = np.concatenate(query_idx), np.concatenate(target_idx)
            order = np.argsort(query_idx, kind="stable")
            indices.append((torch.as_tensor(query_idx[order], dtype=torch.int64),
                            torch.as_tensor(target_idx[order], dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return f"num_seen_queries={self.num_seen_queries}, " + super().extra_repr()
