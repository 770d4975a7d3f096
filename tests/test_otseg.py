"""OTSeg / ZegOT parts: multi-prompt text (hand-crafted, learnable context), the relationship
descriptor, MPS (Eqs. 8-10) and ZegOT's layer fusion (Eq. 8), MPSA and its decoder (Eqs. 13-14),
the dense losses (Appendix B), the CLIP backbone's joint-space layer embeddings, the pixel score
head in the meta-architecture and a short toy-world training and evaluation run."""
import math

import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.optimal_transport import fuse_layer_maps, log_sinkhorn, multi_prompt_sinkhorn
from zsmask.modeling.pixel_score import (
    MultiPromptSinkhornAttention,
    MultiPromptSinkhornDecoder,
    RelationshipDescriptor,
    dense_segmentation_losses,
    dense_targets,
)
from zsmask.modeling.pixel_score.losses import dense_cross_entropy, dense_dice_loss, dense_focal_loss


def _cosine_scores(batch=2, classes=3, pixels=40, prompts=4, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel = F.normalize(torch.randn(batch, pixels, dim, generator=generator), dim=-1)
    text = F.normalize(torch.randn(batch, classes, prompts, dim, generator=generator), dim=-1)
    return torch.einsum("bmd,bknd->bkmn", pixel, text)


# ------------------------------------------------------------------ MPS
def test_mps_plans_meet_both_marginals_and_rescale_the_scores():
    scores = _cosine_scores()
    result = multi_prompt_sinkhorn(scores, epsilon=0.05)
    num_pixels, num_prompts = scores.shape[-2:]
    assert (result.plan.sum(-1) - 1 / num_pixels).abs().sum(-1).max() < 1e-4  # mu = 1/M
    assert (result.plan.sum(-2) - 1 / num_prompts).abs().sum(-1).max() < 1e-4  # nu = 1/N
    torch.testing.assert_close(result.refined, num_pixels * num_prompts * result.plan * scores)
    # a uniform plan (huge epsilon) leaves the scores as they are: S* is the sum over prompts
    flat = multi_prompt_sinkhorn(scores, epsilon=1e4)
    torch.testing.assert_close(flat.refined, scores, atol=1e-3, rtol=0)


def test_mps_prompts_take_different_pixels_of_a_crafted_map():
    """Two prompts of one class: the left pixels score high with prompt 0, the right ones with
    prompt 1; after MPS each prompt keeps its half and the other half's scores shrink."""
    scores = torch.full((1, 1, 20, 2), 0.1)
    scores[..., :10, 0] = 0.8
    scores[..., 10:, 1] = 0.8
    refined = multi_prompt_sinkhorn(scores, epsilon=0.05).refined[0, 0]
    assert (refined[:10, 0] > 1.5).all() and (refined[:10, 1] < 0.05).all()
    assert (refined[10:, 1] > 1.5).all() and (refined[10:, 0] < 0.05).all()


@pytest.mark.parametrize("autocast", [False, True])
def test_mps_and_mpsa_stay_finite_at_small_epsilon(autocast):
    scores = (_cosine_scores() * 1e3).clamp(-1e3, 1e3)  # far outside the cosine range
    attention = MultiPromptSinkhornAttention(dim=16, epsilon=0.01)
    queries, memory = torch.randn(2, 3, 4, 16) * 100, torch.randn(2, 40, 16) * 100
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
        result = multi_prompt_sinkhorn(scores, epsilon=0.01)
        out, mask_logits = attention(queries, memory)
    assert result.refined.dtype == torch.float32 and torch.isfinite(result.refined).all()
    assert torch.isfinite(out.float()).all() and torch.isfinite(mask_logits.float()).all()


def test_mps_gradcheck():
    scores = _cosine_scores(batch=1, classes=2, pixels=6, prompts=3).double().requires_grad_()

    def refined_of(s):
        return multi_prompt_sinkhorn(s, epsilon=0.3, max_iter=20, tol=None).refined.double()

    assert torch.autograd.gradcheck(refined_of, (scores,), eps=1e-3, atol=1e-3, rtol=1e-2)


def test_zegot_fusion_of_layer_maps():
    torch.manual_seed(0)
    maps = [torch.randn(2, 3, 5, 4) for _ in range(3)]
    assert fuse_layer_maps(maps[-1:]) is maps[-1]  # one layer: OTSeg
    expected = maps[2] * (torch.sigmoid(maps[0]) * torch.sigmoid(maps[1])) ** 0.5
    torch.testing.assert_close(fuse_layer_maps(maps), expected)
    with pytest.raises(ValueError, match="at least one"):
        fuse_layer_maps([])


# ------------------------------------------------------------------ MPSA
def test_mpsa_shapes_and_prompt_weights():
    torch.manual_seed(0)
    attention = MultiPromptSinkhornAttention(dim=16, epsilon=0.05)
    queries, memory = torch.randn(2, 3, 4, 16), torch.randn(2, 40, 16)
    out, mask_logits = attention(queries, memory)
    assert out.shape == (2, 3, 4, 16) and mask_logits.shape == (2, 3, 40)
    # Eq. 13-14 by hand: per class, one plan between the pixels and its prompts
    q = F.normalize(attention.q_proj(queries), dim=-1)
    k = F.normalize(attention.k_proj(memory), dim=-1)
    scores = torch.einsum("bknc,bmc->bkmn", q, k)
    plan = log_sinkhorn(1 - scores, 0.05).plan
    torch.testing.assert_close(mask_logits, (40 * 4 * plan * scores).sum(-1))
    weights = plan * 4  # each prompt reads the values with weights summing to 1 over the pixels
    torch.testing.assert_close(weights.sum(-2), torch.ones(2, 3, 4), atol=1e-4, rtol=0)
    expected = attention.out_proj(torch.einsum("bkmn,bmc->bknc", weights, attention.v_proj(memory)))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match=r"queries \(B, K, N, C\)"):
        attention(queries[0], memory)


