"""Turning per-query predictions into per-pixel outputs."""
from .semantic import semantic_inference

__all__ = ["semantic_inference"]
