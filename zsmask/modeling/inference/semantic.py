"""Semantic inference of mask classification (MaskFormer, Cheng et al. 2021, Sec. 3.4)."""
import torch
import torch.nn.functional as F

__all__ = ["semantic_inference"]


def semantic_inference(mask_logits: torch.Tensor, mask_cls_logits: torch.Tensor,
                       class_probs: torch.Tensor = None) -> torch.Tensor:
    """Per-pixel class scores ``sum_q p_q(c) * sigmoid(m_q)``.

    ``mask_cls_logits`` (Q, K + 1), last column "no object" (dropped after the softmax, so a
    query's class probabilities sum to at most 1); ``mask_logits`` (Q, H, W) -> (K, H, W).
    ``class_probs`` (Q, K), when given, replaces the softmax (e.g. sigmoid scores).
    """
    if mask_cls_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"{mask_cls_logits.shape[0]} class predictions for {mask_logits.shape[0]} masks")
    if class_probs is None:
        class_probs = F.softmax(mask_cls_logits, dim=-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())