def test_mpsa_decoder_has_three_layers_and_returns_their_masks():
    decoder = MultiPromptSinkhornDecoder(dim=16, num_layers=3, dropout=0.0, epsilon=0.05)
    queries, layer_masks = decoder(torch.randn(2, 3, 4, 16), torch.randn(2, 40, 16))
    assert len(decoder.layers) == 3 and queries.shape == (2, 3, 4, 16)
    assert len(layer_masks) == 3 and all(m.shape == (2, 3, 40) for m in layer_masks)
    assert not torch.allclose(layer_masks[0], layer_masks[-1])
    with pytest.raises(ValueError, match="NUM_LAYERS"):
        MultiPromptSinkhornDecoder(dim=16, num_layers=0)


def test_relationship_descriptor_is_linear_of_product_and_text():
    torch.manual_seed(0)
    descriptor = RelationshipDescriptor(8)
    text, image = torch.randn(3, 2, 8), torch.randn(4, 8)
    out = descriptor(text, image)
    assert out.shape == (4, 3, 2, 8)
    b, k, n = 1, 2, 0
    expected = descriptor.linear(torch.cat((image[b] * text[k, n], text[k, n])))
    torch.testing.assert_close(out[b, k, n], expected)


# ------------------------------------------------------------------ losses
def test_dense_losses_ignore_invalid_pixels_and_reward_the_truth():
    targets = torch.zeros(1, 3, 8, 8)
    targets[0, 0, :4], targets[0, 1, 4:] = 1, 1  # class 2 is absent
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[0, :, :2] = False
    good = (targets * 2 - 1) * 8
    bad = -good
    for loss in (dense_focal_loss, dense_dice_loss, dense_cross_entropy):
        assert loss(good, targets, valid) < 0.05 < loss(bad, targets, valid)
        changed = good.clone()
        changed[..., :2] = torch.randn(1, 3, 8, 2) * 10  # only invalid pixels change
        torch.testing.assert_close(loss(changed, targets, valid), loss(good, targets, valid))
    # Eq. 21 by hand for one class
    logits = torch.randn(1, 3, 8, 8)
    p = logits.sigmoid() * valid
    y = targets * valid
    per_class = 1 - (2 * (p * y).sum((-1, -2)) + 1) / ((y ** 2).sum((-1, -2)) + (p ** 2).sum((-1, -2)) + 1)
    torch.testing.assert_close(dense_dice_loss(logits, targets, valid), per_class[0, :2].mean())
    losses = dense_segmentation_losses(logits[..., ::2, ::2], targets, valid)  # resized to the targets
    assert set(losses) == {"focal", "dice", "ce"} and all(torch.isfinite(v) for v in losses.values())


