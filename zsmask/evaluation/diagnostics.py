"""Diagnostics of a zero-shot segmentation beyond IoU, accumulated in the evaluation pass.

* **Unseen-pixel outcomes**: where the ground-truth pixels of unseen classes go: to the right
  unseen class, another unseen class, a seen class, or no class (the pixel's highest class
  score is below ``no_class_score``: no query claims it for any class). Split Matching's
  claim (Sec. 1) is that without it unseen regions are absorbed by seen classes or background.
* **Boundary F-score**: precision and recall of predicted class boundaries against the ground
  truth's within a ``tolerance``-pixel band (the BF score of Csurka et al., 2013, pooled over
  the dataset): SAZS's boundary loss is meant to sharpen exactly these.
* **Bootstrap over test scenes**: the standard error of a metric from resampling the test
  images with replacement (per-image confusion matrices summed over each resample): the
  evaluation's share of a run's noise, apart from the training seed's; and of the difference
  of two models on the same images (paired: the scenes' own difficulty cancels).
* **Class-indicator AUROC**: how well AlignZeg's class indicator (Eq. 5) separates proposals
  lying on unseen regions from proposals on seen regions; proposals are assigned to the ground
  truth region they overlap most (IoU), and split into those with IoU >= 0.5 and the rest.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "UNSEEN_OUTCOMES",
    "unseen_pixel_outcomes",
    "boundary_map",
    "boundary_counts",
    "boundary_f_score",
    "proposal_region_labels",
    "auroc",
    "summarise",
    "bootstrap_standard_errors",
    "paired_bootstrap_standard_errors",
]

UNSEEN_OUTCOMES = ("right_unseen", "other_unseen", "seen", "no_class")


def unseen_pixel_outcomes(pred: np.ndarray, no_class: np.ndarray, gt: np.ndarray,
                          unseen_ids: Sequence[int]) -> np.ndarray:
    """Counts ``(4,)`` int64 of ground-truth unseen pixels by :data:`UNSEEN_OUTCOMES`.

    ``pred`` (H, W) predicted class ids, ``no_class`` (H, W) bool (a pixel no class claims:
    counted as ``no_class`` whatever its argmax), ``gt`` (H, W) class ids (other values, e.g.
    the ignore label, are not unseen and not counted). Every id not in ``unseen_ids`` is seen.
    """
    unseen_gt = np.isin(gt, unseen_ids)
    claimed = unseen_gt & ~no_class
    right = claimed & (pred == gt)
    pred_unseen = np.isin(pred, unseen_ids)
    return np.array([
        right.sum(),
        (claimed & pred_unseen & ~right).sum(),
        (claimed & ~pred_unseen).sum(),
        (unseen_gt & no_class).sum(),
    ], dtype=np.int64)


def boundary_map(labels: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` bool: pixels whose right or lower neighbour has another label."""
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square (Chebyshev) dilation of an ``(H, W)`` bool mask by ``radius`` pixels."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask[None, None].float(), 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def boundary_counts(pred: np.ndarray, gt: np.ndarray, tolerance: int = 3, ignore_label: int = 255) -> np.ndarray:
    """``(4,)`` int64: predicted boundary pixels within ``tolerance`` px of a ground-truth
    boundary, predicted boundary pixels, ground-truth boundary pixels within ``tolerance`` of a
    predicted one, ground-truth boundary pixels. Pixels within ``tolerance`` of an ignored
    pixel are left out of all four (the ignore region's edge is not a class boundary)."""
    pred_t = torch.from_numpy(np.asarray(pred, dtype=np.int64))
    gt_t = torch.from_numpy(np.asarray(gt, dtype=np.int64))
    keep = ~_dilate(gt_t == ignore_label, tolerance)
    pred_edge = boundary_map(pred_t) & keep
    gt_edge = boundary_map(torch.where(gt_t == ignore_label, -1, gt_t)) & keep
    return np.array([
        int((pred_edge & _dilate(gt_edge, tolerance)).sum()),
        int(pred_edge.sum()),
        int((gt_edge & _dilate(pred_edge, tolerance)).sum()),
        int(gt_edge.sum()),
    ], dtype=np.int64)


def boundary_f_score(counts: np.ndarray) -> float:
    """F-score in percent of summed :func:`boundary_counts`; NaN without any boundary."""
    matched_pred, pred, matched_gt, gt = (float(c) for c in counts)
    if pred == 0 or gt == 0:
        return float("nan")
    precision, recall = matched_pred / pred, matched_gt / gt
    return 0.0 if precision + recall == 0 else 100.0 * 2 * precision * recall / (precision + recall)


