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
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from torch import nn

from .build import register_matcher
from .hungarian import HungarianMatcher

__all__ = ["NegativeProposalSelector", "select_negative_proposals"]


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


@register_matcher("negative_proposals")
class NegativeProposalSelector(nn.Module):
    """``forward(outputs, targets, indices=None) -> [labels (Q,) int64]`` per image; ``targets[b]``
    holds the ``labels`` and ``masks`` of image b, as for the Hungarian matcher."""

    @configurable
    def __init__(self, *, matcher: HungarianMatcher, mask_cost: HungarianMatcher, top_k: int = 50):
        """
        Args:
            matcher: assigns proposals to seen targets (the positives).
            mask_cost: gives the mask loss matrix (its class weight should be 0).
            top_k: K of the top-K criterion (AlignZeg: 50).
        """
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.matcher = matcher
        self.mask_cost = mask_cost
        self.top_k = top_k

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "matcher": HungarianMatcher(cfg),
            "mask_cost": HungarianMatcher(cost_class=0.0, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
                                          num_points=mf.TRAIN_NUM_POINTS),
            "top_k": cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_TOP_K,
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
        mask_losses = self.mask_cost.compute_cost_matrices(outputs, seen_targets)
        labels = []
        for (query_idx, _), mask_loss in zip(indices, mask_losses):
            matched = torch.zeros(num_queries, dtype=torch.bool)
            matched[query_idx.cpu()] = True
            labels.append(select_negative_proposals(mask_loss, matched, self.top_k))
        return labels


def _annotated(target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The target dict restricted to annotated (not pseudo) targets."""
    if "is_pseudo" not in target:
        return target
    keep = ~target["is_pseudo"]
    return {"labels": target["labels"][keep], "masks": target["masks"][keep]}
