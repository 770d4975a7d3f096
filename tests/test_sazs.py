"""SAZS (Sec. 3.4) step 1: HSV conversion, the colour / position and semantic affinities and the
Laplacian eigenvectors recovering regions planted in synthetic images and features."""
import colorsys

import numpy as np
import pytest
import torch

from zsmask.modeling.inference.spectral import laplacian_eigenvectors, rgb_to_hsv, semantic_affinity, shape_affinity


def _agreement(vector: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels where an eigenvector split at its mean matches the planted region
    (either side; the vector is D-orthogonal to the constant one, not zero-mean)."""
    segment = (vector > vector.mean()).reshape(truth.shape)
    return max((segment == truth).mean(), (segment != truth).mean())


def test_rgb_to_hsv_matches_colorsys():
    torch.manual_seed(0)
    rgb = torch.rand(3, 6, 7)
    rgb[:, 0, 0] = 0.5  # grey: hue and saturation 0
    expected = np.array([[colorsys.rgb_to_hsv(*rgb[:, i, j].tolist()) for j in range(7)] for i in range(6)])
    np.testing.assert_allclose(rgb_to_hsv(rgb).permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_shape_affinity_eigenvector_recovers_a_planted_square():
    torch.manual_seed(0)
    image = torch.tensor([200.0, 40.0, 40.0])[:, None, None].repeat(1, 64, 64)
    image[:, 16:40, 20:50] = torch.tensor([30.0, 60.0, 200.0])[:, None, None]
    image = (image + 5 * torch.randn_like(image)).clamp(0, 255)
    graph = shape_affinity(image, (32, 32), num_neighbors=10)
    assert graph.shape == (1024, 1024) and (graph != graph.T).nnz == 0 and graph.min() >= 0
    truth = np.zeros((32, 32), dtype=bool)
    truth[8:20, 10:25] = True
    vectors = laplacian_eigenvectors(graph, 2)
    assert vectors.shape == (1024, 2) and _agreement(vectors[:, 0], truth) > 0.98


def test_semantic_affinity_eigenvector_recovers_planted_features():
    generator = torch.Generator().manual_seed(0)
    background, thing = torch.randn(2, 16, 1, 1, generator=generator)
    features = background + 0.5 * torch.randn(16, 8, 8, generator=generator)
    features[:, 2:5, 3:7] += thing - background  # one object, its own direction
    affinity = semantic_affinity(features, (8, 8))
    assert affinity.shape == (64, 64) and (affinity >= 0).all() and np.allclose(affinity, affinity.T)
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:5, 3:7] = True
    assert _agreement(laplacian_eigenvectors(affinity, 1)[:, 0], truth) == 1.0


def test_eigenvector_count_is_checked():
    with pytest.raises(ValueError, match="eigenvectors"):
        laplacian_eigenvectors(np.eye(4), 3)
