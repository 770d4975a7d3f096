"""The CLIP visual tower as a detectron2 backbone (``MODEL.BACKBONE.NAME: CLIPVisualBackbone``).

Input: images already normalised by the meta-architecture with ``MODEL.PIXEL_MEAN/STD`` (CLIP's
statistics by default in zsmask's config), so this backbone does **not** re-normalise; configs
using another CLIP must keep PIXEL_MEAN/STD equal to that CLIP's. Inputs are zero-padded at the
bottom/right to ``size_divisibility`` if needed; output sizes are ``ceil(H / stride)``.

- ModifiedResNet (RN50, ...): stem + layer1 -> res2 (stride 4), layer2..4 -> res3..res5.
- ViT: a ViTDet-style simple feature pyramid (Li et al., 2022) on the last block's patch tokens
  (after CLIP's ``ln_post``) as a map at the *base stride* ``b`` (8 for towers with patch size
  <= 8, else 16): transposed convolutions up to the finer levels (one per factor 2), identity at
  ``b``, max-pooling down to the coarser ones. The pyramid layers train even when the tower is
  frozen. The positional embedding is bicubically resized to the input's patch grid; towers
  whose patch size is not 8 or 16 (ViT-L-14, ViT-B-32) have their token map bilinearly
  resampled to the base stride. Channels: ``width / (b / s)`` at the finer strides ``s``,
  ``width`` at ``b`` and above.

  Optional for ViTs: VPT-deep prompts (``NUM_DEEP_PROMPTS`` learnable tokens per block, appended
  before it and dropped after it; OTSeg tunes CLIP's image encoder this way) and
  ``EMBEDDING_LAYERS``: the patch tokens after these blocks, mapped to CLIP's joint space
  (``ln_post`` + ``proj``), are also returned as ``clip_layer<i>`` (B, D, h, w) on the patch
  grid, with CLIP's pooled embedding ``clip_global`` (B, D), for a pixel score path (OTSeg,
  ZegOT). They are not pyramid levels (not in :meth:`output_shape`).
"""
import copy
import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..clip.shared import frozen_clip
from ..clip.visual_towers import (resnet_stages, run_blocks, tower_kind, tower_stride, vit_embed, vit_patch_embeddings,
                                  vit_pool)

__all__ = ["CLIPVisualBackbone", "LayerNorm2d"]

