"""Fusion of a learnable encoder's features with CLIP's: Z_f = Z_enc + Z_clip (AlignZeg Sec. 3.1).

For :class:`~zsmask.modeling.backbone.CLIPSideAdapterBackbone`, whose ``"side"`` map is Z_enc
and ``"clip"`` map Z_clip. Z_clip is resized (bilinear) to Z_enc's grid and both are brought
to ``CONVS_DIM`` channels by 1x1 convolutions (identity where the channels already match;
CLIP's through a LayerNorm first, as its tokens are not normalised); their sum is the single
feature level of the proposal decoder and the mask features.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from ..backbone.clip_backbone import LayerNorm2d
from .build import PIXEL_DECODER_REGISTRY

__all__ = ["CLIPFusionPixelDecoder"]


@PIXEL_DECODER_REGISTRY.register()
class CLIPFusionPixelDecoder(nn.Module):
    """``forward_features({"side", "clip", ...}) -> (Z_f (B, C, h, w), [Z_f])``."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int):
        super().__init__()
        missing = [k for k in ("side", "clip") if k not in input_shape]
        if missing:
            raise ValueError(f"CLIPFusionPixelDecoder needs the backbone features 'side' and 'clip' (e.g. "
                             f"MODEL.BACKBONE.NAME: CLIPSideAdapterBackbone); missing {missing}")
        side, clip = input_shape["side"].channels, input_shape["clip"].channels
        self.side_proj = nn.Identity() if side == conv_dim else nn.Conv2d(side, conv_dim, 1)
        self.clip_proj = nn.Sequential(LayerNorm2d(clip), nn.Conv2d(clip, conv_dim, 1))
        nn.init.zeros_(self.clip_proj[1].bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {"input_shape": input_shape, "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM}

    def forward_features(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        side = self.side_proj(features["side"])
        clip = features["clip"]
        if clip.shape[-2:] != side.shape[-2:]:
            clip = F.interpolate(clip, size=side.shape[-2:], mode="bilinear", align_corners=False)
        fused = side + self.clip_proj(clip.to(side.dtype))
        return fused, [fused]
