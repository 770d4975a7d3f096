"""Frozen patch features for SAZS's semantic affinity Z_sem (Sec. 3.4, Eq. 4).

As Deep Spectral Methods (Melas-Kyriazi et al. 2022), whom SAZS follows, the features are the
keys of the last attention block of a self-supervised ViT (DINO in the paper). Two sources:

- :class:`ViTKeyFeatures`: any timm ViT loaded from a local weight file (timm or DINO key
  layout, e.g. DINO's ``dino_deitsmall16_pretrain.pth`` into ``vit_small_patch16_224``);
- :class:`CLIPKeyFeatures`: the model's own CLIP visual tower (the last block's keys of a ViT,
  ``res4`` of a ModifiedResNet), used when no weight file is configured.

Both map one RGB image ``(3, H, W)`` on the 0-255 scale to features ``(C, h, w)``; the image is
resized so that its long side is ``input_size`` (sides rounded to the patch size). Neither is a
submodule of the model: their weights stay out of zsmask checkpoints and get no gradients.
"""
import logging
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.visual_towers import resnet_stages, tower_kind, tower_stride, vit_forward_tokens

__all__ = ["ViTKeyFeatures", "CLIPKeyFeatures", "build_semantic_features", "resize_long_side"]
logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("teacher", "state_dict", "model", "student")
_KEY_PREFIXES = ("module.", "backbone.")


def resize_long_side(image: torch.Tensor, long_side: int, multiple: int) -> torch.Tensor:
    """(3, H, W) -> (1, 3, h, w) float with max(h, w) ~ ``long_side``, both multiples of ``multiple``."""
    height, width = image.shape[-2:]
    scale = long_side / max(height, width)
    size = tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)


def _unwrap_state_dict(state: dict) -> dict:
    """The ViT's own parameters from a checkpoint (DINO's ``teacher`` / ``backbone.``, DDP's ``module.``)."""
    for key in _WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    unwrapped = {}
    for name, value in state.items():
        for prefix in _KEY_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        unwrapped[name] = value
    return unwrapped


class ViTKeyFeatures:
    """Last-block attention keys of a frozen timm ViT loaded from ``weights`` (a local file)."""

    def __init__(self, architecture: str, weights: str, input_size: int = 448,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        import timm

        if not os.path.isfile(weights):
            raise FileNotFoundError(f"MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS: no file {weights!r} (a local checkpoint "
                                    f"of the timm ViT {architecture!r}, e.g. DINO's dino_deitsmall16_pretrain.pth; "
                                    f"leave it empty to use the CLIP visual tower's features)")
        try:
            vit = timm.create_model(architecture, pretrained=False, num_classes=0, dynamic_img_size=True)
        except RuntimeError as error:  # timm: "Unknown model"
            raise ValueError(f"MODEL.SAZS.SEMANTIC_FEATURES.VIT: {error}") from error
        state = _unwrap_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        advice = "set MODEL.SAZS.SEMANTIC_FEATURES.VIT to the checkpoint's architecture"
        try:
            missing, unexpected = vit.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise ValueError(f"{weights!r} does not fit the timm ViT {architecture!r}: {error}; {advice}") from error
        missing = [name for name in missing if not name.startswith("head")]
        if missing:
            raise ValueError(f"{weights!r} does not fit the timm ViT {architecture!r}: missing {missing[:8]} "
                             f"({len(missing)} in all; unexpected: {unexpected[:8]}); {advice}")
        self.vit = vit.eval().requires_grad_(False)
        self.input_size = input_size
        self.patch_size = vit.patch_embed.patch_size[0]
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"ViTKeyFeatures(patch {self.patch_size}, input {self.input_size})"

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        device = next(self.vit.parameters()).device
        x = resize_long_side(image.to(device), self.input_size, self.patch_size)
        x = (x - self.pixel_mean.to(device)) / self.pixel_std.to(device)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        captured = []
        handle = self.vit.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            self.vit.forward_features(x)
        finally:
            handle.remove()
        width = captured[0].shape[-1] // 3
        keys = captured[0][0, self.vit.num_prefix_tokens:, width:2 * width]  # (h*w, C)
        return keys.T.reshape(width, *grid).float()

    def to(self, device) -> "ViTKeyFeatures":
        self.vit.to(device)
        return self


class CLIPKeyFeatures:
    """The model's CLIP visual tower as the feature source: ViT last-block keys, ResNet ``res4``."""

    def __init__(self, clip: nn.Module, input_size: int = 448):
        self.clip = clip  # CLIPTextImageEncoder
        self.input_size = input_size

    def __repr__(self) -> str:
        return f"CLIPKeyFeatures(input {self.input_size})"

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        visual = self.clip.model.visual
        x = resize_long_side(image.to(self.clip.device), self.input_size, tower_stride(visual))
        x = self.clip.normalize_images(x)
        if tower_kind(visual) != "vit":
            return resnet_stages(visual, x)["res4"][0].float()
        tokens, grid = vit_forward_tokens(visual, x, skip_last_block=True)
        last = visual.transformer.resblocks[-1]
        width = tokens.shape[-1]
        attn = last.attn
        bias = attn.in_proj_bias[width:2 * width] if attn.in_proj_bias is not None else None
        keys = F.linear(last.ln_1(tokens[0, 1:]), attn.in_proj_weight[width:2 * width], bias)  # (h*w, C)
        return keys.T.reshape(width, *grid).float()


def build_semantic_features(cfg, clip: nn.Module):
    """The configured ViT, or CLIP's tower when ``MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS`` is empty
    (logged); None when the semantic affinity is off (``MODEL.SAZS.SPECTRAL.SEMANTIC_WEIGHT`` 0)."""
    spec = cfg.MODEL.SAZS.SEMANTIC_FEATURES
    if cfg.MODEL.SAZS.SPECTRAL.SEMANTIC_WEIGHT == 0:
        return None
    if spec.WEIGHTS:
        features = ViTKeyFeatures(spec.VIT, spec.WEIGHTS, spec.INPUT_SIZE, spec.PIXEL_MEAN, spec.PIXEL_STD)
        logger.info("SAZS eigensegments: Z_sem from the last-block keys of %s loaded from %s", spec.VIT, spec.WEIGHTS)
        return features.to(cfg.MODEL.DEVICE)
    logger.warning("SAZS eigensegments: MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS is empty, so Z_sem uses the model's "
                   "CLIP visual tower (last-block keys) instead of a self-supervised ViT such as DINO; set it to a "
                   "local checkpoint of MODEL.SAZS.SEMANTIC_FEATURES.VIT (%s) for the paper's affinity", spec.VIT)
    return CLIPKeyFeatures(clip, spec.INPUT_SIZE)

