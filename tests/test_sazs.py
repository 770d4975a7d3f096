"""SAZS: HSV conversion, the colour / position and semantic affinities (Eqs. 4-6), Laplacian
eigenvectors and eigensegments recovering regions planted in synthetic images, the semantic
feature sources, the fusion (Eq. 7) as a post-processor, boundary-aware training (Sec. 3.3) and a
short toy-world run."""
import colorsys
import logging

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from zsmask.modeling.post_processing import (
    EigensegmentFusion,
    SpectralEigensegments,
    ViTKeyFeatures,
    fuse_segments,
    kmeans,
)
from zsmask.modeling.post_processing.spectral import laplacian_eigenvectors, rgb_to_hsv, semantic_affinity, shape_affinity


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


def test_dense_eigenvectors_agree_between_lapack_and_lanczos():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 1, 1, generator=generator) + 0.3 * torch.randn(8, 33, 33, generator=generator)
    features[:, 5:20, 8:25] += 2 * torch.randn(8, 1, 1, generator=generator)
    affinity = semantic_affinity(features, (33, 33))  # N = 1089: Lanczos
    lanczos = laplacian_eigenvectors(affinity, 2)
    degree = affinity.sum(1)
    import scipy.linalg
    _, exact = scipy.linalg.eigh(np.diag(degree) - affinity, np.diag(degree), subset_by_index=[1, 2])
    for k in range(2):  # the same vectors up to sign and scale
        cosine = abs(lanczos[:, k] @ exact[:, k]) / np.linalg.norm(lanczos[:, k]) / np.linalg.norm(exact[:, k])
        assert cosine > 0.999


# ------------------------------------------------------------------ eigensegments and fusion
def _planted_scene(size=96, noise=8.0, seed=0):
    """An RGB image (3, size, size) 0-255 of three coloured rectangles on a background, with
    Gaussian noise, and its label map (size, size): 0 background, 1-3 the rectangles."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[10:50, 12:60] = 1
    labels[55:90, 40:85] = 2
    labels[20:40, 70:90] = 3
    colours = torch.tensor([[60.0, 160, 60], [200, 40, 40], [40, 60, 200], [230, 200, 40]])
    image = colours[labels].permute(2, 0, 1) + noise * torch.randn(3, size, size, generator=generator)
    return image.clamp(0, 255), labels


def _best_iou(segments: torch.Tensor, region: torch.Tensor) -> float:
    return max(float((segments == k)[region].sum()) / float(((segments == k) | region).sum())
               for k in segments.unique())


def test_eigensegments_recover_planted_regions():
    image, labels = _planted_scene()
    segments = SpectralEigensegments(None, resolution=48, num_eigenvectors=5)(image, (96, 96))
    assert segments.shape == (96, 96) and segments.dtype == torch.int64
    for region in (1, 2, 3):  # every object is one segment, up to the 2x upsampling of the grid
        assert _best_iou(segments, labels == region) > 0.94
    # segments do not straddle regions (the background may split): giving every segment its
    # majority region mislabels only a thin band along the borders
    purity = sum(int(torch.bincount(labels[segments == k]).max()) for k in segments.unique()) / labels.numel()
    assert purity > 0.98
    again = SpectralEigensegments(None, resolution=48, num_eigenvectors=5)(image, (96, 96))
    assert torch.equal(segments, again)  # a fixed start vector and k-means seed


def test_eigensegments_use_semantic_features_where_colour_cannot_tell():
    """Two halves of one colour that differ only in their (planted) features: Z_shape alone
    cannot split them, Z_sem + Z_shape does."""
    generator = torch.Generator().manual_seed(0)
    image = torch.full((3, 64, 64), 128.0) + 4 * torch.randn(3, 64, 64, generator=generator)
    left, right = torch.randn(2, 16, 1, 1, generator=generator)
    features = torch.cat((left.expand(16, 16, 8), right.expand(16, 16, 8)), dim=2)  # (C, h, w), halves
    features = features + 0.2 * torch.randn(16, 16, 16, generator=generator)
    truth = torch.zeros(64, 64, dtype=torch.bool)
    truth[:, 32:] = True
    fused = SpectralEigensegments(lambda image: features, resolution=32, num_eigenvectors=1,
                                  connected_components=False)(image, (64, 64))
    assert max(_best_iou(fused, truth), _best_iou(fused, ~truth)) > 0.95
    with pytest.raises(ValueError, match="affinity weights"):
        SpectralEigensegments(None, shape_weight=0.0)


def test_kmeans_separates_clusters_deterministically():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([centre + 0.05 * torch.randn(50, 2, generator=generator)
                        for centre in torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])])
    centres = kmeans(points, 3)
    assert torch.equal(centres, kmeans(points, 3))
    assert sorted(torch.cdist(points, centres).argmin(1).bincount().tolist()) == [50, 50, 50]


def _boundary_iou(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int, width: int = 2) -> float:
    """Mean over classes of the IoU of the pixels within ``width`` of each mask's contour (Cheng et al. 2021)."""
    ious = []
    for c in range(num_classes):
        bands = []
        for mask in ((prediction == c).numpy(), (truth == c).numpy()):
            bands.append(mask & ~scipy.ndimage.binary_erosion(mask, iterations=width, border_value=1))
        union = (bands[0] | bands[1]).sum()
        if union:
            ious.append((bands[0] & bands[1]).sum() / union)
    return float(np.mean(ious))


