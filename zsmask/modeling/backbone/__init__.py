"""Backbones registered in detectron2's BACKBONE_REGISTRY by zsmask."""
from .clip_backbone import CLIPVisualBackbone, LayerNorm2d

__all__ = ["CLIPVisualBackbone", "LayerNorm2d"]
