"""Training-only heads that add losses on intermediate features (Split Matching's MFE, SAZS's
boundary head)."""
from .boundary import BoundaryHead, sobel_edges
from .build import AUXILIARY_HEAD_REGISTRY, build_auxiliary_heads
from .inverse_transform import (
    InverseTransformNet,
    load_inverse_transform,
    pretrain_inverse_transform,
    save_inverse_transform,
)
from .multiscale_feature_enhancement import MultiScaleFeatureEnhancement, target_label_map

__all__ = ["AUXILIARY_HEAD_REGISTRY", "build_auxiliary_heads", "BoundaryHead", "sobel_edges", "InverseTransformNet",
           "load_inverse_transform", "pretrain_inverse_transform", "save_inverse_transform",
           "MultiScaleFeatureEnhancement", "target_label_map"]
