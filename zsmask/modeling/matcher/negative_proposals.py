"""Positive / negative proposal selection for AlignZeg's Predictive Bias Correction (Sec. 3.3,
Fig. 4), registered as ``negative_proposals``.

Per image, every query (proposal) gets a class-indicator label:

* 0 (positive): the proposal is matched to a seen-class target by the wrapped Hungarian
  matcher (a seen class proposal);
* 1 (negative): an unmatched (background) proposal that ranks within the top-K mask losses
  L_mask^i(M, M_i^gt) for *every* seen class i in the image, i.e. it is among the K proposals
  least likely to contain each seen class;
* -1 (ignored): all others.

The mask loss matrix is the matcher's BCE + dice mask cost on shared random points.

``negatives="unannotated"`` (``MODEL.ALIGNZEG.PBC.NEGATIVES``) replaces the top-K rule: an
unmatched proposal is a negative when at least ``min_unannotated`` of its predicted mask lies on
the image's unannotated pixels, where the unseen objects of a zero-shot training image are. With
few queries (16 on the toy world, K = 8) the top-K rule mostly picks proposals that cover
nothing; this rule picks the ones that segment what training never names.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from .build import register_matcher
from .hungarian import HungarianMatcher

__all__ = ["NegativeProposalSelector", "select_negative_proposals", "select_unannotated_negatives"]
NEGATIVE_RULES = ("top_k", "unannotated")


def select_negative_proposals(mask_loss: torch.Tensor, matched: torch.Tensor, top_k: int) -> torch.Tensor:
    """Class-indicator labels (Q,) int64 in {0, 1, -1} (see the module docstring).

    Args:
        mask_loss: (Q, T) mask loss of every proposal against each seen class's mask.
        matched: (Q,) bool, proposals matched to a seen target (positives).
        top_k: K; proposals must rank among the K largest losses of every column.
    """
    num_queries, num_targets = mask_loss.shape
    labels = torch.full((num_queries,), -1, dtype=torch.int64)
    labels[matched.cpu()] = 0
    if num_targets == 0:
        return labels
    k = min(top_k, num_queries)
    in_top_k = torch.zeros(num_queries, num_targets, dtype=torch.bool)
    in_top_k.scatter_(0, mask_loss.cpu().topk(k, dim=0).indices, True)
    negative = in_top_k.all(dim=1) & ~matched.cpu()
    labels[negative] = 1
    return labels


def select_unannotated_negatives(mask_logits: torch.Tensor, unannotated: torch.Tensor, matched: torch.Tensor,
                                 min_unannotated: float) -> torch.Tensor:
    """Class-indicator labels (Q,) int64: 0 for ``matched`` proposals, 1 for unmatched ones whose
    predicted mask (logit > 0) is non-empty and has at least ``min_unannotated`` of its area on
    unannotated pixels, -1 for the rest.

    Args:
        mask_logits: (Q, h, w) predicted mask logits.
        unannotated: (H, W) bool unannotated pixels; averaged over each mask cell when the sizes differ.
        matched: (Q,) bool, proposals matched to a seen target (positives).
        min_unannotated: the least share of a mask's area on unannotated pixels, in (0, 1].
    """
    share_per_cell = F.interpolate(unannotated[None, None].float(), size=mask_logits.shape[-2:], mode="area")[0, 0]
    masks = (mask_logits.detach() > 0).float()
    area = masks.flatten(1).sum(dim=1)
    on_unannotated = (masks * share_per_cell.to(masks)).flatten(1).sum(dim=1)
    negative = (area > 0) & (on_unannotated >= min_unannotated * area) & ~matched.to(area.device)
    labels = torch.full((mask_logits.shape[0],), -1, dtype=torch.int64)
    labels[matched.cpu()] = 0
    labels[negative.cpu()] = 1
    return labels


@register_matcher("negative_proposals")
class NegativeProposalSelector(nn.Module):
    """``forward(outputs, targets, indices=None) -> [labels (Q,) int64]`` per image; ``targets[b]``
    holds the ``labels`` and ``masks`` of image b, as for the Hungarian matcher, and for the
    ``"unannotated"`` rule its ``unannotated`` pixels (H, W) bool."""

    @configurable
    def __init__(self, *, matcher: HungarianMatcher, mask_cost: HungarianMatcher, top_k: int = 50,
                 negatives: str = "top_k", min_unannotated: float = 0.5):
        """
        Args:
            matcher: assigns proposals to seen targets (the positives).
            mask_cost: gives the mask loss matrix (its class weight should be 0).
            top_k: K of the top-K criterion (AlignZeg: 50).
            negatives: which unmatched proposals are negatives, one of :data:`NEGATIVE_RULES`.
            min_unannotated: for ``"unannotated"``, the least share of a mask on unannotated pixels.
        """
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if negatives not in NEGATIVE_RULES:
            raise ValueError(f"MODEL.ALIGNZEG.PBC.NEGATIVES must be one of {NEGATIVE_RULES}, got {negatives!r}")
        if not 0.0 < min_unannotated <= 1.0:
            raise ValueError(f"MODEL.ALIGNZEG.PBC.NEGATIVE_MIN_UNANNOTATED must be in (0, 1], got {min_unannotated}")
        self.matcher = matcher
        self.mask_cost = mask_cost
        self.top_k = top_k
        self.negatives = negatives
        self.min_unannotated = min_unannotated

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "matcher": HungarianMatcher(cfg),
            "mask_cost": HungarianMatcher(cost_class=0.0, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
                                          num_points=mf.TRAIN_NUM_POINTS),
            "top_k": cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_TOP_K,
            "negatives": cfg.MODEL.ALIGNZEG.PBC.NEGATIVES,
            "min_unannotated": cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_MIN_UNANNOTATED,
        }

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
                indices: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None) -> List[torch.Tensor]:
        """``indices``: the criterion's assignment of queries to ``targets``, reused for the
        positives (else the wrapped matcher runs). Pseudo targets (``is_pseudo``) are neither
        positives nor part of the mask loss matrix: only annotated seen classes count."""
        num_queries = outputs["pred_masks"].shape[1]
        seen_targets = [_annotated(t) for t in targets]
        if indices is None:
            indices = self.matcher(outputs, seen_targets)
        else:
            indices = [(query_idx[~t["is_pseudo"][target_idx.to(t["is_pseudo"].device)].cpu()], None)
                       if "is_pseudo" in t else (query_idx, target_idx)
                       for t, (query_idx, target_idx) in zip(targets, indices)]
        matched = []
        for query_idx, _ in indices:
            matched.append(torch.zeros(num_queries, dtype=torch.bool))
            matched[-1][query_idx.cpu()] = True
        if self.negatives == "unannotated":
            if any("unannotated" not in t for t in targets):
                raise KeyError("MODEL.ALIGNZEG.PBC.NEGATIVES 'unannotated' needs each target's 'unannotated' "
                               "pixels (ZeroShotMaskFormer.prepare_targets adds them)")
            return [select_unannotated_negatives(logits, t["unannotated"], m, self.min_unannotated)
                    for logits, t, m in zip(outputs["pred_masks"], targets, matched)]
        mask_losses = self.mask_cost.compute_cost_matrices(outputs, seen_targets)
        return [select_negative_proposals(mask_loss, m, self.top_k) for mask_loss, m in zip(mask_losses, matched)]


def _annotated(target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The target dict restricted to annotated (not pseudo) targets."""
    if "is_pseudo" not in target:
        return target
    keep = ~target["is_pseudo"]
    return dict({k: v for k, v in target.items() if k == "unannotated"},
                labels=target["labels"][keep], masks=target["masks"][keep])
