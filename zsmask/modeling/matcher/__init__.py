"""Matchers between predicted masks (queries) and target masks, built by name from the config."""
from .build import MATCHER_REGISTRY, build_matcher, register_matcher
from .costs import batch_dice_cost, batch_focal_class_cost, batch_iou_cost, batch_sigmoid_bce_cost
from .hungarian import HungarianMatcher
from .negative_proposals import NegativeProposalSelector, select_negative_proposals, select_unannotated_negatives
from .split_matching import FocalHungarianMatcher, SplitMatcher, split_query_counts

__all__ = [
    "MATCHER_REGISTRY",
    "build_matcher",
    "register_matcher",
    "HungarianMatcher",
    "NegativeProposalSelector",
    "select_negative_proposals",
    "select_unannotated_negatives",
    "FocalHungarianMatcher",
    "SplitMatcher",
    "split_query_counts",
    "batch_dice_cost",
    "batch_focal_class_cost",
    "batch_iou_cost",
    "batch_sigmoid_bce_cost",
]
