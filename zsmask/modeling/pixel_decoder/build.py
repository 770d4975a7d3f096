"""Registry of pixel decoders (``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``)."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

PIXEL_DECODER_REGISTRY = Registry("ZSMASK_PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders turn backbone features into a per-pixel mask embedding and the feature levels
of the transformer decoder. Interface: ``forward_features(features) -> (mask_features
(B, MASK_DIM, h, w), multi_scale_features [L x (B, CONVS_DIM, h_i, w_i)], coarsest first)``;
Mask2Former's decoder takes L = 3 levels and masks at stride ``COMMON_STRIDE``, AlignZeg's
one fused level.
"""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build the pixel decoder named by ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODER_REGISTRY:
        raise KeyError(f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not registered; "
                       f"registered pixel decoders: {sorted(k for k, _ in PIXEL_DECODER_REGISTRY)}")
    return PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
