"""Registry of proposal embedders (``MODEL.ZSMASK.PROPOSAL_EMBEDDER``; empty: none).

A proposal embedder replaces the transformer decoder's per-query class embeddings with its own,
e.g. AlignZeg's CLIP semantic decoder, which pools each proposal's feature from CLIP itself.
Interface::

    embedder = PROPOSAL_EMBEDDER_REGISTRY.get(name)(cfg, query_dim=C)
    embedder(features, outputs) -> {"pred_embeddings": (B, N, D), "proposal_features": (B, N, D), ...}

``features`` are the backbone's, ``outputs`` the transformer decoder's (``query_features``
(B, N, C), ``pixel_features`` ...). The meta-architecture merges the returned entries into
``outputs``; the transformer decoder is then built without a class head.
"""
from typing import Optional

from detectron2.utils.registry import Registry
from torch import nn

from ..registries import get_registered

__all__ = ["PROPOSAL_EMBEDDER_REGISTRY", "build_proposal_embedder"]

PROPOSAL_EMBEDDER_REGISTRY = Registry("ZSMASK_PROPOSAL_EMBEDDER")
PROPOSAL_EMBEDDER_REGISTRY.__doc__ = __doc__


def build_proposal_embedder(cfg, query_dim: int) -> Optional[nn.Module]:
    """The embedder named by ``MODEL.ZSMASK.PROPOSAL_EMBEDDER``, or None when it is empty."""
    name = cfg.MODEL.ZSMASK.PROPOSAL_EMBEDDER
    if not name:
        return None
    embedder = get_registered(PROPOSAL_EMBEDDER_REGISTRY, name, "proposal embedder", "MODEL.ZSMASK.PROPOSAL_EMBEDDER")
    return embedder(cfg, query_dim=query_dim)
