"""zsmask's model: one meta-architecture (``ZeroShotMaskFormer``) and its registered parts.

Importing this package registers the meta-architecture, the CLIP backbone, the pixel and
transformer decoders and the matchers in their registries.
"""
from . import backbone, matcher, pixel_decoder, transformer_decoder  # noqa: F401  (registration)
from .meta_arch import ZeroShotMaskFormer

__all__ = ["ZeroShotMaskFormer"]
