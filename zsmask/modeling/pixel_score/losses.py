"""Dense per-class segmentation losses of OTSeg (Appendix B, Eqs. 19-21; ZegOT Eq. 12).

All take per-class logits ``(B, K, H, W)``, binary targets ``(B, K, H, W)`` and a validity mask
``(B, H, W)`` (False: unannotated, ignored or padding pixels, which add nothing). The focal loss
is the mean over valid pixels and classes (Eq. 20), or, with ``normalization="present_pairs"``,
per-class pixel means summed and divided by the (image, class) pairs present in the ground
truth (Mask2Former's ``num_masks``); dice is over the present pairs (Eq. 21).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F

from ..criterion import sigmoid_focal_loss

FOCAL_NORMALIZATIONS = ("mean", "present_pairs")

__all__ = ["FOCAL_NORMALIZATIONS", "dense_targets", "dense_focal_loss", "dense_dice_loss", "dense_cross_entropy", "dense_segmentation_losses"]


def dense_targets(targets: Sequence[Dict[str, torch.Tensor]], num_classes: int) -> torch.Tensor:
    """``[{"labels": (T,), "masks": (T, H, W)}]`` -> ``(B, K, H, W)`` float: 1 where a target of
    that class covers the pixel. Targets flagged ``is_pseudo`` (per-image extra classes) are skipped."""
    height, width = targets[0]["masks"].shape[-2:]
    dense = torch.zeros((len(targets), num_classes, height, width), device=targets[0]["masks"].device)
    for b, target in enumerate(targets):
        keep = ~target["is_pseudo"] if "is_pseudo" in target else torch.ones_like(target["labels"], dtype=torch.bool)
        labels, masks = target["labels"][keep], target["masks"][keep].float()
        if labels.numel():
            dense[b].index_add_(0, labels, masks)
    return dense.clamp_(max=1.0)


def _present(targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: the class has a valid target pixel in the image."""
    return (targets * valid[:, None]).flatten(2).amax(-1) > 0


def _per_class_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) -> (B, K): the mean over each image's valid pixels."""
    weights = valid[:, None].to(values.dtype)
    return (values * weights).flatten(2).sum(-1) / weights.flatten(2).sum(-1).clamp(min=1.0)


def dense_focal_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, gamma: float = 2.0,
                     normalization: str = "mean") -> torch.Tensor:
    """Eq. 20: sigmoid focal loss (no alpha weighting) of every class at every valid pixel,
    averaged over pixels and classes ("mean"), or per-class pixel means summed and divided by
    the present (image, class) pairs ("present_pairs")."""
    if normalization not in FOCAL_NORMALIZATIONS:
        raise ValueError(f"MODEL.OTSEG.LOSS.FOCAL_NORMALIZATION must be one of {FOCAL_NORMALIZATIONS}, "
                         f"got {normalization!r}")
    focal = sigmoid_focal_loss(logits, targets, alpha=-1.0, gamma=gamma)
    if normalization == "mean":
        weights = valid[:, None].to(focal.dtype)
        return (focal * weights).sum() / (weights.sum() * focal.shape[1]).clamp(min=1.0)
    per_class = _per_class_mean(focal, valid)
    return per_class.sum() / _present(targets, valid).sum().clamp(min=1)


def dense_dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 21: 1 - (2 sum p y + 1) / (sum y^2 + sum p^2 + 1), p = sigmoid, over the present
    (image, class) pairs (+1 smoothing), / their number."""
    present = _present(targets, valid)
    weights = valid[:, None].to(logits.dtype)
    prob = logits.sigmoid() * weights
    target = targets * weights
    numerator = 2.0 * (prob * target).flatten(2).sum(-1) + 1.0
    denominator = (target ** 2).flatten(2).sum(-1) + (prob ** 2).flatten(2).sum(-1) + 1.0
    loss = (1.0 - numerator / denominator) * present
    return loss.sum() / present.sum().clamp(min=1)


def dense_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 19 with phi the softmax over the K classes: -[y log phi + (1 - y) log(1 - phi)]
    summed over classes, averaged over the valid pixels of the batch."""
    log_prob = F.log_softmax(logits.float(), dim=1)
    log_not = torch.log1p(-log_prob.exp().clamp(max=1.0 - 1e-6))
    per_pixel = -(targets * log_prob + (1.0 - targets) * log_not).sum(1)  # (B, H, W)
    return per_pixel[valid].sum() / valid.sum().clamp(min=1)


def dense_segmentation_losses(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                              gamma: float = 2.0, focal_normalization: str = "mean") -> Dict[str, torch.Tensor]:
    """``{"focal", "dice", "ce"}`` of logits resized (bilinear) to the targets' size."""
    if logits.shape[:2] != targets.shape[:2]:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in (B, K)")
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    return {"focal": dense_focal_loss(logits, targets, valid, gamma, focal_normalization), "dice": dense_dice_loss(logits, targets, valid),
            "ce": dense_cross_entropy(logits, targets, valid)}
