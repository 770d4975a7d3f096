"""CLIP K-means pseudo masks (Split Matching Sec. 3.2): seeds, K-means, fusion, the generator."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.pseudo_masks import (
    PseudoMaskGenerator,
    fuse_clusters,
    kmeans_clusters,
    merge_duplicates,
    multiscale_seeds,
    spherical_kmeans,
    window_starts,
)

from conftest import TINY_CLIP_CONFIG, TINY_CLIP_NAME, random_clip_encoder


def test_window_starts_follow_eq1_index_sets():
    assert window_starts(8, 4).tolist() == [0, 2, 4]          # {0, s/2, ..., H - s}
    assert window_starts(7, 4).tolist() == [0, 2, 3]          # the last window ends at the border
    assert window_starts(5, 3).tolist() == [0, 2]             # stride round(1.5) = 2
    assert window_starts(4, 16).tolist() == [0]               # a window larger than the grid is clipped
    assert window_starts(6, 1).tolist() == list(range(6))
    assert window_starts(10, 5).tolist() == [0, 3, 5]         # [2.5] = 3, rounded half up


def test_multiscale_seeds_are_window_means():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 7, 9)
    seeds = multiscale_seeds(features, [2, 4])
    expected = []
    for s in (2, 4):
        for i, j in itertools.product(window_starts(7, s).tolist(), window_starts(9, s).tolist()):
            expected.append(features[:, :, i:i + s, j:j + s].mean(dim=(2, 3)))
    torch.testing.assert_close(seeds, torch.stack(expected, dim=1))
    with pytest.raises(ValueError, match="positive"):
        multiscale_seeds(features, [0])


def _planted(height=16, width=16, dim=32, noise=0.05, seed=0):
    """A feature map with three planted regions (left half, top-right, bottom-right)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(3, dim, generator=g), dim=-1)
    regions = torch.zeros(height, width, dtype=torch.long)
    regions[: height // 2, width // 2:] = 1
    regions[height // 2:, width // 2:] = 2
    features = prototypes[regions].permute(2, 0, 1) + noise * torch.randn(dim, height, width, generator=g)
    return features.unsqueeze(0), regions


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two label maps group the cells identically (up to label names)."""
    pairs = set(zip(a.flatten().tolist(), b.flatten().tolist()))
    return len(pairs) == len(set(a.flatten().tolist())) == len(set(b.flatten().tolist()))


def _brute_force_starts(size: int, s: int):
    """Eq. 1's index set {0, [s/2], 2[s/2], ..., [size - s]} by enumeration."""
    s = min(s, size)
    stride = max(1, int(s / 2 + 0.5))  # [.] rounds halves up
    starts, i = [], 0
    while i + s <= size:
        starts.append(i)
        i += stride
    return starts if starts[-1] == size - s else starts + [size - s]


@pytest.mark.parametrize("height,width,sizes", [(16, 16, [2, 4, 8]), (7, 9, [2, 3, 5]), (5, 12, [4, 16])])
def test_per_scale_seeds_match_a_brute_force_count(height, width, sizes):
    torch.manual_seed(0)
    features = torch.randn(1, 3, height, width)
    per_scale = multiscale_seeds(features, sizes, per_scale=True)
    assert [g.shape[1] for g in per_scale] == [
        len(_brute_force_starts(height, s)) * len(_brute_force_starts(width, s)) for s in sizes]
    for group, s in zip(per_scale, sizes):  # each scale's seeds are its own windows' means, row-major
        sh, sw = min(s, height), min(s, width)
        expected = [features[0, :, i:i + sh, j:j + sw].mean(dim=(1, 2))
                    for i in _brute_force_starts(height, s) for j in _brute_force_starts(width, s)]
        torch.testing.assert_close(group[0], torch.stack(expected))
    torch.testing.assert_close(torch.cat(per_scale, dim=1), multiscale_seeds(features, sizes))


@pytest.mark.parametrize("scales,memberships", [("per_scale", 3), ("joint", 1)])
def test_every_valid_cell_is_in_one_cluster_per_kmeans(scales, memberships):
    features, _ = _planted()
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[0, :4] = False
    members, centroids, counts = kmeans_clusters(features, valid, [2, 4, 8], scales=scales)
    assert members.shape == (1, 15 * 15 + 7 * 7 + 3 * 3, 256) and centroids.shape[:2] == counts.shape
    per_cell = members[0].sum(dim=0).view(16, 16)
    assert (per_cell[4:] == memberships).all() and (per_cell[:4] == 0).all()
    torch.testing.assert_close(members[0].sum(dim=1).float(), counts[0])
    if scales == "per_scale":  # scale s's clusters hold only its own seeds' K-means
        sizes = [15 * 15, 7 * 7, 3 * 3]
        for block in members[0].split(sizes):
            assert (block.sum(dim=0).view(16, 16)[4:] == 1).all()


@pytest.mark.parametrize("scales", ["per_scale", "joint"])
def test_kmeans_and_fusion_recover_planted_regions(scales):
    features, regions = _planted()
    generator = PseudoMaskGenerator(window_sizes=[2, 4, 8], fusion_threshold=0.8, kmeans_scales=scales)
    cells = generator.cluster(features, torch.ones(1, 16, 16, dtype=torch.bool))[0]
    assert cells.shape == (15 * 15 + 7 * 7 + 3 * 3, 16, 16)  # one row per seed of windows 2, 4, 8 on 16 x 16
    found = cells[cells.flatten(1).any(dim=1)]
    assert sorted(found.flatten(1).sum(1).tolist()) == [64, 64, 128]
    for mask in found:  # each fused cluster is one planted region
        assert len(regions[mask].unique()) == 1 and mask.sum() == (regions == regions[mask][0]).sum()
    # only the unannotated cells are clustered
    valid = torch.zeros(1, 16, 16, dtype=torch.bool)
    valid[0, :, 8:] = True
    cells = generator.cluster(features, valid)[0]
    assert not cells[:, :, :8].any()
    found = cells[cells.flatten(1).any(dim=1)]
    assert sorted(found.flatten(1).sum(1).tolist()) == [64, 64]


def test_duplicate_masks_of_one_region_are_merged_transitively():
    masks = torch.zeros(5, 10, 10, dtype=torch.bool)
    masks[0, :, :4] = True          # A: 40 px
    masks[1, :, :5] = True          # A': IoU(A, A') = 40 / 50 = 0.8
    masks[2, :, 2:7] = True         # IoU(A', .) = 30 / 70 = 0.43, IoU(A, .) = 20 / 70 = 0.29
    masks[3, :, 8:] = True          # B: disjoint
    masks[4, :, 1:5] = True         # IoU(A, .) = 30 / 50 = 0.6, IoU(A', .) = 40 / 50 = 0.8
    merged = merge_duplicates(masks, 0.5)
    assert merged.shape[0] == 3
    assert torch.equal(merged[0], masks[0] | masks[1] | masks[4])  # the group in its first member's place
    assert torch.equal(merged[1], masks[2]) and torch.equal(merged[2], masks[3])
    merged = merge_duplicates(masks, 0.4)  # now the third mask joins through A' (0.43)
    assert merged.shape[0] == 2 and torch.equal(merged[0], masks[[0, 1, 2, 4]].any(dim=0))
    assert torch.equal(merge_duplicates(masks, 1.0), masks)


def test_spherical_kmeans_ignores_invalid_cells_and_counts_members():
    x = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05]]])
    valid = torch.tensor([[True, True, True, False]])
    assignment, centroids, counts = spherical_kmeans(x, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), valid, 5)
    assert assignment.tolist() == [[0, 0, 1, -1]] and counts.tolist() == [[2.0, 1.0]]
    torch.testing.assert_close(centroids[0, 0], F.normalize(F.normalize(x[0, :2], dim=-1).sum(0), dim=0))


