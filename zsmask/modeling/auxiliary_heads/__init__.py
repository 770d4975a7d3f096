"""Training-only heads that add losses on intermediate features (e.g. Split Matching's MFE)."""
from .build import AUXILIARY_HEAD_REGISTRY, build_auxiliary_heads
from .multiscale_feature_enhancement import MultiScaleFeatureEnhancement, target_label_map

__all__ = ["AUXILIARY_HEAD_REGISTRY", "build_auxiliary_heads", "MultiScaleFeatureEnhancement", "target_label_map"]
