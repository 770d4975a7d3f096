"""Turning per-query predictions into per-pixel outputs, corrections of the scores, and the spectral
eigensegments (SAZS) that post-process them."""
from .bias_correction import suppress_seen_scores
from .semantic import semantic_inference
from .spectral import laplacian_eigenvectors, rgb_to_hsv, semantic_affinity, shape_affinity

__all__ = ["laplacian_eigenvectors", "rgb_to_hsv", "semantic_affinity", "semantic_inference", "shape_affinity",
           "suppress_seen_scores"]