def test_fusion_merges_near_duplicates_transitively_and_keeps_empty_clusters_apart():
    a = torch.tensor([1.0, 0.0, 0.0])
    b = F.normalize(torch.tensor([1.0, 0.45, 0.0]), dim=0)   # cos(a, b) ~ 0.91
    c = F.normalize(torch.tensor([1.0, 0.95, 0.0]), dim=0)   # cos(b, c) ~ 0.95, cos(a, c) ~ 0.72
    d = torch.tensor([0.0, 0.0, 1.0])
    centroids = torch.stack([a, b, c, d, a]).unsqueeze(0)
    counts = torch.tensor([[3.0, 2.0, 4.0, 1.0, 0.0]])  # the last one is empty
    assert fuse_clusters(centroids, counts, 0.9).tolist() == [[0, 0, 0, 3, 5]]
    assert fuse_clusters(centroids, counts, 0.99).tolist() == [[0, 1, 2, 3, 5]]


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip_encoder(TINY_CLIP_NAME, TINY_CLIP_CONFIG)


@pytest.mark.parametrize("region_embedding,scales", [("cls", "per_scale"), ("dense", "per_scale"), ("cls", "joint"),
                                                     ("cls_attention", "per_scale"), ("region_tokens", "per_scale")])
def test_generator_masks_stay_in_unannotated_pixels(tiny_clip, region_embedding, scales):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 70, 90) * 255
    unannotated = torch.zeros(2, 70, 90, dtype=torch.bool)
    unannotated[0, 10:60, 5:80] = True
    unannotated[1, :, 45:] = True
    unannotated[1, 30:33, :] = True  # a thin strip: too small to make its own cells
    generator = PseudoMaskGenerator(window_sizes=[1, 2], fusion_threshold=0.95, min_area=0.01, max_masks=5,
                                    region_embedding=region_embedding, kmeans_scales=scales,
                                    region_attention_layers=1)
    outputs = generator(tiny_clip, images, unannotated)
    assert len(outputs) == 2
    for out, region in zip(outputs, unannotated):
        u = out.masks.shape[0]
        assert 1 <= u <= 5 and out.masks.dtype == torch.bool and out.masks.shape[1:] == (70, 90)
        assert not (out.masks & ~region).any()  # never on annotated pixels
        area = out.masks.flatten(1).sum(1)
        assert (area >= 0.01 * 70 * 90).all() and (area[:-1] >= area[1:]).all()
        if scales == "joint":  # one partition of the cells; per scale, masks of two scales may overlap
            assert (out.masks.sum(0) <= 1).all()
        overlap = (out.masks[:, None] & out.masks[None]).flatten(2).sum(-1).float()
        union = (out.masks[:, None] | out.masks[None]).flatten(2).sum(-1).float()
        assert ((overlap / union).fill_diagonal_(0) <= 0.5).all()  # duplicates (IoU > 0.5) were merged
        assert out.embeddings.shape == (u, tiny_clip.embed_dim)
        torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(u))
    single = generator(tiny_clip, images[1:], unannotated[1:])[0]  # batching changes nothing
    assert torch.equal(single.masks, outputs[1].masks)
    torch.testing.assert_close(single.embeddings, outputs[1].embeddings, atol=1e-5, rtol=0)