_FEATURE_NAMES = ("res2", "res3", "res4", "res5")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ViTDet / ConvNeXt style)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the normalised shape from the module, not the input: exporters need it constant
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _upsampling_branch(dim: int, factor: int) -> nn.Sequential:
    """ViTDet upsampling: ``log2(factor)`` stride-2 transposed convolutions, halving channels
    each time, with LayerNorm + GELU between them: ``(B, dim, h, w) -> (B, dim / factor, h * factor, w * factor)``."""
    layers, channels = [], dim
    while factor > 1:
        if layers:
            layers += [LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
        channels, factor = channels // 2, factor // 2
    return nn.Sequential(*layers)


@BACKBONE_REGISTRY.register()
class CLIPVisualBackbone(Backbone):
    """CLIP visual tower returning ``out_features`` among res2..res5 at strides 4, 8, 16, 32."""

    @configurable
    def __init__(self, *, visual: nn.Module, freeze: bool = True, out_features: Sequence[str] = _FEATURE_NAMES,
                 num_deep_prompts: int = 0, embedding_layers: Sequence[int] = ()):
        """
        Args:
            visual: an open_clip visual tower; from the config, the process's frozen CLIP's
                (:func:`~zsmask.modeling.clip.shared.frozen_clip`) when ``freeze``, else a copy
                of it that trains.
            freeze: no gradients to the tower and its norms kept in eval mode, also after ``.train()``.
            out_features: names among res2..res5 to return.
            num_deep_prompts: learnable VPT-deep prompt tokens per block (ViT only; 0: none).
            embedding_layers: 1-based blocks returned in the joint space (ViT only, see the
                module docstring).
        """
        super().__init__()
        out_features = list(out_features)
        unknown = [f for f in out_features if f not in _FEATURE_NAMES]
        if unknown or not out_features or len(set(out_features)) != len(out_features):
            raise ValueError(
                f"MODEL.CLIP_BACKBONE.OUT_FEATURES={out_features} must be distinct names among {list(_FEATURE_NAMES)}"
            )
        self.visual = visual
        self.kind = tower_kind(visual)
        self.freeze = freeze
        self._out_features = [f for f in _FEATURE_NAMES if f in out_features]

        strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        if self.kind == "resnet":
            width = visual.conv3.out_channels  # stem width; stages have 4x, 8x, 16x, 32x of it
            channels = {"res2": width * 4, "res3": width * 8, "res4": width * 16, "res5": width * 32}
        else:
            self.patch_size = tower_stride(visual)
            self.base_stride = 8 if self.patch_size <= 8 else 16
            dim = visual.transformer.width
            channels = {f: dim // max(1, self.base_stride // s) for f, s in strides.items()}
            self.pyramid = nn.ModuleDict()
            for name in self._out_features:
                if strides[name] < self.base_stride:
                    self.pyramid[name] = _upsampling_branch(dim, self.base_stride // strides[name])
        num_blocks = len(visual.transformer.resblocks) if self.kind == "vit" else 0
        if (num_deep_prompts or embedding_layers) and self.kind != "vit":
            raise ValueError("MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS / EMBEDDING_LAYERS need a CLIP ViT tower "
                             "(e.g. ViT-B-16); this CLIP has a ResNet tower")
        bad = [i for i in embedding_layers if not 1 <= int(i) <= num_blocks]
        if bad or len(set(embedding_layers)) != len(embedding_layers):
            raise ValueError(f"MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS={list(embedding_layers)} must be distinct block "
                             f"indices in [1, {num_blocks}]")
        self.embedding_layers = sorted(int(i) for i in embedding_layers)
        self.deep_prompts = None
        if num_deep_prompts > 0:
            width = visual.transformer.width
            self.deep_prompts = nn.Parameter(torch.randn(num_blocks, num_deep_prompts, width) / math.sqrt(width))
        self._out_feature_channels = {f: channels[f] for f in self._out_features}
        self._out_feature_strides = {f: strides[f] for f in self._out_features}

        if freeze:
            for param in self.visual.parameters():
                param.requires_grad_(False)
            self.visual.eval()

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec = None):
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(f"CLIPVisualBackbone takes 3-channel RGB input, got {input_shape.channels} channels")
        visual = frozen_clip(cfg).visual
        if not cfg.MODEL.CLIP_BACKBONE.FREEZE:  # a fine-tuned tower is this backbone's own copy
            visual = copy.deepcopy(visual).requires_grad_(True)
        return {
            "visual": visual,
            "freeze": cfg.MODEL.CLIP_BACKBONE.FREEZE,
            "out_features": list(cfg.MODEL.CLIP_BACKBONE.OUT_FEATURES),
            "num_deep_prompts": cfg.MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS,
            "embedding_layers": list(cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS),
        }

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to multiples of this (the largest stride, 32)."""
        return 32

    def train(self, mode: bool = True):
        """A frozen tower (its BatchNorm / LayerNorm included) stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.visual.eval()
        return self

    def _tower_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.kind == "resnet":
            stages = resnet_stages(self.visual, x)
            return {f: stages[f] for f in self._out_features}
        out_size = (x.shape[-2] // self.base_stride, x.shape[-1] // self.base_stride)
        x = F.pad(x, (0, -x.shape[-1] % self.patch_size, 0, -x.shape[-2] % self.patch_size))
        tokens, (h, w) = vit_embed(self.visual, x)
        tokens, tapped = run_blocks(self.visual.transformer.resblocks, tokens,
                                    getattr(self.visual.transformer, "batch_first", True), self.deep_prompts,
                                    taps=self.embedding_layers)
        patches = self.visual.ln_post(tokens[:, 1:])
        grid = patches.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        if (h, w) != out_size:
            grid = F.interpolate(grid, size=out_size, mode="bilinear", align_corners=False)
        features = {"vit": grid}
        if self.embedding_layers:
            features.update({f"clip_layer{i}": vit_patch_embeddings(self.visual, tapped[i], (h, w))
                             for i in self.embedding_layers})
            features["clip_global"] = vit_pool(self.visual, tokens)
        return features

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised images ``(B, 3, H, W)`` -> ``{name: (B, C_name, ceil(H/s), ceil(W/s))}`` (and the
        joint-space embeddings of ``embedding_layers``, if any)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CLIPVisualBackbone expects (B, 3, H, W) input, got {tuple(x.shape)}")
        pad_h = -x.shape[-2] % self.size_divisibility
        pad_w = -x.shape[-1] % self.size_divisibility
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.freeze and self.deep_prompts is None:
            with torch.no_grad():
                features = self._tower_features(x)
        else:
            features = self._tower_features(x)
        if self.kind == "resnet":
            return features
        vit = features.pop("vit")
        outputs = dict(features)
        for name in self._out_features:
            stride = self._out_feature_strides[name]
            if stride < self.base_stride:
                outputs[name] = self.pyramid[name](vit)
            elif stride == self.base_stride:
                outputs[name] = vit
            else:
                factor = stride // self.base_stride
                outputs[name] = F.max_pool2d(vit, kernel_size=factor, stride=factor)
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
