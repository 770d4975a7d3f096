"""Turning per-query predictions into per-pixel outputs and corrections of the scores."""
from .bias_correction import suppress_seen_scores
from .semantic import semantic_inference

__all__ = ["semantic_inference", "suppress_seen_scores"]
