"""Optimizer and learning-rate schedule builders (AdamW + poly schedule of the papers)."""
from .build import build_lr_scheduler, build_optimizer

__all__ = ["build_lr_scheduler", "build_optimizer"]
