"""Pseudo masks for unannotated regions from frozen CLIP features (Split Matching Sec. 3.2)."""
from .generator import REGION_EMBEDDINGS, PseudoMaskGenerator, PseudoMasks
from .kmeans import (KMEANS_SCALES, fuse_clusters, fused_cell_masks, kmeans_clusters, merge_duplicates,
                     multiscale_seeds, spherical_kmeans, window_starts)
from .labeler import (
    PSEUDO_LABELER_REGISTRY,
    CLIPKMeansPseudoLabeler,
    PseudoMaskCache,
    build_pseudo_labeler,
    clip_weights_digest,
)

__all__ = [
    "REGION_EMBEDDINGS",
    "PSEUDO_LABELER_REGISTRY",
    "CLIPKMeansPseudoLabeler",
    "PseudoMaskCache",
    "PseudoMaskGenerator",
    "PseudoMasks",
    "build_pseudo_labeler",
    "clip_weights_digest",
    "KMEANS_SCALES",
    "fuse_clusters",
    "fused_cell_masks",
    "kmeans_clusters",
    "merge_duplicates",
    "multiscale_seeds",
    "spherical_kmeans",
    "window_starts",
]
