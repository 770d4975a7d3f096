"""[CLS] copies with a region bias (zsmask/modeling/clip/region_attention.py) on a real, tiny
open_clip ViT: Split Matching's ``cls_attention`` region embedding and its shared parts."""
import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.clip.region_attention import region_attention_bias
from zsmask.modeling.clip.visual_towers import vit_embed
from zsmask.modeling.pseudo_masks import PseudoMaskGenerator

from conftest import random_clip_encoder

THREE_BLOCK_CLIP = "zsmask-test-three-block-vit"
THREE_BLOCK_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip():
    encoder = random_clip_encoder(THREE_BLOCK_CLIP, THREE_BLOCK_CONFIG)
    with torch.no_grad():  # random-init open_clip has zero biases and unit LayerNorms: make every term count
        for name, param in encoder.model.visual.named_parameters():
            if name.endswith("bias") or "ln" in name:
                param.add_(0.1 * torch.randn_like(param))
    return encoder


def _images(batch, height=40, width=48, seed=3):
    torch.manual_seed(seed)
    return torch.rand(batch, 3, height, width) * 255


def _cells_mask(rows, cols, height=40, width=48, stride=8):
    """A (H, W) bool mask made of whole stride x stride cells."""
    cells = torch.zeros(-(-height // stride), -(-width // stride), dtype=torch.bool)
    cells[rows, cols] = True
    return cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:height, :width]


def _by_hand(clip, image, mask, layers):
    """The copy of ``mask`` computed with CLIP's own blocks and an attention mask: before the
    last ``layers`` blocks the plain image stream; in each of them the sequence [copy, plain
    patch tokens] runs through the block with the copy's row allowed only itself and the
    mask's cells; the copy's output row is kept, the patch rows are the plain stream's."""
    visual = clip.model.visual
    assert visual.transformer.batch_first
    blocks = list(visual.transformer.resblocks)
    tokens, grid = vit_embed(visual, clip.normalize_images(image[None]))
    first = len(blocks) - layers
    for block in blocks[:first]:
        tokens = block(tokens)
    cells = mask.reshape(grid[0], 8, grid[1], 8).any(-1).any(1).flatten()
    allowed = torch.cat((torch.tensor([True]), cells))
    attn_mask = torch.zeros(1 + cells.numel(), 1 + cells.numel())
    attn_mask[0, ~allowed] = float("-inf")
    copy = tokens[:, :1]
    for block in blocks[first:]:
        copy = block(torch.cat((copy, tokens[:, 1:]), dim=1), attn_mask=attn_mask)[:, :1]
        tokens = block(tokens)
    return F.normalize(visual.ln_post(copy[0, 0]) @ visual.proj, dim=-1)


@torch.no_grad()
def test_a_copy_attends_to_itself_and_its_mask_only(clip):
    image = _images(1)
    masks = torch.stack([_cells_mask(slice(1, 4), slice(0, 3)), _cells_mask(slice(0, 5), slice(4, 6)),
                         _cells_mask(2, 2)])
    for layers in (1, 2):
        out = clip.encode_image_dense(image, region_layers=layers)
        assert len(out["block_inputs"]) == layers and out["block_inputs"][0].shape == (1, 1 + 5 * 6, 48)
        embeddings = clip.encode_mask_regions(out["block_inputs"], [masks])[0]
        assert embeddings.shape == (3, 24)
        for r in range(3):
            torch.testing.assert_close(embeddings[r], _by_hand(clip, image[0], masks[r], layers), atol=1e-5, rtol=0)
        # the mask matters: different regions, and not the whole image's [CLS]
        assert (embeddings[0] - embeddings[1]).norm() > 1e-2
        assert (embeddings[0] - out["cls_embedding"][0]).norm() > 1e-2
    # the dense features are those of the plain forward
    torch.testing.assert_close(out["patch_embeddings"], clip.encode_image_dense(image)["patch_embeddings"])


@torch.no_grad()
def test_a_full_mask_biased_from_block_0_is_plain_clip_cls(clip):
    images = _images(2, 32, 40)
    out = clip.encode_image_dense(images, region_layers=3)
    full = torch.ones(1, 32, 40, dtype=torch.bool)
    embeddings = clip.encode_mask_regions(out["block_inputs"], [full, full])
    torch.testing.assert_close(torch.cat(embeddings), out["cls_embedding"], atol=1e-5, rtol=0)


@torch.no_grad()
def test_masks_of_one_image_do_not_see_another_image(clip):
    images = _images(2)
    first = torch.stack([_cells_mask(slice(0, 2), slice(0, 6)), _cells_mask(slice(2, 5), slice(1, 3))])
    second = _cells_mask(slice(1, 5), slice(2, 6))[None]
    batched = clip.encode_mask_regions(clip.encode_image_dense(images, region_layers=2)["block_inputs"],
                                       [first, second])
    alone = clip.encode_mask_regions(clip.encode_image_dense(images[:1], region_layers=2)["block_inputs"], [first])
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)
    other = images.clone()
    other[1] = 255 - other[1]  # another second image: the first image's embeddings stay
    changed = clip.encode_mask_regions(clip.encode_image_dense(other, region_layers=2)["block_inputs"],
                                       [first, second])
    torch.testing.assert_close(changed[0], batched[0], atol=1e-5, rtol=0)
    assert (changed[1] - batched[1]).norm() > 1e-2