def _wobbly_prediction(labels: torch.Tensor, amplitude: int = 4, seed: int = 1) -> torch.Tensor:
    """``labels`` resampled through a smooth random displacement of up to ``amplitude`` pixels:
    right inside the regions, noisy along every border."""
    generator = torch.Generator().manual_seed(seed)
    height, width = labels.shape
    coarse = torch.randint(-amplitude, amplitude + 1, (2, 1, 12, 12), generator=generator).float()
    shift = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[:, 0].round().long()
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return labels[(ys + shift[0]).clamp(0, height - 1), (xs + shift[1]).clamp(0, width - 1)]


def test_fusion_raises_boundary_iou_and_leaves_a_perfect_prediction_unchanged():
    image, labels = _planted_scene()
    segments = SpectralEigensegments(None, resolution=96, num_eigenvectors=5)(image, (96, 96))
    noisy = _wobbly_prediction(labels)
    scores = 0.6 * F.one_hot(noisy, 4).permute(2, 0, 1).float() + 0.1 * torch.rand(4, 96, 96)
    fused = fuse_segments(scores, segments, min_coverage=0.8)
    before, after = _boundary_iou(noisy, labels, 4), _boundary_iou(fused.argmax(0), labels, 4)
    assert before < 0.3 and after > before + 0.3, (before, after)
    assert (fused.argmax(0) == labels).float().mean() > (noisy == labels).float().mean()
    # the scores are only permuted per pixel: each pixel keeps its values
    torch.testing.assert_close(fused.sort(0).values, scores.sort(0).values)
    perfect = F.one_hot(labels, 4).permute(2, 0, 1).float() * 0.9 + 0.05
    assert torch.equal(fuse_segments(perfect, segments, min_coverage=0.8), perfect)