def test_dense_focal_loss_is_eq20s_mean_or_the_present_pairs_normalisation():
    from zsmask.modeling.criterion import sigmoid_focal_loss

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    targets[0, 1, :2], targets[1, 3] = 1, 1  # 2 present (image, class) pairs of 8
    valid = torch.ones(2, 3, 3, dtype=torch.bool)
    valid[1, 0] = False
    focal = sigmoid_focal_loss(logits, targets, alpha=-1.0, gamma=2.0)  # (2, 4, 3, 3)
    pixels = valid[:, None].float()
    mean = (focal * pixels).sum() / (pixels.sum() * 4)  # Eq. 20: mean over 15 valid pixels x 4 classes
    torch.testing.assert_close(dense_focal_loss(logits, targets, valid), mean)
    per_class = (focal * pixels).sum((-1, -2)) / pixels.sum((-1, -2))  # (2, 4) pixel means
    torch.testing.assert_close(dense_focal_loss(logits, targets, valid, normalization="present_pairs"),
                               per_class.sum() / 2)
    with pytest.raises(ValueError, match="FOCAL_NORMALIZATION"):
        dense_focal_loss(logits, targets, valid, normalization="sum")


def test_dense_targets_take_the_union_per_class_and_skip_pseudo_targets():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0], masks[1, 1], masks[2, 2] = True, True, True
    targets = [{"labels": torch.tensor([1, 1, 0]), "masks": masks, "is_pseudo": torch.tensor([False, False, True])}]
    dense = dense_targets(targets, num_classes=2)
    assert dense.shape == (1, 2, 4, 4)
    assert dense[0, 1].sum() == 8 and dense[0, 1, :2].all() and dense[0, 0].sum() == 0


# ------------------------------------------------------------------ prompts
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from conftest import tiny_model_cfg

    from zsmask.modeling.clip import CLIPTextImageEncoder

    torch.manual_seed(0)
    return CLIPTextImageEncoder(tiny_model_cfg(tmp_path_factory.mktemp("clip")))


def test_hand_crafted_prompts_are_per_template_and_cached(tiny_clip):
    from zsmask.modeling.clip import MultiPromptText

    prompts = MultiPromptText(["a photo of a {}.", "a {} in the scene"])
    names = ["cat", "dog, puppy", "sky"]
    text = prompts(tiny_clip, names)
    assert text.shape == (3, 2, tiny_clip.embed_dim) and not prompts.learnable
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3, 2))
    for n, template in enumerate(prompts.prompts.templates):  # row n = that template alone
        torch.testing.assert_close(text[:, n], tiny_clip.encode_vocabulary(names, [template]), atol=1e-5, rtol=0)
    assert prompts(tiny_clip, names) is text  # cached: nothing in them is learnable
    with pytest.raises(ValueError, match="TEMPLATES is empty"):
        MultiPromptText([], num_learnable=0)


def test_learnable_context_equals_the_words_it_replaces_and_learns(tiny_clip):
    """Context vectors set to the word embeddings of "a photo of" give exactly CLIP's embedding
    of "a photo of <name>."; gradients reach them through the frozen text encoder."""
    from zsmask.modeling.clip import MultiPromptText

    width = tiny_clip.model.token_embedding.embedding_dim
    prompts = MultiPromptText([], num_learnable=2, context_length=3, token_width=width)
    words = tiny_clip._tokenize(["a photo of"])[0, 1:4]
    with torch.no_grad():
        prompts.prompts.context[0] = tiny_clip.model.token_embedding(words)
    text = prompts(tiny_clip, ["cat", "sky"])
    assert text.shape == (2, 2, tiny_clip.embed_dim) and prompts.learnable
    torch.testing.assert_close(text[:, 0], tiny_clip.encode_prompts(["a photo of cat.", "a photo of sky."]),
                               atol=1e-5, rtol=0)
    text.sum().backward()
    assert prompts.prompts.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_clip.parameters())
    too_long = MultiPromptText([], num_learnable=1, context_length=15, token_width=width)
    with pytest.raises(ValueError, match="no room for the class name"):
        too_long(tiny_clip, ["cat"])
    with torch.no_grad():  # cached at inference, recomputed once the context changes
        first = prompts(tiny_clip, ["cat", "sky"])
        assert prompts(tiny_clip, ["cat", "sky"]) is first
        prompts.prompts.context.add_(1.0)
        assert not torch.allclose(prompts(tiny_clip, ["cat", "sky"]), first)


