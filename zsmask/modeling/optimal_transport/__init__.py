"""Entropic optimal transport for multi-prompt pixel-text alignment (OTSeg, ZegOT)."""
from .multi_prompt import MultiPromptSinkhornResult, fuse_layer_maps, multi_prompt_sinkhorn
from .sinkhorn import SinkhornResult, log_sinkhorn

__all__ = ["MultiPromptSinkhornResult", "SinkhornResult", "fuse_layer_maps", "log_sinkhorn", "multi_prompt_sinkhorn"]
