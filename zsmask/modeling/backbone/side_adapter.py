"""AlignZeg's two image branches as one detectron2 backbone (``MODEL.BACKBONE.NAME: CLIPSideAdapterBackbone``).

AlignZeg (Ge et al., Sec. 3.1 and supplementary Sec. 1, following SAN) reads an image twice:

- a learnable **image encoder** (a plain ViT; paper: 8 layers, width 240, patch 16, on 640^2
  inputs) gives Z_enc for mask proposals;
- the **frozen CLIP ViT** (on the image rescaled by ``INPUT_SCALE``; paper: 320^2) runs its
  first ``L - DECODER_LAYERS`` blocks. The patch tokens after block ``FEATURE_LAYER`` are Z_clip
  (fused with Z_enc into Z_f by the pixel decoder); the tokens entering the last
  ``DECODER_LAYERS`` blocks are handed to the CLIP semantic decoder
  (:class:`~zsmask.modeling.proposal_embedder.CLIPSemanticDecoder`), which owns those blocks.
  Optional deep visual prompts (VPT-deep, as ZegCLIP; paper: 20 on COCO-Stuff) are learnable
  tokens appended before each of these blocks and dropped after it.

Inputs are images normalised with ``MODEL.PIXEL_MEAN/STD`` (CLIP's statistics), padded by the
meta-architecture to :attr:`size_divisibility`. Outputs:

- ``"side"`` (B, DIM, H/P, W/P): Z_enc;
- ``"clip"`` (B, width, h', w'): Z_clip, CLIP patch tokens after block ``FEATURE_LAYER``;
- ``"clip_tokens"`` (B, 1 + h'w', width): the tokens (class token first) entering the decoder
  blocks, on the same grid (h', w').
"""
import math
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..clip.shared import frozen_clip
from ..clip.visual_towers import run_blocks, tower_kind, tower_stride, vit_embed

__all__ = ["CLIPSideAdapterBackbone", "PlainViTEncoder"]


