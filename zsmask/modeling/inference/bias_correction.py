"""AlignZeg's Predictive Bias Correction at inference (Sec. 3.3, Eq. 7)."""
import torch

__all__ = ["suppress_seen_scores"]


def suppress_seen_scores(scores: torch.Tensor, indicator: torch.Tensor, seen: torch.Tensor,
                         threshold: float) -> torch.Tensor:
    """Eq. 7: ``P_bc[i, j] = v_min`` if ``I[i] > gamma`` and class j is seen, else ``P[i, j]``.

    Args:
        scores: P (N, C) class scores of N proposals over the test vocabulary.
        indicator: I (N,) class indicator in [0, 1] (near 1: no seen class in the proposal).
        seen: (C,) bool, which test classes are seen classes.
        threshold: gamma.
    Returns:
        (N, C) corrected scores; v_min is the minimum of ``scores``.
    """
    if scores.dim() != 2 or indicator.shape != scores.shape[:1] or seen.shape != scores.shape[1:]:
        raise ValueError(f"expected scores (N, C), indicator (N,) and seen (C,), got {tuple(scores.shape)}, "
                         f"{tuple(indicator.shape)} and {tuple(seen.shape)}")
    flagged = (indicator > threshold)[:, None] & seen.to(scores.device)[None, :]
    return torch.where(flagged, scores.min(), scores)
