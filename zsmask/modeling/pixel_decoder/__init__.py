"""Pixel decoders (registry ``PIXEL_DECODER_REGISTRY``) and the MSDeformAttn op (``ops``)."""
from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .clip_fusion_pixel_decoder import CLIPFusionPixelDecoder
from .msdeform_pixel_decoder import MSDeformAttnPixelDecoder

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "CLIPFusionPixelDecoder", "MSDeformAttnPixelDecoder"]