# ------------------------------------------------------------------ backbone and model
def test_backbone_layer_embeddings_are_clips_own(tmp_path):
    from detectron2.modeling import build_backbone
    from conftest import tiny_model_cfg

    from zsmask.modeling.clip.visual_towers import run_block, vit_embed

    torch.manual_seed(0)
    cfg = tiny_model_cfg(tmp_path, **{"MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS": [1, 2]})
    backbone = build_backbone(cfg)
    x = torch.randn(2, 3, 64, 64)
    features = backbone(x)
    visual = backbone.visual
    assert features["clip_layer1"].shape == (2, visual.output_dim, 4, 4) and "clip_layer1" not in backbone.output_shape()
    with torch.no_grad():
        torch.testing.assert_close(features["clip_global"], visual(x), atol=1e-5, rtol=1e-4)  # CLIP's own embedding
        tokens, _ = vit_embed(visual, x)
        tokens = run_block(visual.transformer.resblocks[0], tokens)
        expected = (visual.ln_post(tokens[:, 1:]) @ visual.proj).transpose(1, 2).reshape(2, -1, 4, 4)
    torch.testing.assert_close(features["clip_layer1"], expected, atol=1e-5, rtol=1e-4)
    # deep prompts: the tower runs with gradients to them only
    cfg = tiny_model_cfg(tmp_path, **{"MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS": [2],
                                      "MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS": 3})
    backbone = build_backbone(cfg)
    features = backbone(x)
    features["clip_layer2"].sum().backward()
    assert backbone.deep_prompts.shape == (2, 3, visual.transformer.width) and backbone.deep_prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.visual.parameters())
    with pytest.raises(ValueError, match="EMBEDDING_LAYERS"):
        build_backbone(tiny_model_cfg(tmp_path, **{"MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS": [3]}))


def _otseg_model(tmp_path, dataset, **overrides):
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model
    from conftest import tiny_model_cfg

    MetadataCatalog.get(dataset).set(stuff_classes=["cat", "dog", "sky"], ignore_label=255)
    options = {"MODEL.ZSMASK.PIXEL_SCORE_HEAD": "MultiPromptSinkhornHead",
               "MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS": [1, 2],
               "MODEL.OTSEG.PROMPTS.TEMPLATES": ["a photo of a {}.", "a {} in the scene"],
               "MODEL.OTSEG.DECODER.DROPOUT": 0.0}
    options.update(overrides)
    torch.manual_seed(0)
    return build_model(tiny_model_cfg(tmp_path, dataset, dataset, **options))


def _training_batch():
    from detectron2.structures import BitMasks, Instances

    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32], masks[1, 32:48] = True, True  # rows 48+ are unannotated
    instances = Instances((64, 64), gt_classes=torch.tensor([0, 2]), gt_masks=BitMasks(masks))
    sem_seg = torch.full((64, 64), 255)
    sem_seg[:32], sem_seg[32:48] = 0, 2
    return [{"image": torch.rand(3, 64, 64) * 255, "instances": instances, "sem_seg": sem_seg}]


