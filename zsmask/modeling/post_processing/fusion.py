"""Fusion of a prediction with eigensegments (SAZS Sec. 3.5, Eq. 7).

Pred = Phi_FUSE(E_k, argmax F): every eigensegment E_k takes the predicted class c* whose mask
{argmax = c} has the largest IoU with it. The paper applies this to every segment. Here a
segment is relabelled only when c* also covers at least ``min_coverage`` of it: a segment that
spans several predicted classes (an under-segmentation, e.g. two touching objects of one
colour) keeps the prediction instead of giving all its pixels to one class. ``min_coverage`` 0
is the paper's rule.

The output stays a score map: at a relabelled pixel the scores of its predicted class and of
c* are swapped, so argmax is c* and the pixel's scores keep their values (and confidence).
"""
from typing import Optional

import torch
from detectron2.config import configurable

from .build import POST_PROCESSOR_REGISTRY
from .eigensegments import SpectralEigensegments
from .semantic_features import build_semantic_features

__all__ = ["EigensegmentFusion", "fuse_segments", "segment_class_iou"]


def segment_class_iou(segments: torch.Tensor, prediction: torch.Tensor, num_classes: int):
    """IoU (S, K) of every segment with every predicted class mask, and the intersections (S, K)
    in pixels, for ``segments`` and ``prediction`` (H, W) int64 (segment ids 0..S-1)."""
    num_segments = int(segments.max()) + 1
    intersection = torch.bincount((segments * num_classes + prediction).flatten(),
                                  minlength=num_segments * num_classes).view(num_segments, num_classes).double()
    union = intersection.sum(1, keepdim=True) + intersection.sum(0, keepdim=True) - intersection
    return intersection / union.clamp(min=1), intersection


def fuse_segments(scores: torch.Tensor, segments: torch.Tensor, min_coverage: float = 0.0) -> torch.Tensor:
    """Eq. 7 on scores (K, H, W) with eigensegments (H, W) int64: see the module docstring."""
    if segments.shape != scores.shape[-2:]:
        raise ValueError(f"segments {tuple(segments.shape)} and scores {tuple(scores.shape)} differ in size")
    segments = segments.to(scores.device).long()
    prediction = scores.argmax(0)
    iou, intersection = segment_class_iou(segments, prediction, scores.shape[0])
    best = iou.argmax(1)  # (S,)
    coverage = intersection.gather(1, best[:, None])[:, 0] / intersection.sum(1).clamp(min=1)
    best = torch.where(coverage >= min_coverage, best, torch.full_like(best, -1))
    target = best[segments]
    changed = (target >= 0) & (target != prediction)
    if not bool(changed.any()):
        return scores
    fused = scores.flatten(1).clone()
    pixels = changed.flatten().nonzero()[:, 0]
    old, new = prediction.flatten()[pixels], target.flatten()[pixels]
    fused[new, pixels], fused[old, pixels] = fused[old, pixels], fused[new, pixels]
    return fused.view_as(scores)


@POST_PROCESSOR_REGISTRY.register()
class EigensegmentFusion:
    """SAZS's fusion module: eigensegments of the input image (``MODEL.SAZS.SPECTRAL``) fused
    with the prediction by Eq. 7 (``MODEL.SAZS.FUSION``)."""

    @configurable
    def __init__(self, *, eigensegments: SpectralEigensegments, min_coverage: float = 0.0):
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"MODEL.SAZS.FUSION.MIN_COVERAGE must be in [0, 1], got {min_coverage}")
        self.eigensegments = eigensegments
        self.min_coverage = min_coverage

    @classmethod
    def from_config(cls, cfg, clip: Optional[torch.nn.Module] = None):
        spectral = cfg.MODEL.SAZS.SPECTRAL
        semantic = build_semantic_features(cfg, clip)
        return {
            "eigensegments": SpectralEigensegments(
                semantic, spectral.RESOLUTION, spectral.NUM_EIGENVECTORS, spectral.NUM_NEIGHBORS,
                spectral.SEMANTIC_WEIGHT, spectral.SHAPE_WEIGHT, spectral.CONNECTED_COMPONENTS),
            "min_coverage": cfg.MODEL.SAZS.FUSION.MIN_COVERAGE,
        }

    def __call__(self, sem_seg: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """sem_seg (K, H, W), image (3, h, w) RGB 0-255 -> fused (K, H, W)."""
        segments = self.eigensegments(image, tuple(sem_seg.shape[-2:]))
        return fuse_segments(sem_seg, segments, self.min_coverage)