def test_cls_region_embedding_is_clip_of_the_masked_image(tiny_clip):
    torch.manual_seed(2)
    images = torch.rand(1, 3, 64, 64) * 255
    unannotated = torch.zeros(1, 64, 64, dtype=torch.bool)
    unannotated[0, :, :32] = True
    out = PseudoMaskGenerator(window_sizes=[4], fusion_threshold=0.0, min_area=0.0)(tiny_clip, images, unannotated)[0]
    assert torch.equal(out.masks, unannotated)  # threshold 0 fuses everything into one mask
    masked = torch.where(unannotated[:, None], images, tiny_clip.pixel_mean.view(1, 3, 1, 1))
    torch.testing.assert_close(out.embeddings, tiny_clip.encode_image_dense(masked)["cls_embedding"], atol=1e-5, rtol=0)


def test_no_unannotated_pixels_gives_no_masks(tiny_clip):
    images = torch.rand(1, 3, 32, 32) * 255
    out = PseudoMaskGenerator()(tiny_clip, images, torch.zeros(1, 32, 32, dtype=torch.bool))[0]
    assert out.masks.shape == (0, 32, 32) and out.embeddings.shape == (0, tiny_clip.embed_dim)
    with pytest.raises(ValueError, match="unannotated"):
        PseudoMaskGenerator()(tiny_clip, images, torch.zeros(1, 16, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="region_embedding"):
        PseudoMaskGenerator(region_embedding="mlp")
