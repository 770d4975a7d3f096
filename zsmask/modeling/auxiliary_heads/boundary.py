"""Boundary-aware training (SAZS Sec. 3.3, Eqs. 2-3): a boundary head on intermediate features
learns the ground truth's edges, so the features it reads become shape-aware.

- Targets: the Sobel operator on the ground-truth label map (:func:`sobel_edges`; on each
  class's mask, so label values carry no order). Pixels without annotation (ignore, unseen
  classes in training, padding) and their 3 x 3 neighbours are neither edge nor background: the
  losses skip them.
- L_bce: binary cross-entropy between the head's edge logits (resized to the label map) and
  the edges, over the valid pixels.
- L_shape (Eq. 2): edge maps and predicted edge probabilities are split into a grid of patches
  (3 x 6 in the paper); the frozen inverse-transformation network
  (:mod:`.inverse_transform`) regresses each pair's affine transform, and L_shape =
  mean ||theta_i - I||_F over the patches with ground-truth edges.

The head reads ``MODEL.SAZS.BOUNDARY.IN_FEATURE``: ``multi_scale_<i>`` (the pixel decoder's
i-th scale, coarsest first; the middle one by default, the paper's "middle-layer features") or
``mask_features`` (the stride-4 map the masks are read from). The paper's Eq. 3 weights are ``BCE_WEIGHT`` (lambda_2) and ``SHAPE_WEIGHT``
(lambda_1).
"""
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..layers import conv_norm
from .build import AUXILIARY_HEAD_REGISTRY
from .inverse_transform import InverseTransformNet, edge_patches, load_inverse_transform
from .multiscale_feature_enhancement import target_label_map

__all__ = ["BoundaryHead", "sobel_edges"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_edges(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Edges of label maps (B, H, W) int64 with -1 for pixels without annotation.

    Returns ``(edges, valid)``, both (B, H, W): ``edges`` float in {0, 1}, 1 where the Sobel
    gradient of some class's mask is non-zero; ``valid`` bool, False on unannotated pixels and
    their 3 x 3 neighbours (where an edge to "unknown" cannot be told from a real one).
    """
    kernels = torch.stack((_SOBEL_X, _SOBEL_X.T))[:, None].to(labels.device)  # (2, 1, 3, 3)
    edges = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for b in range(labels.shape[0]):
        classes = labels[b].unique()
        classes = classes[classes >= 0]
        if classes.numel() < 2:
            continue
        masks = (labels[b][None] == classes[:, None, None]).float()[:, None]  # (U, 1, H, W)
        gradients = F.conv2d(F.pad(masks, (1, 1, 1, 1), mode="replicate"), kernels)  # (U, 2, H, W)
        edges[b] = (gradients.abs().sum(dim=(0, 1)) > 0).float()
    unknown = (labels < 0).float()[:, None]
    valid = F.max_pool2d(unknown, 3, stride=1, padding=1)[:, 0] == 0
    return edges * valid, valid


def _feature(outputs: Dict, name: str) -> torch.Tensor:
    if name == "mask_features":
        return outputs["mask_features"]
    return outputs["multi_scale_features"][int(name.rsplit("_", 1)[1])]


@AUXILIARY_HEAD_REGISTRY.register()
class BoundaryHead(nn.Module):
    """``forward(outputs, targets, classify) -> {"loss_boundary_bce"[, "loss_boundary_shape"]}``;
    see the module docstring. :meth:`edge_logits` alone maps features to (B, 1, h, w) logits."""

    @configurable
    def __init__(self, *, in_channels: int, in_feature: str = "multi_scale_1", norm: str = "GN",
                 bce_weight: float = 1.0, shape_weight: float = 0.0,
                 inverse_transform: Optional[InverseTransformNet] = None, patch_grid: Tuple[int, int] = (3, 6)):
        """
        Args:
            in_channels: channels of ``in_feature``.
            in_feature: "mask_features" or "multi_scale_<i>".
            norm: normalisation of the 3 x 3 conv block.
            bce_weight, shape_weight: lambda_2 and lambda_1 of Eq. 3.
            inverse_transform: the frozen network of L_shape (needed when ``shape_weight`` > 0).
            patch_grid: (rows, cols) of the L_shape patches.
        """
        super().__init__()
        if not re.fullmatch(r"mask_features|multi_scale_\d+", in_feature):
            raise ValueError(f"MODEL.SAZS.BOUNDARY.IN_FEATURE must be 'mask_features' or 'multi_scale_<i>', "
                             f"got {in_feature!r}")
        if shape_weight > 0 and inverse_transform is None:
            raise ValueError("MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT > 0 needs the inverse-transformation network "
                             "(MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS)")
        self.in_feature = in_feature
        self.block = conv_norm(in_channels, in_channels, 3, norm, activation=F.relu)
        self.predictor = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.inverse_transform = inverse_transform.requires_grad_(False) if inverse_transform is not None else None
        self.patch_grid = tuple(patch_grid)
        self.weight_dict = {"loss_boundary_bce": bce_weight}
        if shape_weight > 0:
            self.weight_dict["loss_boundary_shape"] = shape_weight

    @classmethod
    def from_config(cls, cfg, in_channels: int, embed_dim: int):
        boundary = cfg.MODEL.SAZS.BOUNDARY
        in_channels = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM if boundary.IN_FEATURE == "mask_features" else in_channels
        use_shape = boundary.SHAPE_WEIGHT > 0
        return {
            "in_channels": in_channels,
            "in_feature": boundary.IN_FEATURE,
            "norm": boundary.NORM,
            "bce_weight": boundary.BCE_WEIGHT,
            "shape_weight": boundary.SHAPE_WEIGHT,
            "inverse_transform": load_inverse_transform(boundary.INVERSE_TRANSFORM_WEIGHTS) if use_shape else None,
            "patch_grid": tuple(boundary.PATCH_GRID),
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self.inverse_transform is not None:  # frozen: always in eval mode
            self.inverse_transform.eval()
        return self

    def edge_logits(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 1, h, w) edge logits."""
        return self.predictor(self.block(feature))

    def forward(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]],
                classify: Callable[[torch.Tensor], torch.Tensor]) -> Dict[str, torch.Tensor]:
        # Pseudo targets (Split Matching) are no ground truth: their pixels count as unannotated.
        annotated = [{"labels": t["labels"][~t["is_pseudo"]], "masks": t["masks"][~t["is_pseudo"]]}
                     if "is_pseudo" in t else t for t in targets]
        labels = target_label_map(annotated, tuple(targets[0]["masks"].shape[-2:]))
        edges, valid = sobel_edges(labels)
        logits = self.edge_logits(_feature(outputs, self.in_feature))
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)[:, 0].float()
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            return {name: zero.clone() for name in self.weight_dict}
        losses = {"loss_boundary_bce": F.binary_cross_entropy_with_logits(logits[valid], edges[valid])}
        if "loss_boundary_shape" in self.weight_dict:
            losses["loss_boundary_shape"] = self.shape_loss(logits.sigmoid() * valid, edges)
        return losses

    def shape_loss(self, probabilities: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Eq. 2: mean ||theta_i - I||_F over the patches (of (B, H, W) maps) with ground-truth edges."""
        size = self.inverse_transform.patch_size
        predicted = edge_patches(probabilities, self.patch_grid, size)
        truth = edge_patches(edges, self.patch_grid, size)
        has_edges = truth.flatten(1).amax(1) > 0
        if not bool(has_edges.any()):
            return probabilities.sum() * 0.0
        return self.inverse_transform.distance_to_identity(truth[has_edges], predicted[has_edges]).mean()
