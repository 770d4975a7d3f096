"""Multi-scale deformable-attention pixel decoder (Mask2Former, Cheng et al. 2022, Sec. 3.2.1).

The coarsest three backbone levels (strides 8/16/32 by default) are refined jointly by a
deformable-attention encoder (Deformable DETR, Zhu et al. 2021, Eq. 3); finer levels (stride 4)
are reached with an FPN path (lateral 1x1 + output 3x3 convs on the upsampled coarser map).
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from ..layers import SinePositionEncoding, conv_norm, get_activation, group_norm
from .build import PIXEL_DECODER_REGISTRY
from .ops import MSDeformAttn

__all__ = ["MSDeformAttnPixelDecoder", "DeformableEncoderLayer", "DeformableEncoder"]


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: multi-scale deformable self-attention, then a feed-forward network."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, activation: str,
                 n_levels: int, n_heads: int, n_points: int, attention_impl: str = "auto"):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=attention_impl)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        """``src``/``pos`` (B, S, C); ``reference_points`` (B, S, L, 2) -> (B, S, C)."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformableEncoder(nn.Module):
    """A stack of :class:`DeformableEncoderLayer` over flattened multi-level tokens."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: List[Tuple[int, int]], batch: int, device, dtype) -> torch.Tensor:
        """Pixel centres of every level, normalised to [0, 1]: ``(B, S, L, 2)`` as (x, y).

        Inputs are never padded inside a level (Mask2Former uses no padding mask), so every
        level's valid ratio is 1 and a token's reference point is the same on all levels."""
        points = []
        for h, w in spatial_shapes:
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
        points = torch.cat(points, 0)
        return points[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)

    def forward(self, src, pos, spatial_shapes_list, spatial_shapes, level_start_index):
        ref = self.reference_points(spatial_shapes_list, src.shape[0], src.device, src.dtype)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, level_start_index)
        return src


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Backbone features -> ``(mask_features (B, mask_dim, H/s, W/s), multi_scale_features)``.

    ``multi_scale_features`` are the encoder outputs of the (up to) three coarsest levels,
    coarsest first, each ``(B, conv_dim, h_i, w_i)``; ``s`` is ``common_stride``.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, transformer_in_features: List[str],
                 conv_dim: int, mask_dim: int, norm: str, common_stride: int, encoder_layers: int,
                 encoder_heads: int, encoder_points: int, encoder_dim_feedforward: int,
                 encoder_dropout: float, attention_impl: str = "auto"):
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(f"pixel decoder: encoder features {missing} are not among the backbone's "
                             f"features {sorted(input_shape)} (MODEL.SEM_SEG_HEAD.IN_FEATURES / "
                             "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)")
        by_stride = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]
        self.encoder_features = [k for k, _ in by_stride if k in transformer_in_features]
        self.common_stride = common_stride
        self.num_encoder_levels = len(self.encoder_features)

        # Coarsest level first, as the transformer decoder consumes them.
        self.input_proj = nn.ModuleList()
        for name in self.encoder_features[::-1]:
            proj = nn.Sequential(nn.Conv2d(input_shape[name].channels, conv_dim, 1), group_norm(conv_dim))
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
            self.input_proj.append(proj)
        self.encoder = DeformableEncoder(
            encoder_layers, d_model=conv_dim, dim_feedforward=encoder_dim_feedforward,
            dropout=encoder_dropout, activation="relu", n_levels=self.num_encoder_levels,
            n_heads=encoder_heads, n_points=encoder_points, attention_impl=attention_impl)
        self.position_encoding = SinePositionEncoding(conv_dim // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.empty(self.num_encoder_levels, conv_dim))
        nn.init.normal_(self.level_embed)

        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        nn.init.xavier_uniform_(self.mask_features.weight)
        nn.init.zeros_(self.mask_features.bias)

        # FPN path for backbone levels finer than the encoder's, down to common_stride.
        finest_encoder_stride = input_shape[self.encoder_features[0]].stride
        self.fpn_features = [k for k in self.in_features
                             if common_stride <= input_shape[k].stride < finest_encoder_stride][::-1]
        self.lateral_convs = nn.ModuleList(
            conv_norm(input_shape[k].channels, conv_dim, 1, norm) for k in self.fpn_features)
        self.output_convs = nn.ModuleList(
            conv_norm(conv_dim, conv_dim, 3, norm, activation=F.relu) for _ in self.fpn_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [k for k in head.IN_FEATURES if k not in input_shape]
        if missing:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not produced by the backbone "
                             f"(it returns {sorted(input_shape)})")
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "common_stride": head.COMMON_STRIDE,
            "encoder_layers": head.TRANSFORMER_ENC_LAYERS,
            "encoder_heads": head.DEFORMABLE_NHEADS,
            "encoder_points": head.DEFORMABLE_NPOINTS,
            "encoder_dim_feedforward": head.DEFORMABLE_DIM_FEEDFORWARD,
            "encoder_dropout": head.DEFORMABLE_DROPOUT,
            "attention_impl": head.MSDEFORM_ATTN_IMPL,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """``features[name]`` (B, C_name, H/stride, W/stride) -> (mask_features, multi_scale_features)."""
        tokens, positions, shapes = [], [], []
        for level, name in enumerate(self.encoder_features[::-1]):
            x = self.input_proj[level](features[name].float())
            pos = self.position_encoding(x)
            shapes.append((x.shape[2], x.shape[3]))
            tokens.append(x.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        src = torch.cat(tokens, 1)
        pos = torch.cat(positions, 1)
        device = src.device
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
        memory = self.encoder(src, pos, shapes, spatial_shapes, level_start_index)

        batch = memory.shape[0]
        outputs = []
        for tokens_level, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes):
            outputs.append(tokens_level.transpose(1, 2).reshape(batch, -1, h, w))
        for name, lateral, output_conv in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            x = lateral(features[name].float())
            x = x + F.interpolate(outputs[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(output_conv(x))
        return self.mask_features(outputs[-1]), outputs[:3]
