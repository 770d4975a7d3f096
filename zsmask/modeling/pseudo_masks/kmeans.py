"""Multi-scale K-means on dense CLIP features and mask fusion (Split Matching Sec. 3.2, after
CLIP-ZSS), batched over images and vectorised over pixels and clusters.

Shapes: B images, D feature channels, an (h, w) feature grid, N = h * w cells, K seeds.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["window_starts", "multiscale_seeds", "spherical_kmeans", "fuse_clusters"]


def window_starts(size: int, window: int) -> torch.Tensor:
    """Start indices ``{0, [s/2], 2[s/2], ..., [size - s]}`` of Eq. 1's index sets I / J for
    window ``s``: stride ``round(s / 2)`` (at least 1), and the last window always ends at the border."""
    window = min(window, size)
    stride = max(1, int(round(window / 2)))
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return torch.tensor(starts, dtype=torch.long)


def multiscale_seeds(features: torch.Tensor, window_sizes: Sequence[int]) -> torch.Tensor:
    """K-means seeds G of Eq. 1: means of ``features`` over ``s x s`` windows with stride
    ``s/2``, for every ``s`` in ``window_sizes`` (in feature cells; clipped to the grid).

    Args:
        features: ``(B, D, h, w)``.
    Returns:
        ``(B, K, D)`` seeds, K = sum over s of |I_s| * |J_s|, ordered by window size, then row-major.
    """
    if not window_sizes or any(int(s) < 1 for s in window_sizes):
        raise ValueError(f"window sizes must be positive integers, got {list(window_sizes)}")
    batch, dim, height, width = features.shape
    seeds = []
    for s in window_sizes:
        sh, sw = min(int(s), height), min(int(s), width)
        means = F.avg_pool2d(features, kernel_size=(sh, sw), stride=1)  # every window's mean
        rows = window_starts(height, sh).to(features.device)
        cols = window_starts(width, sw).to(features.device)
        picked = means.index_select(2, rows).index_select(3, cols)  # (B, D, |I|, |J|)
        seeds.append(picked.flatten(2).transpose(1, 2))
    return torch.cat(seeds, dim=1)


def spherical_kmeans(
    features: torch.Tensor, seeds: torch.Tensor, valid: torch.Tensor, iterations: int = 10
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K-means under cosine similarity, from ``seeds``, over the ``valid`` cells only.

    Args:
        features: ``(B, N, D)`` cell features (normalised here).
        seeds: ``(B, K, D)`` initial centroids.
        valid: ``(B, N)`` bool, the cells to cluster (others get no cluster).
        iterations: assignment / update rounds.
    Returns:
        ``assignment`` ``(B, N)`` long (cluster index; -1 for invalid cells), ``centroids``
        ``(B, K, D)`` normalised (a cluster that loses all members keeps its last centroid) and
        ``counts`` ``(B, K)`` cells per cluster.
    """
    x = F.normalize(features.float(), dim=-1)
    centroids = F.normalize(seeds.float(), dim=-1)
    weight = valid.float().unsqueeze(-1)  # (B, N, 1)
    for _ in range(max(1, iterations)):
        assignment = torch.einsum("bnd,bkd->bnk", x, centroids).argmax(dim=-1)
        one_hot = F.one_hot(assignment, centroids.shape[1]).float() * weight  # (B, N, K)
        sums = torch.einsum("bnk,bnd->bkd", one_hot, x)
        counts = one_hot.sum(dim=1)
        updated = F.normalize(sums, dim=-1)
        centroids = torch.where(counts.unsqueeze(-1) > 0, updated, centroids)
    assignment = torch.einsum("bnd,bkd->bnk", x, centroids).argmax(dim=-1)
    counts = (F.one_hot(assignment, centroids.shape[1]).float() * weight).sum(dim=1)
    assignment = torch.where(valid, assignment, torch.full_like(assignment, -1))
    return assignment, centroids, counts


def fuse_clusters(centroids: torch.Tensor, counts: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask fusion: clusters whose centroids have cosine similarity above ``threshold`` are
    merged, transitively (connected components of the similarity graph).

    Args:
        centroids: ``(B, K, D)`` normalised; counts: ``(B, K)``; empty clusters are never merged.
    Returns:
        ``(B, K)`` long: each cluster's component id, the smallest cluster index in its component
        (``K`` for empty clusters).
    """
    batch, k, _ = centroids.shape
    occupied = counts > 0
    similar = torch.einsum("bkd,bjd->bkj", centroids, centroids) > threshold
    eye = torch.eye(k, dtype=torch.bool, device=centroids.device)
    reach = (similar | eye) & occupied.unsqueeze(1) & occupied.unsqueeze(2)
    for _ in range(max(1, math.ceil(math.log2(max(k, 2))))):  # transitive closure by squaring
        reach = (reach.float() @ reach.float()) > 0
    index = torch.arange(k, device=centroids.device).expand(batch, k, k)
    component = torch.where(reach, index, torch.full_like(index, k)).min(dim=-1).values
    return torch.where(occupied, component, torch.full_like(component, k))
