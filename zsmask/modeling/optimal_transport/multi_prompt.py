"""Multi-Prompt Sinkhorn (MPS, OTSeg Sec. 4.2 (a), Eqs. 8-10) and the multi-layer fusion of
ZegOT's deep feature alignment (ZegOT Sec. 4.2, Eqs. 5-8).

For one class, S (M, N) holds the cosine scores of M pixels against its N prompts (Eq. 8). MPS
transports the pixels (mass 1/M each) to the prompts (mass 1/N each) at cost C = 1 - S
(Algorithm 1) and weighs every score by its share of the plan, T* ⊙ S (Eq. 9); summing over the
prompts gives the refined map S* (M,). The plan is rescaled by M * N so that a uniform plan
weighs every score by 1 and S* keeps the scale of the scores (a sum of N cosines; the authors'
released code scales it the same way, the paper leaves the constant out).
"""
from typing import NamedTuple, Optional, Sequence

import torch

from .sinkhorn import log_sinkhorn

__all__ = ["MultiPromptSinkhornResult", "multi_prompt_sinkhorn", "fuse_layer_maps"]


class MultiPromptSinkhornResult(NamedTuple):
    """``refined`` (..., M, N) float32: M N T* ⊙ S per prompt (sum over the last dim for S*);
    ``plan`` (..., M, N): T*; ``iterations``: Sinkhorn iterations run."""

    refined: torch.Tensor
    plan: torch.Tensor
    iterations: int


def multi_prompt_sinkhorn(scores: torch.Tensor, epsilon: float, max_iter: int = 100,
                          tol: Optional[float] = 1e-6) -> MultiPromptSinkhornResult:
    """MPS of score maps ``scores`` (..., M, N): one transport problem per leading index (e.g.
    image and class), uniform marginals, cost ``1 - scores``; float32 even under autocast;
    differentiable. ``epsilon``, ``max_iter`` (t_max) and ``tol`` as in :func:`log_sinkhorn`."""
    if scores.dim() < 2:
        raise ValueError(f"MPS needs score maps (..., M pixels, N prompts), got shape {tuple(scores.shape)}")
    num_pixels, num_prompts = scores.shape[-2:]
    scores = scores.float()
    result = log_sinkhorn(1.0 - scores, epsilon, max_iter, tol)
    refined = (num_pixels * num_prompts) * result.plan * scores
    return MultiPromptSinkhornResult(refined, result.plan, result.iterations)


def fuse_layer_maps(refined_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """ZegOT Eq. 8: fuse the refined maps of layers n..L (same shape, shallow to deep).

    S* = S*_L ⊙ prod_{i<L} sigmoid(S*_i)^(1/(d-1)), d = L - n + 1: the sigmoids of the
    intermediate maps gate the last layer's map through their geometric mean. The last map
    enters as is (Eq. 8's identity for i = L; a fractional power of a signed map is undefined),
    as the authors' released code fuses per-layer maps. One layer: S*_L unchanged.
    """
    if not refined_maps:
        raise ValueError("fuse_layer_maps needs at least one refined score map")
    *intermediate, last = refined_maps
    if not intermediate:
        return last
    log_gate = sum(torch.nn.functional.logsigmoid(m) for m in intermediate) / len(intermediate)
    return last * log_gate.exp()
