"""Eigensegments of an image (SAZS Sec. 3.4): the Laplacian eigenvectors of Z = Z_sem + lambda *
Z_shape (Eq. 6), discretised into segments.

At a working grid whose long side is ``resolution``, :func:`~.spectral.laplacian_eigenvectors`
gives the K = ``num_eigenvectors`` non-trivial eigenvectors. They are discretised as in
spectral clustering (Shi & Malik; Ng, Jordan & Weiss): each eigenvector is standardised, the
pixels' K-dimensional rows are clustered into K + 1 groups by k-means (k-means++ from a fixed
seed, so one image gives one answer) — the K + 1 eigensegments k in {0, ..., K} of Eq. 7.
For the output, the eigenvectors are resized bilinearly to the output size and every pixel
takes its nearest cluster centre, so segment borders are not blocky at the grid's cell size;
with ``connected_components`` each cluster is then split into its 4-connected parts (two
objects of one colour are two segments).
"""
from typing import Callable, Optional, Tuple

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from .spectral import laplacian_eigenvectors, semantic_affinity, shape_affinity

__all__ = ["SpectralEigensegments", "kmeans", "working_size"]


def working_size(image_size: Tuple[int, int], resolution: int) -> Tuple[int, int]:
    """(h, w) with long side ``resolution`` and the image's aspect ratio (never larger than the image)."""
    height, width = image_size
    scale = min(1.0, resolution / max(height, width))
    return max(2, int(round(height * scale))), max(2, int(round(width * scale)))


def kmeans(points: torch.Tensor, num_clusters: int, num_iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Centres (num_clusters, D) of ``points`` (N, D): k-means++ seeding from ``seed``, then Lloyd."""
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(points.shape[0], (1,), generator=generator)]
    for _ in range(1, num_clusters):
        distance = torch.cdist(points, centres).min(dim=1).values.pow(2)
        if float(distance.sum()) <= 0:  # fewer distinct points than clusters
            pick = torch.randint(points.shape[0], (1,), generator=generator)
        else:
            pick = torch.multinomial(distance / distance.sum(), 1, generator=generator)
        centres = torch.cat((centres, points[pick]))
    for _ in range(num_iters):
        assignment = torch.cdist(points, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=num_clusters).to(points.dtype)[:, None]
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.allclose(updated, centres):
            break
        centres = updated
    return centres


class SpectralEigensegments:
    """``(image (3, H, W) RGB 0-255, output_size (H', W')) -> (H', W') int64`` segment ids."""

    def __init__(self, semantic_features: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 resolution: int = 64, num_eigenvectors: int = 5, num_neighbors: int = 10,
                 semantic_weight: float = 1.0, shape_weight: float = 1.0, connected_components: bool = True):
        """
        Args:
            semantic_features: image -> patch features (C, h, w) for Z_sem (see
                :mod:`.semantic_features`); None: Z_shape alone.
            resolution: long side of the working grid.
            num_eigenvectors: K.
            num_neighbors: k of the colour / position kNN graph (Eq. 5).
            semantic_weight, shape_weight: Z = semantic_weight * Z_sem + shape_weight * Z_shape
                (Eq. 6 has 1 and lambda; 0 drops a term, Table 6), Z_shape rescaled to Z_sem's
                total weight when both are used (see :meth:`affinity`).
            connected_components: split every cluster into its connected parts.
        """
        if semantic_features is None or semantic_weight == 0:
            semantic_features, semantic_weight = None, 0.0
        if semantic_weight < 0 or shape_weight < 0 or semantic_weight + shape_weight == 0:
            raise ValueError(f"MODEL.SAZS.SPECTRAL: the affinity weights must be >= 0 and not both 0 (semantic "
                             f"{semantic_weight}, shape {shape_weight}; the semantic one needs features)")
        self.semantic_features = semantic_features
        self.resolution = resolution
        self.num_eigenvectors = num_eigenvectors
        self.num_neighbors = num_neighbors
        self.semantic_weight = semantic_weight
        self.shape_weight = shape_weight
        self.connected_components = connected_components

    def affinity(self, image: torch.Tensor, size: Tuple[int, int]):
        """Z (Eq. 6) over the (h, w) = ``size`` grid: scipy sparse without Z_sem, else dense (N, N)
        float32. With both terms, Z_shape is first rescaled to Z_sem's total weight: the dense
        graph has N weights per pixel, the kNN graph k, so a raw lambda would mean nothing."""
        shape = None
        if self.shape_weight > 0:
            shape = shape_affinity(image.cpu(), size, self.num_neighbors).tocoo()
        if self.semantic_weight == 0:
            return self.shape_weight * shape.tocsr()
        affinity = semantic_affinity(self.semantic_features(image).cpu(), size)
        if shape is not None:  # Z_sem + lambda * balance * Z_shape, in place (no dense copy of Z)
            balance = affinity.sum(dtype=np.float64) / max(float(shape.data.sum()), 1e-12)
            scale = self.shape_weight / self.semantic_weight * balance
            np.add.at(affinity, (shape.row, shape.col), (scale * shape.data).astype(affinity.dtype))
        return affinity

    def eigenvectors(self, image: torch.Tensor) -> torch.Tensor:
        """(K, h, w) float32 eigenvectors on the working grid, each standardised over the pixels."""
        size = working_size(tuple(image.shape[-2:]), self.resolution)
        vectors = laplacian_eigenvectors(self.affinity(image, size), self.num_eigenvectors)  # (N, K)
        vectors = torch.from_numpy(vectors).float().T
        vectors = (vectors - vectors.mean(1, keepdim=True)) / vectors.std(1, keepdim=True).clamp(min=1e-12)
        return vectors.reshape(-1, *size)

    def discretise(self, vectors: torch.Tensor, output_size: Tuple[int, int]) -> torch.Tensor:
        """Eigenvectors (K, h, w) -> (H', W') int64 cluster of every output pixel: k-means into
        K + 1 centres on the grid, then each pixel of the resized vectors takes its nearest centre."""
        centres = kmeans(vectors.flatten(1).T, self.num_eigenvectors + 1)
        resized = F.interpolate(vectors[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]
        return torch.cdist(resized.flatten(1).T, centres).argmin(dim=1).reshape(output_size)

    def __call__(self, image: torch.Tensor, output_size: Tuple[int, int]) -> torch.Tensor:
        clusters = self.discretise(self.eigenvectors(image), output_size)
        if not self.connected_components:
            return clusters
        segments = np.zeros(tuple(output_size), dtype=np.int64)
        offset = 0
        clusters_np = clusters.numpy()
        for cluster in np.unique(clusters_np):
            parts, count = scipy.ndimage.label(clusters_np == cluster)
            segments[parts > 0] = parts[parts > 0] - 1 + offset
            offset += count
        return torch.from_numpy(segments)
