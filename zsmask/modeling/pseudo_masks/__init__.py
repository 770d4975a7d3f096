"""Pseudo masks for unannotated regions from frozen CLIP features (Split Matching Sec. 3.2)."""
from .generator import REGION_EMBEDDINGS, PseudoMaskGenerator, PseudoMasks
from .kmeans import fuse_clusters, multiscale_seeds, spherical_kmeans, window_starts

__all__ = [
    "REGION_EMBEDDINGS",
    "PseudoMaskGenerator",
    "PseudoMasks",
    "fuse_clusters",
    "multiscale_seeds",
    "spherical_kmeans",
    "window_starts",
]
