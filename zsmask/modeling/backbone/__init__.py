"""Backbones registered in detectron2's BACKBONE_REGISTRY by zsmask."""
from .clip_backbone import CLIPVisualBackbone, LayerNorm2d
from .side_adapter import CLIPSideAdapterBackbone, PlainViTEncoder

__all__ = ["CLIPVisualBackbone", "CLIPSideAdapterBackbone", "LayerNorm2d", "PlainViTEncoder"]