def test_pixel_score_head_trains_with_the_query_path_and_mixes_at_inference(tmp_path):
    model = _otseg_model(tmp_path, "otseg_model_test")
    head = model.pixel_score_head
    model.train()
    batch = _training_batch()
    losses = model(batch)
    pixel = {k: v for k, v in losses.items() if k.startswith("loss_pixel_")}
    assert set(pixel) == {f"loss_pixel_{p}_{n}" for p in ("decoder", "score") for n in ("focal", "dice", "ce")}
    assert "loss_ce" in losses and all(torch.isfinite(v) for v in losses.values())
    # the head's losses on the dense ground truth of the annotated rows, times lambda_focal = 20
    images = model.preprocess_images(batch)
    targets = torch.zeros(1, 3, 64, 64)
    targets[0, 0, :32], targets[0, 2, 32:48] = 1, 1
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[0, :48] = True
    raw = head.losses(head(model.backbone(images.tensor), model.clip, ("cat", "dog", "sky")), targets, valid)
    torch.testing.assert_close(pixel["loss_pixel_score_focal"], raw["loss_pixel_score_focal"] * 20.0)
    sum(losses.values()).backward()
    assert head.relationship.linear.weight.grad.abs().sum() > 0 and head.decoder.layers[0].attention.q_proj.weight.grad is not None

    model.eval()
    image = {"image": torch.rand(3, 64, 64) * 255, "height": 32, "width": 48}
    with torch.no_grad():
        mixed = model([image])[0]["sem_seg"]
        model.pixel_score_weight = 0.0
        query = model([image])[0]["sem_seg"]
        model.pixel_score_weight = 1.0
        pixel_only = model([image])[0]["sem_seg"]
        features = model.backbone(model.preprocess_images([image]).tensor)
        head_outputs = head(features, model.clip, ("cat", "dog", "sky"))
    assert mixed.shape == query.shape == (3, 32, 48)
    torch.testing.assert_close(mixed, 0.5 * query + 0.5 * pixel_only)
    probs = F.interpolate(head.probabilities(head_outputs), size=(32, 48), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(pixel_only, probs, atol=1e-5, rtol=0)  # image 64x64 shown at 32x48
    ensemble = head.decoder_weight * head_outputs["decoder_map"] + (1 - head.decoder_weight) * head_outputs["score_map"]
    torch.testing.assert_close(head.ensemble_logits(head_outputs), ensemble)  # Eq. 17


@pytest.mark.parametrize("init", ["identity", "random"])
def test_projection_init_keeps_clips_pixel_text_alignment_at_step_zero(tmp_path, init):
    model = _otseg_model(tmp_path, f"otseg_init_{init}", **{"MODEL.OTSEG.PROJECTION_INIT": init})
    head = model.pixel_score_head
    names = ("cat", "dog", "sky")
    with torch.no_grad():
        text = head.prompts(model.clip, names)  # (K, N, D)
        classes = torch.arange(64).remainder(3)  # an 8 x 8 map of class indices
        pixels = F.normalize(text.mean(1), dim=-1)[classes] + 0.02 * torch.randn(64, text.shape[-1])
        layer = pixels.T.reshape(1, -1, 8, 8)
        features = {"clip_layer1": layer, "clip_layer2": layer, "clip_global": torch.randn(1, text.shape[-1])}
        queries = head.relationship(text, F.normalize(features["clip_global"], dim=-1))
        scores = head(features, model.clip, names)["prompt_scores"]  # (1, K, M, N)
    # CLIP's own choice per pixel: its class by the mean cosine over the prompts in CLIP's space
    # (of the pixel embeddings after LayerNorm's centring, which the path keeps)
    centred = F.layer_norm(pixels, (pixels.shape[-1],))
    clip_choice = torch.einsum("md,knd->mkn", F.normalize(centred, dim=-1), F.normalize(text, dim=-1)).mean(-1).argmax(1)
    assert (clip_choice == classes).float().mean() > 0.5  # the crafted map is mostly recognisable to this CLIP
    agreement = (scores.mean(-1)[0].argmax(0) == clip_choice).float().mean().item()
    if init == "identity":  # the descriptor passes the text through, the projection is I (then LN)
        torch.testing.assert_close(queries[0], text)
        torch.testing.assert_close(head.pixel_embeddings(features)[0][0], centred)
        assert agreement == 1.0  # every pixel gets the class CLIP's own cosines give it
    else:
        assert agreement < 0.8 and not torch.allclose(queries[0], text, atol=0.1)
    with pytest.raises(ValueError, match="PROJECTION_INIT"):
        _otseg_model(tmp_path, "otseg_init_bad", **{"MODEL.OTSEG.PROJECTION_INIT": "zeros"})


def test_zegot_options_build_and_run(tmp_path):
    model = _otseg_model(tmp_path, "zegot_model_test", **{"MODEL.OTSEG.PROMPTS.NUM_LEARNABLE": 2,
                                                          "MODEL.OTSEG.PROMPTS.CONTEXT_LENGTH": 3,
                                                          "MODEL.OTSEG.DECODER_WEIGHT": 0.2})
    head = model.pixel_score_head
    assert head.prompts.learnable and head.embedding_layers == [1, 2] and len(head.pixel_proj) == 2
    model.train()
    losses = model(_training_batch())
    sum(losses.values()).backward()
    assert head.prompts.prompts.context.grad.abs().sum() > 0


def test_pixel_score_config_errors(tmp_path):
    with pytest.raises(ValueError, match="EMBEDDING_LAYERS"):
        _otseg_model(tmp_path, "otseg_error_test", **{"MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS": []})
    with pytest.raises(ValueError, match="PIXEL_SCORE_WEIGHT"):
        _otseg_model(tmp_path, "otseg_error_test", **{"MODEL.ZSMASK.PIXEL_SCORE_WEIGHT": 1.5})
    with pytest.raises(KeyError, match="MultiPromptSinkhornHead"):
        _otseg_model(tmp_path, "otseg_error_test", **{"MODEL.ZSMASK.PIXEL_SCORE_HEAD": "NoSuchHead"})


# ------------------------------------------------------------------ toy world
@pytest.mark.slow
def test_train_net_runs_otseg_on_the_toy_world(tmp_path):
    from conftest import train_on_smoke_world

    logged = train_on_smoke_world(tmp_path, "otseg.yaml", "toy_world_otseg_smoke", "SOLVER.MAX_ITER", "6")
    rows = [row for row in logged if "loss_pixel_score_focal" in row]
    assert rows and all(math.isfinite(row[k]) for row in rows for k in ("loss_pixel_decoder_dice", "loss_ce"))
