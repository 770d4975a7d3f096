"""Spectral eigensegments of an image (SAZS Sec. 3.4, Eqs. 4-6; after Melas-Kyriazi et al. 2022).

At a working resolution of N = h * w pixels:

- Z_sem(i, j) = f_i . f_j (Eq. 4) from L2-normalised frozen patch features resized to the
  grid; negative affinities are set to 0 (as Deep Spectral Methods does), so the graph
  weights stay non-negative;
- Z_shape(i, j) = 1 - ||X_i - X_j||_2 for the k nearest neighbours j of i in
  X = (cos h, sin h, s, v, x, y) (Eq. 5; HSV in [0, 1], x and y scaled to [0, 1]),
  clipped at 0 and symmetrised;
- Z = Z_sem + lambda * Z_shape (Eq. 6; assembled, with the two terms balanced, by
  :class:`~.eigensegments.SpectralEigensegments`), a sparse graph when Z_sem is absent.

The eigenvectors of the graph Laplacian L = D - Z with the K smallest non-zero eigenvalues of
L y = lambda D y (the first, constant one is skipped) are computed by scipy's eigensolvers
(:func:`laplacian_eigenvectors`).
"""
from typing import Optional

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

__all__ = ["rgb_to_hsv", "shape_affinity", "semantic_affinity", "laplacian_eigenvectors"]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``(3, H, W)`` in [0, 1] -> HSV ``(3, H, W)``, each channel in [0, 1]."""
    r, g, b = rgb.unbind(0)
    value, _ = rgb.max(0)
    minimum, _ = rgb.min(0)
    chroma = value - minimum
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack((hue, saturation, value))


def shape_affinity(image: torch.Tensor, size: tuple, num_neighbors: int = 10) -> scipy.sparse.csr_matrix:
    """Eq. 5 on ``image`` (3, H, W) RGB 0-255 resized to ``size`` (h, w): sparse (N, N), symmetric."""
    from scipy.spatial import cKDTree

    small = F.interpolate(image[None].float() / 255.0, size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)
    hue, saturation, value = rgb_to_hsv(small)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size[0]), torch.linspace(0, 1, size[1]), indexing="ij")
    angle = 2 * np.pi * hue
    points = torch.stack((angle.cos(), angle.sin(), saturation, value, xs, ys), dim=-1).reshape(-1, 6).double().numpy()
    num_neighbors = min(num_neighbors, points.shape[0] - 1)
    distances, neighbors = cKDTree(points).query(points, k=num_neighbors + 1)  # the first is the point itself
    rows = np.repeat(np.arange(points.shape[0]), num_neighbors)
    weights = np.clip(1.0 - distances[:, 1:].ravel(), 0.0, None)
    graph = scipy.sparse.csr_matrix((weights, (rows, neighbors[:, 1:].ravel())), shape=(points.shape[0],) * 2)
    return graph.maximum(graph.T).tocsr()


def semantic_affinity(features: torch.Tensor, size: tuple) -> np.ndarray:
    """Eq. 4 on patch features (C, h', w') resized to ``size``: dense float32 (N, N), negatives set to 0."""
    grid = F.interpolate(features[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    flat = F.normalize(grid.flatten(1).T, dim=-1)
    return (flat @ flat.T).clamp_(min=0).numpy()


def laplacian_eigenvectors(affinity, num_vectors: int = 5) -> np.ndarray:
    """(N, K): the eigenvectors of L y = lambda D y with the K smallest eigenvalues after the
    trivial (constant) one, for a symmetric non-negative affinity (dense array or scipy sparse).

    Sparse graphs: shift-invert Lanczos just below 0. Dense ones: the K + 1 largest eigenvectors
    u of D^-1/2 Z D^-1/2 (eigenvalue 1 - lambda), y = D^-1/2 u; Lanczos without a factorisation
    above 1,000 nodes, LAPACK below. The start vector is fixed: the same image, the same vectors.
    """
    num_nodes = affinity.shape[0]
    if not 1 <= num_vectors < num_nodes - 1:
        raise ValueError(f"need 1 <= K < N - 1 eigenvectors, got K={num_vectors} for N={num_nodes} pixels")
    start = np.random.default_rng(0).standard_normal(num_nodes)
    if scipy.sparse.issparse(affinity):
        degree = np.asarray(affinity.sum(1)).ravel() + 1e-8
        laplacian = scipy.sparse.diags(degree) - affinity
        values, vectors = scipy.sparse.linalg.eigsh(laplacian.tocsc(), k=num_vectors + 1, M=scipy.sparse.diags(degree).tocsc(),
                                                    sigma=-1e-3, which="LM", v0=start)
        order = np.argsort(values)
    else:
        affinity = np.asarray(affinity)
        scale = (1.0 / np.sqrt(affinity.sum(1, dtype=np.float64) + 1e-8)).astype(affinity.dtype)
        normalised = scale[:, None] * affinity * scale[None, :]
        if num_nodes <= 1000:
            values, vectors = scipy.linalg.eigh(normalised, subset_by_index=[num_nodes - num_vectors - 1, num_nodes - 1])
        else:
            values, vectors = scipy.sparse.linalg.eigsh(normalised, k=num_vectors + 1, which="LA", v0=start)
        vectors = scale[:, None].astype(np.float64) * vectors
        order = np.argsort(-values)
    return vectors[:, order[1:num_vectors + 1]]
