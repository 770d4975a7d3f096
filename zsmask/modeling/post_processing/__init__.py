"""Inference post-processors any zsmask model can use (``MODEL.ZSMASK.POST_PROCESSORS``): SAZS's
spectral eigensegments and their fusion with the prediction."""
from .build import POST_PROCESSOR_REGISTRY, build_post_processors
from .eigensegments import SpectralEigensegments, kmeans, working_size
from .fusion import EigensegmentFusion, fuse_segments, segment_class_iou
from .semantic_features import CLIPKeyFeatures, ViTKeyFeatures, build_semantic_features
from .spectral import laplacian_eigenvectors, rgb_to_hsv, semantic_affinity, shape_affinity

__all__ = ["POST_PROCESSOR_REGISTRY", "build_post_processors", "SpectralEigensegments", "kmeans", "working_size",
           "EigensegmentFusion", "fuse_segments", "segment_class_iou", "CLIPKeyFeatures", "ViTKeyFeatures",
           "build_semantic_features", "laplacian_eigenvectors", "rgb_to_hsv", "semantic_affinity", "shape_affinity"]