class PlainViTEncoder(nn.Module):
    """A learnable ViT without class token: ``(B, 3, H, W) -> (B, dim, ceil(H/p), ceil(W/p))``.

    Pre-norm transformer layers with a learned positional table for a ``base_grid`` (resized
    bicubically to other grids) and a final LayerNorm.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, patch_size: int, mlp_ratio: float = 4.0,
                 base_grid: int = 40):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MODEL.ALIGNZEG.IMAGE_ENCODER.DIM={dim} must be divisible by NUM_HEADS={num_heads}")
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, dim, base_grid, base_grid) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, -x.shape[-1] % self.patch_size, 0, -x.shape[-2] % self.patch_size))
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # (B, hw, dim)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)


@BACKBONE_REGISTRY.register()
class CLIPSideAdapterBackbone(Backbone):
    """Learnable image encoder + the first blocks of a frozen CLIP ViT (see the module docstring)."""

    @configurable
    def __init__(self, *, visual: nn.Module, encoder: PlainViTEncoder, feature_layer: int, decoder_layers: int,
                 input_scale: float = 1.0, num_deep_prompts: int = 0):
        """
        Args:
            visual: an open_clip ViT tower; frozen here (no gradients, eval mode). Only its
                first ``layers - decoder_layers`` blocks are kept.
            encoder: the learnable image encoder.
            feature_layer: Z_clip is the output of this block (1-based, <= layers - decoder_layers).
            decoder_layers: the last blocks, left to the semantic decoder.
            input_scale: CLIP reads the image resized by this factor.
            num_deep_prompts: learnable prompt tokens per kept block (0: none).
        """
        super().__init__()
        if tower_kind(visual) != "vit":
            raise ValueError("CLIPSideAdapterBackbone needs a CLIP ViT (e.g. ViT-B-16); got a ResNet tower")
        blocks = visual.transformer.resblocks
        num_run = len(blocks) - decoder_layers
        if decoder_layers < 1 or num_run < 1:
            raise ValueError(f"MODEL.ALIGNZEG.CLIP.DECODER_LAYERS={decoder_layers} must be in [1, {len(blocks) - 1}] "
                             f"for a CLIP with {len(blocks)} blocks")
        if not 1 <= feature_layer <= num_run:
            raise ValueError(f"MODEL.ALIGNZEG.CLIP.FEATURE_LAYER={feature_layer} must be in [1, {num_run}] "
                             f"(blocks before the {decoder_layers} decoder blocks)")
        if not 0 < input_scale <= 4:
            raise ValueError(f"MODEL.ALIGNZEG.CLIP.INPUT_SCALE must be in (0, 4], got {input_scale}")
        self.clip_patch = tower_stride(visual)
        self.width = visual.transformer.width
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        # Keep only what runs here: the embedding and the first blocks (not registered as `visual`,
        # whose last blocks belong to the semantic decoder).
        self.conv1, self.ln_pre = visual.conv1, visual.ln_pre
        self.class_embedding, self.positional_embedding = visual.class_embedding, visual.positional_embedding
        self.grid_size = visual.grid_size
        self.blocks = nn.ModuleList(list(blocks)[:num_run])
        for module in (self.conv1, self.ln_pre, self.blocks):
            module.requires_grad_(False)
        self.class_embedding.requires_grad_(False)
        self.positional_embedding.requires_grad_(False)
        self.encoder = encoder
        self.feature_layer = feature_layer
        self.input_scale = input_scale
        self.deep_prompts = (nn.Parameter(torch.randn(num_run, num_deep_prompts, self.width) / math.sqrt(self.width))
                             if num_deep_prompts > 0 else None)
        self._side_channels = encoder.patch_embed.out_channels

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec = None):
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(f"CLIPSideAdapterBackbone takes 3-channel RGB input, got {input_shape.channels} channels")
        az = cfg.MODEL.ALIGNZEG
        enc = az.IMAGE_ENCODER
        encoder = PlainViTEncoder(enc.DIM, enc.DEPTH, enc.NUM_HEADS, enc.PATCH_SIZE, enc.MLP_RATIO,
                                  base_grid=max(1, cfg.INPUT.MIN_SIZE_TEST // enc.PATCH_SIZE))
        return {
            "visual": frozen_clip(cfg).visual,
            "encoder": encoder,
            "feature_layer": az.CLIP.FEATURE_LAYER,
            "decoder_layers": az.CLIP.DECODER_LAYERS,
            "input_scale": az.CLIP.INPUT_SCALE,
            "num_deep_prompts": az.CLIP.NUM_DEEP_PROMPTS,
        }

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to multiples of this, so both branches see whole patches."""
        return max(self.encoder.patch_size, int(math.ceil(self.clip_patch / self.input_scale)))

    def train(self, mode: bool = True):
        """The frozen CLIP blocks stay in eval mode."""
        super().train(mode)
        for module in (self.conv1, self.ln_pre, self.blocks):
            module.eval()
        return self

    def clip_forward(self, x: torch.Tensor):
        """Frozen CLIP blocks on normalised images: ``(Z_clip (B, width, h', w'), tokens (B, 1 + h'w', width))``."""
        if self.input_scale != 1.0:
            size = (max(1, round(x.shape[-2] * self.input_scale)), max(1, round(x.shape[-1] * self.input_scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = F.pad(x, (0, -x.shape[-1] % self.clip_patch, 0, -x.shape[-2] % self.clip_patch))
        tokens, (h, w) = vit_embed(self, x)
        tokens, tapped = run_blocks(self.blocks, tokens, self.batch_first, self.deep_prompts, taps=(self.feature_layer,))
        z_clip = tapped[self.feature_layer][:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return z_clip, tokens

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised images ``(B, 3, H, W)`` -> ``{"side", "clip", "clip_tokens"}`` (module docstring)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CLIPSideAdapterBackbone expects (B, 3, H, W) input, got {tuple(x.shape)}")
        if self.deep_prompts is None:
            with torch.no_grad():
                z_clip, tokens = self.clip_forward(x)
        else:
            z_clip, tokens = self.clip_forward(x)
        return {"side": self.encoder(x), "clip": z_clip, "clip_tokens": tokens}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Shapes of the two maps (``clip_tokens`` is a token sequence on the ``clip`` grid)."""
        return {
            "side": ShapeSpec(channels=self._side_channels, stride=self.encoder.patch_size),
            "clip": ShapeSpec(channels=self.width, stride=int(round(self.clip_patch / self.input_scale))),
        }
