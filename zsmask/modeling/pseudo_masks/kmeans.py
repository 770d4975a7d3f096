"""Multi-scale K-means on dense CLIP features and mask fusion (Split Matching Sec. 3.2, after
CLIP-ZSS), batched over images and vectorised over pixels and clusters.

Shapes: B images, D feature channels, an (h, w) feature grid, N = h * w cells, K seeds.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["window_starts", "multiscale_seeds", "spherical_kmeans", "fuse_clusters", "kmeans_clusters",
           "fused_cell_masks", "merge_duplicates", "KMEANS_SCALES"]

# "per_scale": one K-means per window size s, seeded with that size's seeds (CLIP-ZSS's
# multi-scale K-means, which Eq. 1 seeds); "joint": one K-means from the seeds of all sizes.
KMEANS_SCALES = ("per_scale", "joint")


def window_starts(size: int, window: int) -> torch.Tensor:
    """Start indices ``{0, [s/2], 2[s/2], ..., [size - s]}`` of Eq. 1's index sets I / J for
    window ``s``: stride ``[s / 2]`` rounded half up (at least 1), and the last window always ends
    at the border."""
    window = min(window, size)
    stride = max(1, int(window / 2 + 0.5))  # not round(): Python rounds 2.5 to 2
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return torch.tensor(starts, dtype=torch.long)


def multiscale_seeds(features: torch.Tensor, window_sizes: Sequence[int], per_scale: bool = False):
    """K-means seeds G of Eq. 1: means of ``features`` over ``s x s`` windows with stride
    ``s/2``, for every ``s`` in ``window_sizes`` (in feature cells; clipped to the grid).

    Args:
        features: ``(B, D, h, w)``.
    Returns:
        ``(B, K, D)`` seeds, K = sum over s of |I_s| * |J_s|, ordered by window size, then
        row-major; with ``per_scale`` the list of each size's ``(B, |I_s| * |J_s|, D)`` instead.
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
    return seeds if per_scale else torch.cat(seeds, dim=1)


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


def kmeans_clusters(features: torch.Tensor, valid: torch.Tensor, window_sizes: Sequence[int], iterations: int = 10,
                    scales: str = "per_scale") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-scale K-means over the ``valid`` cells of ``features`` ``(B, D, h, w)``.

    ``scales="per_scale"`` runs one K-means per window size, from that size's Eq. 1 seeds, so
    every valid cell belongs to one cluster *per scale* (clusters of different scales overlap);
    ``"joint"`` runs one K-means from the seeds of all sizes, a partition of the cells.

    Returns:
        ``members`` ``(B, M, N)`` bool cell memberships (N = h * w), ``centroids`` ``(B, M, D)``
        normalised and ``counts`` ``(B, M)``; M = the number of seeds.
    """
    if scales not in KMEANS_SCALES:
        raise ValueError(f"K-means scales must be one of {KMEANS_SCALES}, got {scales!r}")
    cells = features.flatten(2).transpose(1, 2)  # (B, N, D)
    valid = valid.flatten(1)
    seeds = multiscale_seeds(features, window_sizes, per_scale=True)
    groups = seeds if scales == "per_scale" else [torch.cat(seeds, dim=1)]
    members, centroids, counts = [], [], []
    for group in groups:
        assignment, group_centroids, group_counts = spherical_kmeans(cells, group, valid, iterations)
        k = group.shape[1]
        one_hot = F.one_hot(assignment.clamp(min=0), k).bool() & (assignment >= 0).unsqueeze(-1)  # (B, N, k)
        members.append(one_hot.transpose(1, 2))
        centroids.append(group_centroids)
        counts.append(group_counts)
    return torch.cat(members, dim=1), torch.cat(centroids, dim=1), torch.cat(counts, dim=1)


def fused_cell_masks(members: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
    """Union of the members of each fused component: ``members`` ``(B, M, N)`` bool and
    ``component`` ``(B, M)`` (:func:`fuse_clusters`; M = empty) -> ``(B, M, N)`` bool, row c
    the cells of component c (empty unless c is a component's smallest cluster index)."""
    m = members.shape[1]
    belongs = F.one_hot(component.clamp(max=m), m + 1)[..., :m].float()  # (B, M cluster, M component)
    return torch.einsum("bmn,bmc->bcn", members.float(), belongs) > 0


def merge_duplicates(masks: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Merge masks that are duplicates of one region: masks whose IoU exceeds ``iou_threshold``
    are united, transitively. ``masks`` ``(U, H, W)`` bool -> ``(U', H, W)`` bool, U' <= U, each
    group in the position of its first member; a threshold >= 1 merges nothing."""
    if masks.shape[0] < 2 or iou_threshold >= 1.0:
        return masks
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(dim=1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)
    reach = iou > iou_threshold
    reach.fill_diagonal_(True)
    for _ in range(max(1, math.ceil(math.log2(masks.shape[0])))):  # transitive closure by squaring
        reach = (reach.float() @ reach.float()) > 0
    first = torch.where(reach, torch.arange(masks.shape[0], device=masks.device), masks.shape[0]).min(dim=1).values
    groups = torch.unique(first)  # sorted: groups keep the order of their first members
    return torch.stack([masks[first == g].any(dim=0) for g in groups])