@torch.no_grad()
def test_an_empty_mask_is_skipped_without_nan(clip):
    images = _images(2)
    block_inputs = clip.encode_image_dense(images, region_layers=2)["block_inputs"]
    region = _cells_mask(slice(1, 3), slice(1, 4))
    empty = torch.zeros_like(region)
    with_empty = clip.encode_mask_regions(block_inputs, [torch.stack([empty, region, empty]), empty[None]])
    assert all(torch.isfinite(e).all() for e in with_empty)
    assert with_empty[0][[0, 2]].abs().sum() == 0 and with_empty[1].abs().sum() == 0
    without = clip.encode_mask_regions(block_inputs, [region[None], torch.zeros(0, 40, 48, dtype=torch.bool)])
    torch.testing.assert_close(with_empty[0][1], without[0][0], atol=1e-6, rtol=0)
    assert without[1].shape == (0, 24)


def test_the_bias_is_the_log_of_each_cells_covered_fraction():
    masks = torch.zeros(1, 2, 12, 12, dtype=torch.bool)
    masks[0, 0, :8, :8] = True  # cell (0, 0) whole
    masks[0, 0, 8:10, :8] = True  # half of cell (1, 0): a border cell
    masks[0, 1, :3, :] = True  # 3 of 8 rows of the top cells; the image is padded to 16 x 16
    bias = region_attention_bias(masks, (2, 2), 8)
    assert bias.shape == (1, 1, 2, 4)
    expected = torch.tensor([[0.0, float("-inf"), torch.tensor(0.25).log(), float("-inf")],
                             [torch.tensor(3 / 8).log(), torch.tensor(12 / 64).log(), float("-inf"), float("-inf")]])
    torch.testing.assert_close(bias[0, 0], expected)


def test_region_attention_needs_a_vit_with_enough_blocks(clip, tmp_path):
    from conftest import tiny_model_cfg

    from zsmask.modeling.pseudo_masks import PSEUDO_LABELER_REGISTRY

    with pytest.raises(ValueError, match=r"4 region-attention blocks.*has 3 \(use 1 to 3\)"):
        clip.encode_image_dense(_images(1), region_layers=4)
    cfg = tiny_model_cfg(tmp_path)  # the 2-block test CLIP
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING = "cls_attention"
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS = 3
    with pytest.raises(ValueError, match="REGION_ATTENTION_LAYERS.*has 2"):
        PSEUDO_LABELER_REGISTRY.get("clip_kmeans")(cfg, embed_dim=32)
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS = 2
    assert PSEUDO_LABELER_REGISTRY.get("clip_kmeans")(cfg, embed_dim=32).generator.region_attention_layers == 2


