"""Multi-scale Feature Enhancement, MFE (Split Matching, Chen et al., Sec. 3.3, Fig. 4).

The pixel decoder's three scales F_0 (coarsest) .. F_2 (finest) each go through a dense block
(3x3 conv, normalisation, ReLU); the refined F_0 is resized to F_1 and added to the refined F_1,
the sum resized to F_2 and added to the refined F_2, giving F_u at F_2's resolution.
L_MFE = CE(F_u, Y_p) + focal(F_u, Y_p) trains the pixel decoder through F_u; at inference MFE
is not run.

The paper does not say how F_u is compared with Y_p. Here a 1x1 convolution projects F_u into
CLIP's joint space and every pixel is classified, with the model's own classifier, against the
joint classes E = cat(A_s, C_u) of its image: Y_p = Y_s ∪ Y_u becomes a label map (each pixel
the class of the seen mask or the pseudo mask covering it; pixels covered by neither are
ignored), sampled at F_u's resolution (nearest). CE is averaged over labelled pixels; the
sigmoid focal loss is summed over classes and averaged over labelled pixels.
"""
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..criterion import sigmoid_focal_loss
from ..layers import conv_norm
from .build import AUXILIARY_HEAD_REGISTRY

__all__ = ["MultiScaleFeatureEnhancement", "target_label_map"]

MFE_NORMS = ("GN", "BN", "")


def target_label_map(targets: List[Dict[str, torch.Tensor]], size) -> torch.Tensor:
    """(B, h, w) int64 class of the target mask covering each pixel (-1 where none), from
    ``labels`` (T,) and disjoint ``masks`` (T, H, W), sampled at ``size`` (nearest)."""
    maps = []
    for target in targets:
        masks = target["masks"]
        labels = target["labels"].to(masks.device)
        if masks.shape[0] == 0:
            maps.append(torch.full(masks.shape[-2:], -1, dtype=torch.int64, device=masks.device))
            continue
        covered, index = masks.bool().max(dim=0)
        maps.append(torch.where(covered, labels[index], torch.full_like(index, -1)))
    height = max(m.shape[0] for m in maps)
    width = max(m.shape[1] for m in maps)
    stacked = torch.stack([F.pad(m, (0, width - m.shape[1], 0, height - m.shape[0]), value=-1) for m in maps])
    return F.interpolate(stacked[:, None].float(), size=size, mode="nearest")[:, 0].long()


@AUXILIARY_HEAD_REGISTRY.register()
class MultiScaleFeatureEnhancement(nn.Module):
    """``forward(outputs, targets, classify) -> {"loss_mfe_ce", "loss_mfe_focal"}``; see the module
    docstring. :meth:`fuse` alone maps the three scales to F_u (B, C, h_2, w_2)."""

    @configurable
    def __init__(self, *, in_channels: int, embed_dim: int, norm: str = "GN", weight: float = 1.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, num_scales: int = 3):
        """
        Args:
            in_channels: channels C of the pixel decoder's multi-scale features.
            embed_dim: D of the joint class space.
            norm: "GN", "BN" or "" (Table 4).
            weight: weight of both loss terms.
            focal_alpha, focal_gamma: focal loss parameters.
            num_scales: scales fused (the coarsest first).
        """
        super().__init__()
        if norm not in MFE_NORMS:
            raise ValueError(f"MODEL.SPLIT_MATCHING.MFE.NORM must be one of {MFE_NORMS}, got {norm!r}")
        self.blocks = nn.ModuleList(conv_norm(in_channels, in_channels, 3, norm, activation=F.relu)
                                    for _ in range(num_scales))
        self.project = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.weight_dict = {"loss_mfe_ce": weight, "loss_mfe_focal": weight}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg, in_channels: int, embed_dim: int):
        sm = cfg.MODEL.SPLIT_MATCHING
        return {
            "in_channels": in_channels,
            "embed_dim": embed_dim,
            "norm": sm.MFE.NORM,
            "weight": sm.MFE.WEIGHT,
            "focal_alpha": sm.FOCAL_ALPHA,
            "focal_gamma": sm.FOCAL_GAMMA,
        }

    def fuse(self, multi_scale_features: List[torch.Tensor]) -> torch.Tensor:
        """F_0 .. F_2 (coarsest first), each (B, C, h_i, w_i) -> F_u (B, C, h_2, w_2)."""
        if len(multi_scale_features) != len(self.blocks):
            raise ValueError(f"MFE fuses {len(self.blocks)} scales, got {len(multi_scale_features)}")
        fused = None
        for block, feature in zip(self.blocks, multi_scale_features):
            refined = block(feature)
            if fused is not None:
                refined = refined + F.interpolate(fused, size=refined.shape[-2:], mode="bilinear", align_corners=False)
            fused = refined
        return fused

    def forward(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]],
                classify: Callable[[torch.Tensor], torch.Tensor]) -> Dict[str, torch.Tensor]:
        fused = self.fuse(outputs["multi_scale_features"])
        embeddings = self.project(fused)  # (B, D, h, w)
        batch, _, height, width = embeddings.shape
        logits = classify(embeddings.flatten(2).transpose(1, 2))[..., :-1].float()  # (B, h*w, C)
        labels = target_label_map(targets, (height, width)).flatten(1).to(logits.device)  # (B, h*w)
        valid = labels >= 0
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            return {"loss_mfe_ce": zero, "loss_mfe_focal": zero.clone()}
        logits, labels = logits[valid], labels[valid]  # (N, C), (N,)
        one_hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        focal = sigmoid_focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma).sum(-1).mean()
        return {"loss_mfe_ce": F.cross_entropy(logits, labels), "loss_mfe_focal": focal}
