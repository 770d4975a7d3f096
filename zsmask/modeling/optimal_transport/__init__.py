"""Entropic optimal transport for multi-prompt pixel-text alignment (OTSeg, ZegOT)."""
from .sinkhorn import SinkhornResult, log_sinkhorn

__all__ = ["SinkhornResult", "log_sinkhorn"]