@torch.no_grad()
def test_generator_cls_attention_embeds_its_pseudo_masks_from_the_dense_forward(clip):
    images = _images(2)
    unannotated = torch.zeros(2, 40, 48, dtype=torch.bool)
    unannotated[0, :, :24] = True
    unannotated[1, 16:, :] = True
    generator = PseudoMaskGenerator(window_sizes=[1, 2], fusion_threshold=0.9, min_area=0.01, max_masks=4,
                                    region_embedding="cls_attention", region_attention_layers=2)
    outputs = generator(clip, images, unannotated)
    block_inputs = clip.encode_image_dense(images, region_layers=2)["block_inputs"]
    expected = clip.encode_mask_regions(block_inputs, [o.masks for o in outputs])
    for out, region, want in zip(outputs, unannotated, expected):
        assert out.masks.shape[0] >= 1 and not (out.masks & ~region).any()
        torch.testing.assert_close(out.embeddings, want)
        torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(out.masks.shape[0]))
    again = generator.region_embeddings(clip, images, [o.masks for o in outputs])
    torch.testing.assert_close(torch.cat(again), torch.cat(expected))
    assert generator.settings[-1] == 2  # the cache identity holds the block count
    assert len(PseudoMaskGenerator(region_embedding="cls").settings) == len(generator.settings) - 1


def _region_tokens_by_hand(clip, image, mask):
    """CLIP on the masked image's tokens that ``mask`` touches ([CLS] first), nothing else in
    the sequence, blocks run plainly."""
    visual = clip.model.visual
    masked = torch.where(mask, image, clip.pixel_mean.view(3, 1, 1))
    tokens, grid = vit_embed(visual, clip.normalize_images(masked[None]))
    padded = F.pad(mask, (0, grid[1] * 8 - mask.shape[1], 0, grid[0] * 8 - mask.shape[0]))
    cells = padded.reshape(grid[0], 8, grid[1], 8).any(-1).any(1).flatten()
    x = torch.cat((tokens[:, :1], tokens[:, 1:][:, cells]), dim=1)
    for block in visual.transformer.resblocks:
        x = block(x)
    return F.normalize(visual.ln_post(x[0, 0]) @ visual.proj, dim=-1)


@torch.no_grad()
def test_region_tokens_are_clip_on_each_regions_own_cells(clip):
    images = _images(2, 37, 45)  # padded to 40 x 48 inside
    masks = torch.zeros(3, 37, 45, dtype=torch.bool)
    masks[0, 3:20, 2:13] = True  # border cells partly covered: their outside pixels are filled
    masks[1, 10:37, 30:45] = True
    masks[2, 0:5, 0:45] = True
    masks[2, 30:33, 5:9] = True  # two parts, one sequence
    empty = torch.zeros(37, 45, dtype=torch.bool)
    embeddings = clip.encode_region_tokens(images, [torch.cat((masks, empty[None])), masks[1:2]])
    assert embeddings[0].shape == (4, 24) and embeddings[1].shape == (1, 24)
    for r in range(3):
        torch.testing.assert_close(embeddings[0][r], _region_tokens_by_hand(clip, images[0], masks[r]),
                                   atol=1e-5, rtol=0)
    assert embeddings[0][3].abs().sum() == 0 and torch.isfinite(embeddings[0]).all()  # the empty mask
    torch.testing.assert_close(embeddings[1][0], _region_tokens_by_hand(clip, images[1], masks[1]), atol=1e-5, rtol=0)
    # packing: a region's embedding is the same with or without the other regions in its sequence
    alone = clip.encode_region_tokens(images[:1], [masks[1:2]])[0]
    torch.testing.assert_close(alone[0], embeddings[0][1], atol=1e-5, rtol=0)
    # a full mask of an image on whole cells is plain CLIP's [CLS]
    whole = _images(1, 32, 40)
    full = clip.encode_region_tokens(whole, [torch.ones(1, 32, 40, dtype=torch.bool)])[0]
    torch.testing.assert_close(full, clip.encode_image_dense(whole)["cls_embedding"], atol=1e-5, rtol=0)


@torch.no_grad()
def test_region_tokens_split_a_long_sequence_without_changing_a_region(clip):
    image = _images(1)
    big = torch.ones(4, 40, 48, dtype=torch.bool)  # 4 x 31 tokens > the image's 31: four sequences
    big[1, :8] = False
    big[2, :, :8] = False
    big[3, 16:] = False
    together = clip.encode_region_tokens(image, [big])[0]
    for r in range(4):
        torch.testing.assert_close(together[r], clip.encode_region_tokens(image, [big[r:r + 1]])[0][0],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(together[r], _region_tokens_by_hand(clip, image[0], big[r]), atol=1e-5, rtol=0)
