"""Registry of pixel score heads (``MODEL.ZSMASK.PIXEL_SCORE_HEAD``; empty: none).

A pixel score head is a second, per-pixel path next to the query-based mask classification: it
scores every pixel against every class's text directly (OTSeg's MPS and MPSA decoder paths).
The meta-architecture trains it with its own losses on the dense ground truth and, at
inference, mixes its class probabilities with the query path's:
``sem_seg = (1 - w) * query + w * pixel`` with ``w = MODEL.ZSMASK.PIXEL_SCORE_WEIGHT``.
Interface::

    head = PIXEL_SCORE_HEAD_REGISTRY.get(name)(cfg, clip)
    outputs = head(features, clip, class_names)       # backbone features, K names
    head.probabilities(outputs) -> (B, K, h, w) in [0, 1]
    head.losses(outputs, targets (B, K, H, W) {0, 1}, valid (B, H, W) bool) -> {name: loss}
    head.weight_dict -> {name: weight}
"""
from typing import Optional

from detectron2.utils.registry import Registry
from torch import nn

from ..registries import get_registered

__all__ = ["PIXEL_SCORE_HEAD_REGISTRY", "build_pixel_score_head"]

PIXEL_SCORE_HEAD_REGISTRY = Registry("ZSMASK_PIXEL_SCORE_HEAD")
PIXEL_SCORE_HEAD_REGISTRY.__doc__ = __doc__


def build_pixel_score_head(cfg, clip: nn.Module) -> Optional[nn.Module]:
    """The head named by ``MODEL.ZSMASK.PIXEL_SCORE_HEAD``, or None when it is empty."""
    name = cfg.MODEL.ZSMASK.PIXEL_SCORE_HEAD
    if not name:
        return None
    head = get_registered(PIXEL_SCORE_HEAD_REGISTRY, name, "pixel score head", "MODEL.ZSMASK.PIXEL_SCORE_HEAD")
    return head(cfg, clip)
