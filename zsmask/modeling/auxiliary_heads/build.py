"""Registry of training-only auxiliary heads, listed in ``MODEL.ZSMASK.AUXILIARY_HEADS``.

An auxiliary head reads the model's intermediate features and adds losses in training; it is
never run at inference (its weights stay in checkpoints). Interface::

    head = AUXILIARY_HEAD_REGISTRY.get(name)(cfg, in_channels=C, embed_dim=D)
    losses = head(outputs, targets, classify)   # un-weighted losses
    head.weight_dict                            # loss name -> weight

``outputs`` is the meta-architecture's prediction dict, which also holds ``features``
(backbone), ``multi_scale_features`` (pixel decoder, coarsest first) and ``mask_features``;
``targets`` are the per-image target dicts of the criterion; ``classify(embeddings (B, N, D))``
returns logits (B, N, C + 1) against the current classes (incl. pseudo classes), "no object" last.
"""
from typing import List

from detectron2.utils.registry import Registry
from torch import nn

from ..registries import get_registered

__all__ = ["AUXILIARY_HEAD_REGISTRY", "build_auxiliary_heads"]

AUXILIARY_HEAD_REGISTRY = Registry("ZSMASK_AUXILIARY_HEAD")
AUXILIARY_HEAD_REGISTRY.__doc__ = __doc__


def build_auxiliary_heads(cfg, in_channels: int, embed_dim: int) -> nn.ModuleList:
    """One head per name in ``MODEL.ZSMASK.AUXILIARY_HEADS`` (in that order)."""
    heads: List[nn.Module] = []
    for name in cfg.MODEL.ZSMASK.AUXILIARY_HEADS:
        head = get_registered(AUXILIARY_HEAD_REGISTRY, name, "auxiliary head", "MODEL.ZSMASK.AUXILIARY_HEADS")
        heads.append(head(cfg, in_channels=in_channels, embed_dim=embed_dim))
    return nn.ModuleList(heads)
