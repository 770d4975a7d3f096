"""Batched matching costs between every prediction and every target of an image.

All functions take predictions at P shared points, ``pred_logits`` (B, Q, P), and targets at
the same points, ``target`` (B, T, P) with values in [0, 1], and return (B, Q, T).
"""
import torch
import torch.nn.functional as F

__all__ = ["batch_sigmoid_bce_cost", "batch_dice_cost", "batch_iou_cost", "batch_focal_class_cost"]


def batch_sigmoid_bce_cost(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid binary cross-entropy between every prediction and every target.

    Uses ``BCE(x, y) = softplus(x) - x * y``, so all pairs need one fused softplus pass over
    the predictions and a single matrix product.

    Args:
        pred_logits: (B, Q, P) mask logits at P points.
        target: (B, T, P) target values in [0, 1] at the same points.
    Returns:
        (B, Q, T) BCE averaged over the points.
    """
    num_points = pred_logits.shape[-1]
    positive_term = F.softplus(pred_logits).sum(-1, keepdim=True)  # (B, Q, 1)
    cross_term = torch.bmm(pred_logits, target.transpose(1, 2))  # (B, Q, T)
    return (positive_term - cross_term) / num_points


def batch_dice_cost(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice loss ``1 - (2 |p * y| + 1) / (|p| + |y| + 1)`` between every prediction and target.

    Args:
        pred_logits: (B, Q, P) mask logits at P points (sigmoid gives probabilities ``p``).
        target: (B, T, P) target values ``y`` in [0, 1] at the same points.
    Returns:
        (B, Q, T) dice cost.
    """
    pred_prob = pred_logits.sigmoid()
    intersection = torch.bmm(pred_prob, target.transpose(1, 2))  # (B, Q, T)
    total = pred_prob.sum(-1)[:, :, None] + target.sum(-1)[:, None, :]
    return 1.0 - (2.0 * intersection + 1.0) / (total + 1.0)


def batch_iou_cost(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft IoU (Jaccard) loss ``1 - (|p * y| + 1) / (|p| + |y| - |p * y| + 1)`` between every
    prediction and target (Rahman and Wang 2016), ``p = sigmoid(pred_logits)``.

    Args:
        pred_logits: (B, Q, P) mask logits at P points.
        target: (B, T, P) target values ``y`` in [0, 1] at the same points.
    Returns:
        (B, Q, T) IoU cost.
    """
    pred_prob = pred_logits.sigmoid()
    intersection = torch.bmm(pred_prob, target.transpose(1, 2))  # (B, Q, T)
    union = pred_prob.sum(-1)[:, :, None] + target.sum(-1)[:, None, :] - intersection
    return 1.0 - (intersection + 1.0) / (union + 1.0)


def batch_focal_class_cost(class_logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                           gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal classification cost of assigning each query to each target's class
    (Deformable DETR, Zhu et al. 2021): the focal loss of predicting the class minus that of
    not predicting it, ``alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p))``.

    Args:
        class_logits: (B, Q, C) per-class logits (sigmoid scores ``p``).
        labels: (B, T) int64 class of every target, in [0, C).
    Returns:
        (B, Q, T) cost.
    """
    num_queries = class_logits.shape[1]
    logits = torch.gather(class_logits, 2, labels[:, None, :].expand(-1, num_queries, -1))  # (B, Q, T)
    prob = logits.sigmoid()
    positive = alpha * (1 - prob) ** gamma * F.softplus(-logits)  # -log p = softplus(-x)
    negative = (1 - alpha) * prob ** gamma * F.softplus(logits)  # -log(1 - p) = softplus(x)
    return positive - negative
