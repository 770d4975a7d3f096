"""zsmask's model: one meta-architecture (``ZeroShotMaskFormer``) and its registered parts.

Importing this package registers the meta-architecture, the CLIP backbone, the pixel and
transformer decoders, the matchers, pseudo labelers, auxiliary heads, proposal embedders, pixel score heads and inference post-processors in their
registries.
"""
from . import (  # noqa: F401  (registration)
    auxiliary_heads,
    backbone,
    matcher,
    pixel_decoder,
    pixel_score,
    post_processing,
    proposal_embedder,
    pseudo_masks,
    transformer_decoder,
)
from .meta_arch import ZeroShotMaskFormer

__all__ = ["ZeroShotMaskFormer"]
