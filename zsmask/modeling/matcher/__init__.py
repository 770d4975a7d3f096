"""Matchers between predicted masks (queries) and target masks, built by name from the config."""
from .build import MATCHER_REGISTRY, build_matcher, register_matcher
from .hungarian import HungarianMatcher, batch_dice_cost, batch_sigmoid_bce_cost

__all__ = [
    "MATCHER_REGISTRY",
    "build_matcher",
    "register_matcher",
    "HungarianMatcher",
    "batch_dice_cost",
    "batch_sigmoid_bce_cost",
]