def proposal_region_labels(masks: torch.Tensor, gt: np.ndarray, unseen_ids: Sequence[int],
                           ignore_label: int = 255) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each proposal's best ground-truth region of one image.

    ``masks`` (Q, H, W) bool proposals, ``gt`` (H, W) class ids. A region is one class's pixels;
    ignored pixels count in neither. Returns ``(on_unseen (Q,) bool, matched (Q,) bool: IoU with
    that region >= 0.5, valid (Q,) bool: the proposal overlaps some region)``.
    """
    gt_t = torch.from_numpy(np.asarray(gt, dtype=np.int64)).to(masks.device)
    classes = [int(c) for c in torch.unique(gt_t) if int(c) != ignore_label]
    q = masks.shape[0]
    if not classes or q == 0:
        return np.zeros(q, bool), np.zeros(q, bool), np.zeros(q, bool)
    regions = torch.stack([gt_t == c for c in classes]).flatten(1).float()  # (R, HW)
    flat = (masks & (gt_t != ignore_label)).flatten(1).float()  # (Q, HW)
    inter = flat @ regions.T
    union = flat.sum(1, keepdim=True) + regions.sum(1)[None] - inter
    iou = inter / union.clamp(min=1)
    best_iou, best = iou.max(dim=1)
    on_unseen = np.isin(np.asarray(classes)[best.cpu().numpy()], unseen_ids)
    return on_unseen, (best_iou >= 0.5).cpu().numpy(), (inter.max(dim=1).values > 0).cpu().numpy()


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (percent) of ``scores`` for ``positive`` vs the rest: the
    probability that a random positive scores above a random negative, ties counting half
    (Mann-Whitney U). NaN when either class is empty."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return 100.0 * u / (n_pos * n_neg)


def summarise(outcomes: np.ndarray, boundary: np.ndarray, indicator: Dict[str, list]) -> Dict[str, float]:
    """Result keys (percent) from accumulated counts: ``unseen_as_<outcome>`` (share of unseen
    ground-truth pixels), ``boundary_F`` and, with indicator records, ``indicator_AUROC_matched``
    / ``indicator_AUROC_rest``."""
    total = outcomes.sum()
    out = {f"unseen_as_{name}": (100.0 * outcomes[i] / total if total else float("nan"))
           for i, name in enumerate(UNSEEN_OUTCOMES)}
    out["boundary_F"] = boundary_f_score(boundary)
    if indicator["scores"]:
        scores = np.concatenate(indicator["scores"])
        on_unseen = np.concatenate(indicator["on_unseen"])
        matched = np.concatenate(indicator["matched"])
        out["indicator_AUROC_matched"] = auroc(scores[matched], on_unseen[matched])
        out["indicator_AUROC_rest"] = auroc(scores[~matched], on_unseen[~matched])
    return out


def _bootstrap_draws(per_images: Sequence[np.ndarray], metric_fn, keys: Sequence[str], resamples: int,
                     seed: int) -> Dict[str, np.ndarray]:
    """``{key: (resamples, len(per_images))}`` metric values, every set of per-image matrices
    resampled with the same image draws (NaN where a resample's metric is not finite)."""
    rng = np.random.RandomState(seed)
    n = per_images[0].shape[0]
    flats = [p.reshape(n, -1) for p in per_images]
    values = {k: np.full((resamples, len(per_images)), np.nan) for k in keys}
    for r in range(resamples):
        counts = np.bincount(rng.randint(n, size=n), minlength=n)
        for j, flat in enumerate(flats):
            metrics = metric_fn((counts @ flat).reshape(per_images[j].shape[1:]))
            for k in keys:
                if np.isfinite(metrics[k]):
                    values[k][r, j] = metrics[k]
    return values


def _std_of_finite(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def bootstrap_standard_errors(per_image: np.ndarray, metric_fn, keys: Sequence[str], resamples: int = 200,
                              seed: int = 0) -> Dict[str, float]:
    """Standard errors of ``metric_fn(conf)[key]`` over test-image resamples.

    ``per_image`` (N, C + 1, C + 1) confusion matrices of N images; each of ``resamples`` draws
    N images with replacement (seeded), sums their matrices and evaluates ``metric_fn``
    (e.g. ``zero_shot_metrics`` with fixed class ids). Returns ``{key: std over resamples}``
    (NaN values of a resample, e.g. a class absent from it, are left out of that key)."""
    draws = _bootstrap_draws([per_image], metric_fn, keys, resamples, seed)
    return {k: _std_of_finite(v[:, 0]) for k, v in draws.items()}


def paired_bootstrap_standard_errors(per_image_a: np.ndarray, per_image_b: np.ndarray, metric_fn,
                                     keys: Sequence[str], resamples: int = 200, seed: int = 0) -> Dict[str, float]:
    """Standard errors of the difference ``metric(a) - metric(b)`` of two models evaluated on
    the same N test images (``(N, C + 1, C + 1)`` each, image i the same scene in both), over
    resamples that draw the same images for both: the share of a paired difference that more
    test scenes would remove. What the two models share per image (a scene's difficulty)
    cancels, unlike in either model's own standard error."""
    if per_image_a.shape != per_image_b.shape:
        raise ValueError(f"per-image matrices differ in shape: {per_image_a.shape} vs {per_image_b.shape}")
    draws = _bootstrap_draws([per_image_a, per_image_b], metric_fn, keys, resamples, seed)
    return {k: _std_of_finite(v[:, 0] - v[:, 1]) for k, v in draws.items()}
