"""Pixel score heads: per-pixel class scores next to the query path (OTSeg, ZegOT)."""
from .build import PIXEL_SCORE_HEAD_REGISTRY, build_pixel_score_head
from .losses import dense_segmentation_losses, dense_targets
from .multi_prompt_head import MultiPromptSinkhornHead, RelationshipDescriptor
from .sinkhorn_attention import MultiPromptSinkhornAttention, MultiPromptSinkhornDecoder, MultiPromptSinkhornDecoderLayer

__all__ = [
    "PIXEL_SCORE_HEAD_REGISTRY",
    "MultiPromptSinkhornAttention",
    "MultiPromptSinkhornDecoder",
    "MultiPromptSinkhornDecoderLayer",
    "MultiPromptSinkhornHead",
    "RelationshipDescriptor",
    "build_pixel_score_head",
    "dense_segmentation_losses",
    "dense_targets",
]
