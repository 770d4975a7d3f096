"""Region views (masked image, masked crop, crop with context, mask-pooled dense) and the
zero-shot metrics of region embeddings, against hand computations on crafted inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.clip.region_views import (
    REGION_VIEWS,
    box_window,
    cell_fractions,
    mask_box,
    mask_pooled_embeddings,
    masked_image,
    region_views,
)
from zsmask.modeling.clip.toy_clip import embedding_metrics
from zsmask.data.toy_world import TOY_CLASS_NAMES, TOY_UNSEEN

FILL = torch.tensor([1.0, 2.0, 3.0])


def crafted_scene(size: int = 16):
    """A (3, size, size) image whose every value is distinct: channel * 1000 + y * size + x."""
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(size), torch.arange(size), indexing="ij")
    return (c * 1000 + y * size + x).float()


def rectangle(size, y0, x0, y1, x1):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_masked_image_fills_every_pixel_outside_the_region():
    image, mask = crafted_scene(), rectangle(16, 5, 4, 8, 9)
    out = masked_image(image, mask, FILL)
    for c in range(3):
        for y in range(16):
            for x in range(16):
                inside = 5 <= y < 8 and 4 <= x < 9
                assert out[c, y, x] == (c * 1000 + y * 16 + x if inside else FILL[c])


def test_crops_are_the_square_box_window_at_native_size():
    image, mask = crafted_scene(), rectangle(16, 5, 4, 8, 9)  # box 3 x 5 px
    assert mask_box(mask) == (5, 4, 8, 9)
    # side max(5, min_side 8) = 8 around the centre (6.5, 6.5): rows and columns 2..9
    assert box_window(mask, 1.0, 8) == (2, 2, 10, 10)
    views = region_views(image, [mask], FILL, out_size=8, crop_expand=1.0, context_expand=1.5)
    assert set(views) == set(REGION_VIEWS) - {"dense_pooled"}
    window = image[:, 2:10, 2:10]
    assert torch.equal(views["context_crop"][0], window)
    expected = window.clone()
    for y in range(8):
        for x in range(8):
            if not (5 <= y + 2 < 8 and 4 <= x + 2 < 9):
                expected[:, y, x] = FILL
    assert torch.equal(views["masked_crop"][0], expected)
    assert torch.equal(views["masked_image"][0], masked_image(image, mask, FILL))


def test_box_window_is_shifted_inside_the_image_and_expanded():
    corner = rectangle(16, 0, 14, 3, 16)  # box rows 0..2, columns 14..15
    assert box_window(corner, 1.0, 8) == (0, 8, 8, 16)
    wide = rectangle(16, 6, 2, 8, 12)  # box 2 x 10: side 10, expanded 1.5x -> 15
    assert box_window(wide, 1.0, 0) == (2, 2, 12, 12)
    assert box_window(wide, 1.5, 0) == (0, 0, 15, 15)  # centre (7, 7): start -0.5 -> 0
    assert box_window(rectangle(16, 0, 0, 16, 12), 1.5, 0) == (0, 0, 16, 16)  # cut to the image


def test_a_window_larger_than_clip_input_is_shrunk_with_antialiasing():
    image, mask = crafted_scene(), rectangle(16, 0, 0, 16, 12)
    views = region_views(image, [mask], FILL, out_size=8, context_expand=1.0)
    window = image[:, 0:16, 0:16]
    expected = F.interpolate(window[None], size=(8, 8), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.allclose(views["context_crop"][0], expected)
    constant = torch.full((3, 16, 16), 7.0)
    assert torch.allclose(region_views(constant, [mask], FILL, 8)["context_crop"], torch.full((1, 3, 8, 8), 7.0))


def test_views_reject_empty_masks_and_mismatched_shapes():
    image = crafted_scene()
    with pytest.raises(ValueError, match="empty"):
        masked_image(image, torch.zeros(16, 16, dtype=torch.bool), FILL)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        masked_image(image, torch.ones(8, 8, dtype=torch.bool), FILL)
    assert region_views(image, [], FILL, 8)["masked_crop"].shape == (0, 3, 8, 8)
    assert region_views(image, [], FILL, 8)["masked_image"].shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="dense_pooled"):
        region_views(image, [rectangle(16, 0, 0, 4, 4)], FILL, 8, views=["dense_pooled"])


def test_region_views_makes_only_the_views_asked_for():
    image, mask = crafted_scene(), rectangle(16, 5, 4, 8, 9)
    some = region_views(image, [mask], FILL, out_size=8, views=["masked_crop"])
    assert list(some) == ["masked_crop"]
    assert torch.equal(some["masked_crop"], region_views(image, [mask], FILL, out_size=8)["masked_crop"])


def test_mask_pooled_embeddings_weight_cells_by_covered_fraction():
    dense = torch.tensor([[[1.0, 0.0], [5.0, 5.0]], [[0.0, 2.0], [5.0, 5.0]]])  # (D=2, 2, 2)
    mask = rectangle(16, 0, 0, 8, 12)  # cell (0, 0) fully, cell (0, 1) half, bottom cells not
    assert torch.allclose(cell_fractions(mask[None], (2, 2), 8)[0], torch.tensor([[1.0, 0.5], [0.0, 0.0]]))
    pooled = mask_pooled_embeddings(dense, mask[None], 8)
    by_hand = torch.tensor([1.0 * 1 + 0.5 * 0, 1.0 * 0 + 0.5 * 2])  # (1, 1) before normalising
    assert torch.allclose(pooled[0], by_hand / by_hand.norm())
    assert mask_pooled_embeddings(dense, mask[None][:0], 8).shape == (0, 2)


def test_embedding_metrics_on_crafted_embeddings():
    text = torch.eye(30)  # class c's text is the unit vector e_c
    unseen = [TOY_CLASS_NAMES.index(n) for n in TOY_UNSEEN]
    seen = [c for c in range(30) if c not in unseen]
    labels = np.array([seen[0], seen[0], seen[1], unseen[0], unseen[1]])
    a = 0.6
    embeddings = torch.stack([
        text[seen[0]],                                                 # right
        text[seen[1]],                                                 # wrong (a seen class)
        text[seen[1]],                                                 # right
        a * text[unseen[0]] + 0.8 * text[seen[2]],                     # wrong over 30, right among unseen
        text[unseen[1]],                                               # right
    ])
    m = embedding_metrics(embeddings, labels, text)
    assert m["top1"] == pytest.approx(100 * 3 / 5)
    assert m["top1_seen"] == pytest.approx(100 * 2 / 3) and m["top1_unseen"] == pytest.approx(50.0)
    assert m["top1_unseen_among_unseen"] == pytest.approx(100.0)
    assert m["matched_cosine"] == pytest.approx((1 + 0 + 1 + a + 1) / 5)
    gram = embeddings @ embeddings.T
    same = [(0, 1), (1, 0)]  # the only same-class pairs (i != j)
    different = [(i, j) for i in range(5) for j in range(5) if labels[i] != labels[j]]
    by_hand = np.mean([gram[i, j] for i, j in same]) - np.mean([gram[i, j] for i, j in different])
    assert m["same_minus_different"] == pytest.approx(by_hand)
    assert m["count"] == 5