def test_fusion_keeps_segments_that_span_classes_unless_told_otherwise():
    scores = F.one_hot(torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]]), 2).permute(2, 0, 1).float()
    segments = torch.zeros(2, 4, dtype=torch.long)  # one segment over both classes (5 : 3 pixels)
    assert torch.equal(fuse_segments(scores, segments, min_coverage=0.8), scores)
    paper = fuse_segments(scores, segments, min_coverage=0.0)  # Eq. 7 as written: max IoU wins
    assert torch.equal(paper.argmax(0), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in size"):
        fuse_segments(scores, torch.zeros(3, 4, dtype=torch.long))


# ------------------------------------------------------------------ semantic feature sources
def _save_dino_style_vit(path, architecture="vit_tiny_patch16_224"):
    """A random-init timm ViT saved in DINO's checkpoint layout (``teacher`` / ``backbone.``)."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(architecture, pretrained=False, num_classes=0, dynamic_img_size=True)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, path)
    return vit


def test_vit_key_features_load_a_local_checkpoint_and_return_last_block_keys(tmp_path):
    path = str(tmp_path / "dino_tiny.pth")
    reference = _save_dino_style_vit(path).eval()
    features = ViTKeyFeatures("vit_tiny_patch16_224", path, input_size=64)
    image = torch.rand(3, 40, 64) * 255
    keys = features(image)
    assert keys.shape == (192, 2, 4)  # long side 64 -> 4 patches, 40 * 64 / 64 -> 32 -> 2 patches
    x = F.interpolate(image[None], size=(32, 64), mode="bilinear", align_corners=False)
    x = (x - features.pixel_mean) / features.pixel_std
    with torch.no_grad():  # the keys by hand: tokens entering the last block, its norm, the k rows of qkv
        tokens = reference.norm_pre(reference._pos_embed(reference.patch_embed(x)))
        for block in reference.blocks[:-1]:
            tokens = block(tokens)
        last = reference.blocks[-1]
        expected = F.linear(last.norm1(tokens), last.attn.qkv.weight[192:384], last.attn.qkv.bias[192:384])
    torch.testing.assert_close(keys, expected[0, 1:].T.reshape(192, 2, 4))
    with pytest.raises(FileNotFoundError, match="SEMANTIC_FEATURES.WEIGHTS"):
        ViTKeyFeatures("vit_tiny_patch16_224", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not fit"):
        ViTKeyFeatures("vit_small_patch16_224", path)


def _fusion_model(tmp_path, dataset, **overrides):
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model
    from conftest import tiny_model_cfg

    MetadataCatalog.get(dataset).set(stuff_classes=["cat", "dog", "sky"], ignore_label=255)
    options = {"MODEL.ZSMASK.POST_PROCESSORS": ["EigensegmentFusion"], "MODEL.SAZS.SPECTRAL.RESOLUTION": 32,
               "MODEL.SAZS.SEMANTIC_FEATURES.INPUT_SIZE": 64}
    options.update(overrides)
    return build_model(tiny_model_cfg(tmp_path, test_dataset=dataset, **options)).eval()


def test_fusion_post_processor_in_the_model_falls_back_to_clip_features(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="zsmask.modeling.post_processing.semantic_features"):
        model = _fusion_model(tmp_path, "sazs_fallback_test")
    assert "SEMANTIC_FEATURES.WEIGHTS is empty" in caplog.text
    (fusion,) = model.post_processors
    assert isinstance(fusion, EigensegmentFusion)
    assert not any("post_processors" in name for name in model.state_dict())  # no weights in checkpoints
    image, _ = _planted_scene(size=64)
    features = fusion.eigensegments.semantic_features(image)
    assert features.shape == (64, 4, 4)  # the tiny CLIP: width 64, patch 16, input 64
    inputs = [{"image": image.byte(), "height": 64, "width": 64}]
    with torch.no_grad():
        (fused,) = model(inputs)
        model.post_processors = []
        (plain,) = model(inputs)
    segments = fusion.eigensegments(image, (64, 64))
    torch.testing.assert_close(fused["sem_seg"], fuse_segments(plain["sem_seg"], segments, 0.8))


def test_fusion_reads_a_configured_vit(tmp_path):
    path = str(tmp_path / "dino_tiny.pth")
    _save_dino_style_vit(path)
    model = _fusion_model(tmp_path, "sazs_vit_test", **{"MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS": path,
                                                        "MODEL.SAZS.SEMANTIC_FEATURES.VIT": "vit_tiny_patch16_224"})
    (fusion,) = model.post_processors
    assert isinstance(fusion.eigensegments.semantic_features, ViTKeyFeatures)
    with torch.no_grad():
        (result,) = model([{"image": _planted_scene(size=64)[0].byte()}])
    assert result["sem_seg"].shape == (3, 64, 64) and torch.isfinite(result["sem_seg"]).all()
    with pytest.raises(KeyError, match="POST_PROCESSORS"):
        _fusion_model(tmp_path, "sazs_vit_test", **{"MODEL.ZSMASK.POST_PROCESSORS": ["NoSuchFusion"]})


# ------------------------------------------------------------------ boundary-aware training
def test_sobel_edges_follow_class_borders_and_skip_ignore_pixels():
    from zsmask.modeling.auxiliary_heads import sobel_edges

    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[0, :, 6:] = 3            # a vertical border between columns 5 and 6
    labels[0, 8:, :4] = -1          # an unannotated block touching class 0
    edges, valid = sobel_edges(labels)
    assert edges.shape == valid.shape == (1, 12, 12) and edges.dtype == torch.float32
    assert edges[0, :, 5:7].eq(1).all() and edges[0, :, :4].sum() == 0 and edges[0, :, 8:].sum() == 0
    # the ignore block and its 3x3 neighbours are invalid and never edges: no edge to "unknown"
    expected_invalid = torch.zeros(12, 12, dtype=torch.bool)
    expected_invalid[7:, :5] = True
    assert torch.equal(~valid[0], expected_invalid) and edges[0][~valid[0]].sum() == 0
    swapped = torch.where(labels == 3, 0, torch.where(labels == 0, 3, labels))  # label values have no order
    assert torch.equal(sobel_edges(swapped)[0], edges)
    assert sobel_edges(torch.full((1, 5, 5), -1))[1].sum() == 0


def _edge_training_patches(count=48, seed=0):
    from zsmask.modeling.auxiliary_heads import sobel_edges
    from zsmask.modeling.auxiliary_heads.inverse_transform import edge_patches

    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(count, 48, 96, dtype=torch.long)
    for image in labels:
        for k in range(1, 4):
            y, x = torch.randint(0, 36, (1,), generator=generator).item(), torch.randint(0, 80, (1,), generator=generator).item()
            h, w = torch.randint(6, 24, (2,), generator=generator).tolist()
            image[y:y + h, x:x + w] = k
    return edge_patches(sobel_edges(labels)[0], (3, 6), 16)


def test_inverse_transform_network_learns_affine_warps_of_edges(tmp_path):
    from zsmask.modeling.auxiliary_heads import load_inverse_transform, pretrain_inverse_transform, save_inverse_transform
    from zsmask.modeling.auxiliary_heads.inverse_transform import warp_edges

    patches = _edge_training_patches()
    net, report = pretrain_inverse_transform(patches, steps=400, batch_size=64, hidden_dim=256)
    assert report["theta_error"] < 0.75 * report["identity_error"], report
    assert not any(p.requires_grad for p in net.parameters())
    held = patches[patches.flatten(1).amax(1) > 0][:32]
    shifted = warp_edges(held, torch.tensor([[1.0, 0, 0.3], [0, 1, 0.3]]).expand(32, 2, 3))
    with torch.no_grad():  # L_shape's summand: small for matching edges, larger for shifted ones
        assert net.distance_to_identity(held, held).mean() < net.distance_to_identity(held, shifted).mean()
    path = str(tmp_path / "inverse_transform.pth")
    save_inverse_transform(net, path, report)
    loaded = load_inverse_transform(path)
    torch.testing.assert_close(loaded(held, shifted), net(held, shifted))
    with pytest.raises(FileNotFoundError, match="tools/train_inverse_transform.py"):
        load_inverse_transform(str(tmp_path / "missing.pth"))


def _boundary_batch(size=64):
    from detectron2.structures import Instances

    label = torch.full((size, size), 1, dtype=torch.long)
    label[8:40, 16:48] = 0
    label[48:, :16] = 255  # unannotated
    image = torch.tensor([[220.0, 30, 30], [40, 80, 230]])[label.clamp(max=1)].permute(2, 0, 1)
    instances = Instances((size, size))
    instances.gt_classes = torch.tensor([0, 1])
    instances.gt_masks = label[None] == torch.tensor([0, 1])[:, None, None]
    return [{"image": image, "instances": instances, "height": size, "width": size}]


@pytest.mark.parametrize("with_shape", [False, True])
def test_boundary_head_trains_the_pixel_decoder(tmp_path, with_shape):
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model
    from conftest import tiny_model_cfg

    from zsmask.modeling.auxiliary_heads import (
        BoundaryHead,
        pretrain_inverse_transform,
        save_inverse_transform,
        sobel_edges,
        target_label_map,
    )

    MetadataCatalog.get("sazs_boundary_train").set(stuff_classes=["cat", "sky"], ignore_label=255)
    options = {"MODEL.ZSMASK.AUXILIARY_HEADS": ["BoundaryHead"], "MODEL.SAZS.BOUNDARY.BCE_WEIGHT": 2.0}
    if with_shape:
        path = str(tmp_path / "inverse_transform.pth")
        net, report = pretrain_inverse_transform(_edge_training_patches(count=12), steps=5, hidden_dim=64)
        save_inverse_transform(net, path, report)
        options.update({"MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT": 0.5, "MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS": path})
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(tmp_path, train_dataset="sazs_boundary_train", **options)).train()
    (head,) = model.auxiliary_heads
    assert isinstance(head, BoundaryHead)
    losses = model(_boundary_batch())
    expected = {"loss_boundary_bce"} | ({"loss_boundary_shape"} if with_shape else set())
    assert expected <= set(losses) and all(torch.isfinite(losses[k]) and losses[k] > 0 for k in expected)
    sum(losses.values()).backward()
    assert head.predictor.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pixel_decoder.parameters())
    if with_shape:  # the network is frozen: in eval mode, without gradients, outside the optimizer
        assert not head.inverse_transform.training
        assert all(p.grad is None and not p.requires_grad for p in head.inverse_transform.parameters())
    # the weighted BCE is the head's BCE on the valid pixels times BCE_WEIGHT
    with torch.no_grad():
        images = model.preprocess_images(_boundary_batch())
        outputs = model.predict_queries(images)
        targets = model.prepare_targets(_boundary_batch(), images)
        raw = head(outputs, targets, None)
        labels = target_label_map(targets, (64, 64))
        edges, valid = sobel_edges(labels)
        logits = F.interpolate(head.edge_logits(outputs["multi_scale_features"][1]), size=(64, 64), mode="bilinear",
                               align_corners=False)[:, 0]
        torch.testing.assert_close(raw["loss_boundary_bce"],
                                   F.binary_cross_entropy_with_logits(logits[valid], edges[valid]))
        assert (~valid).sum() > 16 * 16  # the ignore block and its rim are skipped


@pytest.mark.parametrize("in_feature,stride", [("multi_scale_1", 16), ("multi_scale_2", 8), ("mask_features", 4)])
def test_boundary_head_output_stride(tmp_path, in_feature, stride):
    """The head predicts edges at its feature's stride; L_bce compares them with edges of the
    full-resolution label, which a stride-16 map cannot place (configs/toy/ablations/sazs_stride4.yaml)."""
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model
    from conftest import tiny_model_cfg

    from zsmask.modeling.auxiliary_heads.boundary import _feature

    MetadataCatalog.get("sazs_stride_train").set(stuff_classes=["cat", "sky"], ignore_label=255)
    cfg = tiny_model_cfg(tmp_path, train_dataset="sazs_stride_train", **{
        "MODEL.ZSMASK.AUXILIARY_HEADS": ["BoundaryHead"], "MODEL.SAZS.BOUNDARY.IN_FEATURE": in_feature})
    model = build_model(cfg).eval()
    with torch.no_grad():
        outputs = model.predict_queries(model.preprocess_images(_boundary_batch()))
        logits = model.auxiliary_heads[0].edge_logits(_feature(outputs, in_feature))
    assert logits.shape == (1, 1, 64 // stride, 64 // stride)


def test_boundary_head_config_errors(tmp_path):
    from zsmask.modeling.auxiliary_heads import BoundaryHead

    with pytest.raises(ValueError, match="IN_FEATURE"):
        BoundaryHead(in_channels=8, in_feature="res3")
    with pytest.raises(ValueError, match="INVERSE_TRANSFORM_WEIGHTS"):
        BoundaryHead(in_channels=8, shape_weight=1.0)


# ------------------------------------------------------------------ toy world
@pytest.mark.slow
def test_train_net_runs_sazs_with_fusion_on_the_toy_world(tmp_path):
    import math

    from conftest import train_on_smoke_world

    from zsmask.modeling.auxiliary_heads import pretrain_inverse_transform, save_inverse_transform

    net, report = pretrain_inverse_transform(_edge_training_patches(count=12), steps=20, hidden_dim=64)
    save_inverse_transform(net, str(tmp_path / "inverse_transform.pth"), report)
    logged = train_on_smoke_world(  # the evaluation at the end runs with the fusion (configs/toy/sazs.yaml)
        tmp_path, "sazs.yaml", "toy_world_sazs_smoke", "SOLVER.MAX_ITER", "6",
        "MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT", "1.0",
        "MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS", str(tmp_path / "inverse_transform.pth"))
    rows = [row for row in logged if "loss_boundary_bce" in row]
    assert rows and all(math.isfinite(row[k]) and row[k] > 0 for row in rows
                        for k in ("loss_boundary_bce", "loss_boundary_shape"))
    with open(tmp_path / "config.yaml") as f:
        assert "EigensegmentFusion" in f.read()
