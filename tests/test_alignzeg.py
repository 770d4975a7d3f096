"""AlignZeg (Ge et al.): the CLIP [CLS] semantic decoder with attention bias, MRPE, GEPC (FES,
BDS), Predictive Bias Correction (negative selection, L_bc, Eq. 7), the model built from its
configs and a short toy-world training and evaluation run."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.inference import suppress_seen_scores
from zsmask.modeling.matcher import (HungarianMatcher, NegativeProposalSelector, select_negative_proposals,
                                     select_unannotated_negatives)


def test_fig4_example_selects_p5_p6_p7():
    # 8 proposals, 3 seen classes, K = 5. Column i: mask loss against seen class i. Top-5 of
    # class 1: p1 p5 p6 p7 p8; of class 2: p2 p5 p6 p7 p8; of class 3: p3 p4 p5 p6 p7.
    high = {0: [0, 4, 5, 6, 7], 1: [1, 4, 5, 6, 7], 2: [2, 3, 4, 5, 6]}
    loss = torch.full((8, 3), 0.1)
    for column, rows in high.items():
        loss[rows, column] = torch.linspace(0.9, 0.5, len(rows))
    matched = torch.zeros(8, dtype=torch.bool)
    matched[[0, 1]] = True  # p1, p2 are seen-class proposals
    labels = select_negative_proposals(loss, matched, top_k=5)
    assert labels.tolist() == [0, 0, -1, -1, 1, 1, 1, -1]
    # a matched proposal is never a negative, even when it ranks in every top-K
    matched[4] = True
    assert select_negative_proposals(loss, matched, top_k=5)[4] == 0
    # no seen class in the image: nothing is a negative
    assert select_negative_proposals(torch.zeros(8, 0), matched, top_k=5).tolist().count(1) == 0


def test_selector_labels_from_model_outputs():
    size = 16
    seen = torch.zeros(1, size, size, dtype=torch.bool)
    seen[0, :, : size // 2] = True
    masks = torch.full((1, 4, size, size), -10.0)
    masks[0, 0, :, : size // 2] = 10.0  # proposal 0 covers the seen class
    masks[0, 1, :, size // 2:] = 10.0  # proposals 1 and 2 cover the other half only
    masks[0, 2, :, size // 2:] = 10.0
    masks[0, 3, :, :] = 10.0  # proposal 3 covers everything
    outputs = {"pred_logits": torch.zeros(1, 4, 3), "pred_masks": masks}
    selector = NegativeProposalSelector(matcher=HungarianMatcher(num_points=256),
                                        mask_cost=HungarianMatcher(cost_class=0.0, num_points=256), top_k=2)
    labels = selector(outputs, [{"labels": torch.tensor([1]), "masks": seen}])[0]
    assert labels[0] == 0  # matched: positive
    assert labels[1] == 1 and labels[2] == 1  # off the seen region: negatives
    assert labels[3] == -1


def test_unannotated_negatives_are_unmatched_proposals_mostly_on_unannotated_pixels():
    # 8 x 8 masks; the right half of the 16 x 16 image is unannotated (the unseen object)
    unannotated = torch.zeros(16, 16, dtype=torch.bool)
    unannotated[:, 8:] = True
    logits = torch.full((5, 8, 8), -5.0)
    logits[0, :, :4] = 5.0  # on the annotated half, matched: positive
    logits[1, :, 4:] = 5.0  # all on the unannotated half: negative
    logits[2, :, 2:] = 5.0  # 4 of its 6 columns unannotated (2/3 >= 0.6): negative
    logits[3, :, 1:] = 5.0  # 4 of 7 (0.57 < 0.6): ignored
    # proposal 4 predicts nothing: ignored (the top-K rule would pick it)
    matched = torch.tensor([True, False, False, False, False])
    labels = select_unannotated_negatives(logits, unannotated, matched, min_unannotated=0.6)
    assert labels.tolist() == [0, 1, 1, -1, -1]
    # a matched proposal stays positive wherever it lies
    assert select_unannotated_negatives(logits, unannotated, torch.ones(5, dtype=torch.bool), 0.6).tolist() == [0] * 5
    # a cell half unannotated counts half: a mask on the border column only has share 0.5
    border = torch.zeros(16, 16, dtype=torch.bool)
    border[:, 7:] = True  # column 3 of the mask grid is half unannotated
    one_column = torch.full((1, 8, 8), -5.0)
    one_column[0, :, 3] = 5.0
    assert select_unannotated_negatives(one_column, border, torch.zeros(1, dtype=torch.bool), 0.5).tolist() == [1]
    assert select_unannotated_negatives(one_column, border, torch.zeros(1, dtype=torch.bool), 0.6).tolist() == [-1]


def test_selector_with_unannotated_rule_reads_the_targets_pixels():
    size = 16
    seen = torch.zeros(1, size, size, dtype=torch.bool)
    seen[0, :, : size // 2] = True
    masks = torch.full((1, 3, size, size), -10.0)
    masks[0, 0, :, : size // 2] = 10.0  # covers the seen class: matched
    masks[0, 1, :, size // 2:] = 10.0  # covers the unannotated half: negative
    outputs = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": masks}
    selector = NegativeProposalSelector(matcher=HungarianMatcher(num_points=256),
                                        mask_cost=HungarianMatcher(cost_class=0.0, num_points=256), top_k=2,
                                        negatives="unannotated")
    target = {"labels": torch.tensor([1]), "masks": seen, "unannotated": ~seen[0]}
    assert selector(outputs, [target])[0].tolist() == [0, 1, -1]
    # pseudo targets (Split Matching) neither count as positives nor hide the pixels
    with_pseudo = dict(target, labels=torch.tensor([1, 3]), masks=torch.cat((seen, ~seen)),
                       is_pseudo=torch.tensor([False, True]))
    assert selector(outputs, [with_pseudo])[0].tolist() == [0, 1, -1]
    with pytest.raises(KeyError, match="'unannotated' pixels"):
        selector(outputs, [{"labels": torch.tensor([1]), "masks": seen}])
    with pytest.raises(ValueError, match="NEGATIVES must be one of"):
        NegativeProposalSelector(matcher=HungarianMatcher(), mask_cost=HungarianMatcher(), negatives="junk")


def test_background_reading_decides_where_a_suppressed_proposals_mass_goes():
    # Eq. 7 sets a flagged proposal's seen logits to the minimum; what remains is its unseen
    # logit and its no-object logit. Classes: seen 0, 1; unseen 2; then "no object".
    from zsmask.modeling.heads.vocabulary_classifier import VocabularyClassifier

    classifier = VocabularyClassifier(embed_dim=4, logit_scale_init=10.0)
    junk = torch.tensor([[4.0, 1.0, 3.0, 6.0]])  # a background proposal: no object is its largest logit
    corrected = torch.cat((suppress_seen_scores(junk[:, :-1], torch.tensor([0.9]),
                                                torch.tensor([True, True, False]), 0.3), junk[:, -1:]), dim=1)
    assert corrected[0].tolist() == [1.0, 1.0, 3.0, 6.0]
    out_of_softmax = classifier.scores(corrected, with_background=False)
    in_softmax = classifier.scores(corrected, with_background=True)
    # no-object out of the softmax: the junk proposal's mass goes to the unseen class
    torch.testing.assert_close(out_of_softmax, torch.tensor([[1.0, 1.0, 3.0]]).softmax(-1))
    assert out_of_softmax[0, 2] > 0.78
    # no-object in the softmax: it keeps its background mass and scores the unseen class low
    torch.testing.assert_close(in_softmax, torch.tensor([[1.0, 1.0, 3.0, 6.0]]).softmax(-1)[:, :3])
    assert in_softmax[0, 2] < 0.05


def test_suppression_changes_exactly_the_seen_scores_of_flagged_proposals():
    torch.manual_seed(0)
    scores = torch.rand(4, 5)
    indicator = torch.tensor([0.9, 0.1, 0.31, 0.3])
    seen = torch.tensor([True, False, True, True, False])
    corrected = suppress_seen_scores(scores, indicator, seen, threshold=0.3)
    flagged = torch.tensor([True, False, True, False])
    changed = corrected != scores
    assert torch.equal(changed, flagged[:, None] & seen[None, :] & (scores != scores.min()))
    assert torch.all(corrected[flagged][:, seen] == scores.min())
    assert torch.equal(corrected[:, ~seen], scores[:, ~seen]) and torch.equal(corrected[~flagged], scores[~flagged])
    with pytest.raises(ValueError, match="expected scores"):
        suppress_seen_scores(scores, indicator[:2], seen, 0.3)


def test_selector_builds_from_the_config():
    from detectron2.config import get_cfg

    from zsmask.config import add_zsmask_config
    from zsmask.modeling.matcher import MATCHER_REGISTRY

    cfg = add_zsmask_config(get_cfg())
    selector = MATCHER_REGISTRY.get(cfg.MODEL.ALIGNZEG.PBC.SELECTOR)(cfg)
    assert selector.top_k == 50 and selector.mask_cost.cost_class == 0.0
    assert selector.mask_cost.cost_mask == cfg.MODEL.MASK_FORMER.MASK_WEIGHT
    assert selector.negatives == "top_k" and selector.min_unannotated == 0.5
    cfg.MODEL.ALIGNZEG.PBC.NEGATIVES = "unannotated"
    cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_MIN_UNANNOTATED = 0.7
    selector = MATCHER_REGISTRY.get(cfg.MODEL.ALIGNZEG.PBC.SELECTOR)(cfg)
    assert selector.negatives == "unannotated" and selector.min_unannotated == 0.7




# ------------------------------------------------------------------ CLIP semantic decoder
@pytest.fixture(scope="module")
def clip_tower():
    """A real open_clip ViT tower (random init): 3 blocks of width 64, 2 heads, patch 8."""
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=64, patch_size=8, width=64, layers=3, heads=2, mlp_ratio=4.0,
                             output_dim=32).eval()


def _decoder_inputs(tower):
    from zsmask.modeling.clip.visual_towers import run_block, vit_embed

    torch.manual_seed(1)
    with torch.no_grad():
        tokens, grid = vit_embed(tower, torch.randn(2, 3, 64, 64))
        tokens = run_block(tower.transformer.resblocks[0], tokens)  # the tokens entering the decoder blocks
    return tokens, grid


def test_bias_blocking_all_but_one_region_equals_decoding_that_region_alone(clip_tower):
    from zsmask.modeling.proposal_embedder import CLIPSemanticDecoder

    decoder = CLIPSemanticDecoder(visual=clip_tower, decoder_layers=2, query_dim=16, bias_dim=8).eval()
    tokens, (h, w) = _decoder_inputs(clip_tower)
    memories = decoder.image_stream(tokens)
    assert len(memories) == 2 and memories[0].shape == (2, h * w, 64)
    assert not torch.allclose(memories[0], memories[1])  # the image stream runs through block 1
    regions = torch.zeros(3, h, w, dtype=torch.bool)
    regions[0, :4, :4] = True  # top-left quarter
    regions[1, 4:, :] = True  # bottom half
    regions[2, 2:5, 6:] = True  # a strip on the right
    regions = regions.flatten(1)
    bias = torch.zeros(2, decoder.num_heads, 3, h * w).masked_fill(~regions[None, None], float("-inf"))
    queries = tokens[:, :1].expand(-1, 3, -1)
    with torch.no_grad():
        features = decoder.decode_queries(queries, memories, bias)
        assert features.shape == (2, 3, 32)
        for r in range(3):
            alone = decoder.decode_queries(queries[:, r:r + 1], [m[:, regions[r]] for m in memories], None)
            torch.testing.assert_close(features[:, r:r + 1], alone, rtol=1e-5, atol=1e-5)
        # changing the mask changes the feature; no bias = the whole image
        assert (features[:, 0] - features[:, 1]).norm(dim=-1).min() > 1e-2
        whole = decoder.decode_queries(queries[:, :1], memories, None)
        torch.testing.assert_close(decoder.decode_queries(queries[:, :1], memories, torch.zeros_like(bias[:, :, :1])),
                                   whole)
        assert (whole - features[:, :1]).norm() > 1e-2


def test_semantic_decoder_forward_bias_from_queries_and_refined_features(clip_tower):
    from zsmask.modeling.proposal_embedder import CLIPSemanticDecoder

    decoder = CLIPSemanticDecoder(visual=clip_tower, decoder_layers=2, query_dim=16, bias_dim=8)
    tokens, (h, w) = _decoder_inputs(clip_tower)
    features = {"clip_tokens": tokens, "clip": torch.zeros(2, 64, h, w)}
    torch.manual_seed(2)
    outputs = {"query_features": torch.randn(2, 5, 16), "pixel_features": torch.randn(2, 16, 4, 4, requires_grad=True)}
    result = decoder(features, outputs)
    assert result["attn_bias"].shape == (2, 2, 5, h * w)
    assert result["proposal_features"].shape == result["pred_embeddings"].shape == (2, 5, 32)
    # φ_cls starts as the identity (zero-initialised residual), so training starts from CLIP's alignment
    torch.testing.assert_close(result["pred_embeddings"], result["proposal_features"])
    # the bias is Q''·MLP(Z'_f)^T per head, on the CLIP grid
    pixel = F.interpolate(decoder.bias_pixel(outputs["pixel_features"]), size=(h, w), mode="bilinear",
                          align_corners=False).view(2, 2, 8, h * w)
    query = decoder.bias_query(outputs["query_features"]).view(2, 5, 2, 8)
    torch.testing.assert_close(result["attn_bias"][:, 1], query[:, :, 1] @ pixel[:, 1])
    # gradients reach the pixel features through the bias, never the frozen CLIP blocks
    result["pred_embeddings"].sum().backward()
    assert outputs["pixel_features"].grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.blocks.parameters())
    # different masks, different features
    moved = decoder(features, {"query_features": outputs["query_features"],
                               "pixel_features": outputs["pixel_features"].detach().flip(-1)})
    assert (moved["proposal_features"] - result["proposal_features"]).abs().max() > 1e-3


# ------------------------------------------------------------------ MRPE
@pytest.mark.parametrize("mutual", [True, False])
def test_proposal_decoder_masks_are_final_queries_times_refined_features(mutual):
    from zsmask.modeling.transformer_decoder import MutuallyRefinedProposalDecoder

    torch.manual_seed(0)
    decoder = MutuallyRefinedProposalDecoder(in_channels=24, mask_dim=16, class_embed_dim=0, hidden_dim=32,
                                             num_queries=6, nheads=4, dim_feedforward=64, mutual_refinement=mutual,
                                             dec_layers=2).eval()
    fused = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        outputs = decoder([fused], fused)
    assert outputs["pred_masks"].shape == (2, 6, 5, 7) and outputs["query_features"].shape == (2, 6, 32)
    assert "pred_embeddings" not in outputs
    expected = torch.einsum("bqc,bchw->bqhw", decoder.mask_embed(outputs["query_features"]),
                            decoder.pixel_proj(outputs["pixel_features"]))
    torch.testing.assert_close(outputs["pred_masks"], expected)
    projected = decoder.input_proj(fused)
    refined = not torch.allclose(outputs["pixel_features"], projected)
    assert refined == mutual  # image refinement only with MRPE; the baseline keeps Z_f
    # masks depend on the image: the queries are refined by Z_f in both modes
    with torch.no_grad():
        other = decoder([fused.flip(-1)], fused)
    assert not torch.allclose(other["query_features"], outputs["query_features"])


# ------------------------------------------------------------------ GEPC
def test_fes_mixes_features_and_prototypes_with_one_beta_and_labels_them_last():
    from zsmask.modeling.criterion import SetCriterion, loss_virtual_features, mix_features
    from zsmask.modeling.heads import VocabularyClassifier
    from zsmask.modeling.matcher import HungarianMatcher

    torch.manual_seed(0)
    features, prototypes = torch.randn(5, 8), torch.randn(5, 8)
    torch.manual_seed(3)
    mixed_f, mixed_t = mix_features(features, prototypes, alpha=3.0)
    assert mixed_f.shape == mixed_t.shape == (5, 8)
    torch.manual_seed(3)
    beta = torch.distributions.Beta(torch.tensor(3.0), torch.tensor(3.0)).sample().item()
    order = torch.randperm(5)
    assert 0 < beta < 1
    torch.testing.assert_close(mixed_f, beta * features + (1 - beta) * features[order])
    torch.testing.assert_close(mixed_t, beta * prototypes + (1 - beta) * prototypes[order])

    classifier = VocabularyClassifier(8, logit_scale_init=10.0)
    text = F.normalize(torch.randn(4, 8), dim=-1)
    embeddings = torch.randn(2, 6, 8, requires_grad=True)
    targets = [{"labels": torch.tensor([1, 3]), "is_pseudo": torch.tensor([False, False])},
               {"labels": torch.tensor([0, 4, 2]), "is_pseudo": torch.tensor([False, True, False])}]
    indices = [(torch.tensor([0, 4]), torch.tensor([0, 1])), (torch.tensor([1, 2, 5]), torch.tensor([0, 1, 2]))]
    criterion = SetCriterion(matcher=HungarianMatcher(), weight_dict={}, eos_coef=0.1, mixup_alpha=3.0)
    outputs = {"pred_embeddings": embeddings, "classifier": classifier, "text_embeddings": text}
    torch.manual_seed(7)
    loss = loss_virtual_features(criterion, outputs, targets, indices, 1.0)["loss_vir"]
    # by hand: the 4 seen matches (the pseudo one is left out), labelled C = 4 among [T, T^v]
    seen_features = embeddings[[0, 0, 1, 1], [0, 4, 1, 5]]
    seen_prototypes = text[[1, 3, 0, 2]]
    torch.manual_seed(7)
    virtual, virtual_prototypes = mix_features(seen_features, seen_prototypes, 3.0)
    scale = classifier.logit_scale.exp()
    logits = scale * torch.cat((F.normalize(virtual, dim=-1) @ text.t(),
                                F.cosine_similarity(virtual, virtual_prototypes, dim=-1)[:, None]), dim=-1)
    assert logits.shape == (4, 5)
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.full((4,), 4)))
    loss.backward()
    assert embeddings.grad[1, 2].abs().sum() == 0 and embeddings.grad[0, 0].abs().sum() > 0
    # fewer than two seen matches: nothing to mix
    assert loss_virtual_features(criterion, outputs, targets[:1], [(torch.tensor([0]), torch.tensor([0]))],
                                 1.0)["loss_vir"].item() == 0.0
    # auxiliary predictions (no classifier context) add nothing
    assert loss_virtual_features(criterion, {"pred_embeddings": embeddings}, targets, indices, 1.0) == {}


def test_l_reg_on_hand_made_prototypes():
    from zsmask.modeling.criterion import background_diversity_loss

    eye = torch.eye(3)
    assert background_diversity_loss(eye).item() == pytest.approx(0.0)  # orthogonal
    assert background_diversity_loss(torch.ones(4, 3)).item() == pytest.approx(1.0)  # identical
    assert background_diversity_loss(torch.stack((eye[0], -2 * eye[0]))).item() == pytest.approx(-1.0)
    angles = torch.tensor([0.0, 2.0944, 4.1888])  # three directions 120 degrees apart
    star = torch.stack((angles.cos(), angles.sin()), dim=1) * torch.tensor([[1.0], [3.0], [0.5]])
    assert background_diversity_loss(star).item() == pytest.approx(-0.5, abs=1e-4)
    # Eq. 4 is the mean over the M(M-1)/2 pairs
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert background_diversity_loss(g).item() == pytest.approx((0.6 + 0.0 + 0.8) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        background_diversity_loss(eye[:1])


def test_background_score_is_the_softmax_weighted_prototype_logit():
    from zsmask.modeling.heads import VocabularyClassifier

    torch.manual_seed(0)
    classifier = VocabularyClassifier(8, logit_scale_init=10.0, num_background_prototypes=4)
    assert classifier.background_prototypes.shape == (4, 8)
    embeddings, text = torch.randn(3, 8), F.normalize(torch.randn(5, 8), dim=-1)
    logits = classifier(embeddings, text)
    p_mg = 10.0 * F.normalize(embeddings, dim=-1) @ F.normalize(classifier.background_prototypes, dim=-1).t()
    torch.testing.assert_close(logits[:, -1], (p_mg.softmax(-1) * p_mg).sum(-1))
    torch.testing.assert_close(logits[:, :-1], 10.0 * F.normalize(embeddings, dim=-1) @ text.t())
    # one prototype: the plain "no object" logit; old (D,) checkpoints load into it
    single = VocabularyClassifier(8, logit_scale_init=10.0)
    single.load_state_dict({"logit_scale": single.logit_scale.detach(), "void_embedding": torch.ones(8)})
    torch.testing.assert_close(single(embeddings, text)[:, -1], 10.0 * F.normalize(embeddings, dim=-1).sum(-1) / 8 ** 0.5)
    # inference without the background score: a softmax over the vocabulary alone
    torch.testing.assert_close(classifier.scores(logits, with_background=False), logits[:, :-1].softmax(-1))
    assert (classifier.scores(logits).sum(-1) < 1).all()
    with pytest.raises(ValueError, match="softmax"):
        VocabularyClassifier(8, 10.0, class_score="sigmoid", num_background_prototypes=3)


# ------------------------------------------------------------------ PBC: L_bc
def test_l_bc_is_bce_over_the_selected_proposals_and_reuses_the_matching():
    from zsmask.modeling.criterion import SetCriterion, loss_class_indicator

    size = 16
    seen = torch.zeros(1, size, size, dtype=torch.bool)
    seen[0, :, : size // 2] = True
    pseudo = ~seen
    masks = torch.full((1, 4, size, size), -10.0)
    masks[0, 0, :, : size // 2] = 10.0
    masks[0, 1, :, size // 2:] = 10.0
    masks[0, 2, :, size // 2:] = 10.0
    masks[0, 3] = 10.0
    selector = NegativeProposalSelector(matcher=HungarianMatcher(num_points=256),
                                        mask_cost=HungarianMatcher(cost_class=0.0, num_points=256), top_k=2)
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=256), weight_dict={}, eos_coef=0.1,
                             proposal_selector=selector)
    indicator = torch.tensor([[0.5, -1.0, 2.0, 3.0]], requires_grad=True)
    outputs = {"pred_logits": torch.zeros(1, 4, 4), "pred_masks": masks, "pred_indicator": indicator}
    # query 1 is matched to a pseudo target: not a positive, and the pseudo mask is no seen class
    targets = [{"labels": torch.tensor([1, 3]), "masks": torch.cat((seen, pseudo)),
                "is_pseudo": torch.tensor([False, True])}]
    indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    torch.manual_seed(0)
    labels = selector(outputs, targets, indices)[0]
    assert labels.tolist() == [0, 1, 1, -1]
    loss = loss_class_indicator(criterion, outputs, targets, indices, 1.0)["loss_bc"]
    expected = F.binary_cross_entropy_with_logits(indicator[0, :3], torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert indicator.grad[0, 3] == 0  # ignored proposal
    assert loss_class_indicator(criterion, {"pred_masks": masks}, targets, indices, 1.0) == {}


# ------------------------------------------------------------------ the model
def _alignzeg_cfg(tmp_path, **overrides):
    from conftest import tiny_model_cfg

    settings = {
        "MODEL.BACKBONE.NAME": "CLIPSideAdapterBackbone",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "CLIPFusionPixelDecoder",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MutuallyRefinedProposalDecoder",
        "MODEL.MASK_FORMER.DEEP_SUPERVISION": False,
        "MODEL.ZSMASK.PROPOSAL_EMBEDDER": "CLIPSemanticDecoder",
        "MODEL.ZSMASK.BACKGROUND_AT_INFERENCE": False,
        "MODEL.ALIGNZEG.IMAGE_ENCODER.DIM": 32,
        "MODEL.ALIGNZEG.IMAGE_ENCODER.DEPTH": 1,
        "MODEL.ALIGNZEG.IMAGE_ENCODER.NUM_HEADS": 4,
        "MODEL.ALIGNZEG.IMAGE_ENCODER.PATCH_SIZE": 8,
        "MODEL.ALIGNZEG.CLIP.FEATURE_LAYER": 1,
        "MODEL.ALIGNZEG.CLIP.DECODER_LAYERS": 1,
        "MODEL.ALIGNZEG.CLIP.INPUT_SCALE": 1.0,
        "MODEL.ALIGNZEG.SEMANTIC_DECODER.BIAS_DIM": 8,
        "MODEL.ALIGNZEG.PBC.ENABLED": True,
        "MODEL.ALIGNZEG.PBC.NEGATIVE_TOP_K": 4,
        "MODEL.ALIGNZEG.FES.ENABLED": True,
        "MODEL.ALIGNZEG.BDS.ENABLED": True,
        "MODEL.ALIGNZEG.BDS.NUM_PROTOTYPES": 3,
    }
    settings.update(overrides)
    return tiny_model_cfg(tmp_path, train_dataset="toy_world_train", test_dataset="toy_world_test", **settings)


def _batch(num_classes=24, size=64):
    from detectron2.structures import Instances

    torch.manual_seed(0)
    batch = []
    for i in range(2):
        instances = Instances((size, size))
        instances.gt_classes = torch.tensor([i, num_classes - 1])
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        masks[0, : size // 2] = True
        masks[1, size // 2:] = True
        instances.gt_masks = masks
        batch.append({"image": torch.randint(0, 255, (3, size, size)).float(), "instances": instances,
                      "height": size, "width": size})
    return batch


def test_alignzeg_model_trains_its_parts_and_keeps_clip_frozen(tmp_path):
    from detectron2.modeling import build_model

    import zsmask.data  # noqa: F401  (registers toy_world_*)

    model = build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ALIGNZEG.CLIP.NUM_DEEP_PROMPTS": 2}))
    assert model.transformer_decoder.class_embed is None  # the semantic decoder gives the embeddings
    assert model.classifier.background_prototypes.shape[0] == 3
    model.train()
    losses = model(_batch())
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_bc", "loss_vir", "loss_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_reg"].item() == pytest.approx(1e-4 * background_loss(model), rel=1e-4)
    sum(losses.values()).backward()
    trained = {
        "image encoder": model.backbone.encoder.patch_embed.weight,
        "deep prompts": model.backbone.deep_prompts,
        "fusion": model.pixel_decoder.clip_proj[1].weight,
        "MRPE": model.transformer_decoder.final_refinement.attn.in_proj_weight,
        "attention bias": model.proposal_embedder.bias_pixel[0].weight,
        "φ_cls": model.proposal_embedder.refine[2].weight,
        "φ_bc": model.class_indicator.layers[0].weight,
        "background prototypes": model.classifier.background_prototypes,
    }
    for name, param in trained.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    frozen = list(model.backbone.blocks.parameters()) + list(model.proposal_embedder.blocks.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)

    model.eval()
    with torch.no_grad():
        results = model(_batch())
    assert results[0]["sem_seg"].shape == (30, 64, 64)


def background_loss(model):
    from zsmask.modeling.criterion import background_diversity_loss

    return background_diversity_loss(model.classifier.background_prototypes).item()


def test_bias_correction_in_the_model_changes_exactly_the_seen_scores_of_flagged_proposals(tmp_path):
    from detectron2.modeling import build_model

    from zsmask.modeling.meta_arch.vocabulary import vocabulary_of_dataset

    model = build_model(_alignzeg_cfg(tmp_path)).eval()
    vocabulary = vocabulary_of_dataset("toy_world_test")
    seen = model.seen_classes(vocabulary)
    assert seen.sum() == 24 and len(seen) == 30  # the toy split: 24 seen, 6 unseen
    torch.manual_seed(0)
    logits = torch.randn(5, 31)
    indicator = torch.tensor([0.9, 0.2, 0.31, 0.3, 0.5])
    corrected = model.correct_bias(logits, indicator, vocabulary)
    flagged = indicator > model.bias_correction_threshold
    changed = corrected != logits
    assert torch.equal(changed[:, :30], flagged[:, None] & seen[None] & (logits[:, :30] != logits.min()))
    assert torch.all(corrected[flagged][:, :30][:, seen] == logits.min())
    assert torch.equal(corrected[:, 30], logits[:, 30])  # the background column is kept
    # flagged proposals then score every unseen class above every seen one
    scores = model.classifier.scores(corrected, with_background=False)
    assert (scores[flagged][:, seen].max(1).values <= scores[flagged][:, ~seen].min(1).values).all()
    assert not (scores[~flagged][:, seen].max(1).values <= scores[~flagged][:, ~seen].min(1).values).all()


@pytest.mark.parametrize("switch,present,absent", [
    ("MODEL.ALIGNZEG.PBC.ENABLED", "loss_bc", None),
    ("MODEL.ALIGNZEG.FES.ENABLED", "loss_vir", None),
    ("MODEL.ALIGNZEG.BDS.ENABLED", "loss_reg", None),
])
def test_ablation_switches_remove_their_part(tmp_path, switch, present, absent):
    from detectron2.modeling import build_model

    model = build_model(_alignzeg_cfg(tmp_path, **{switch: False})).train()
    losses = model(_batch())
    assert present not in losses and {"loss_ce", "loss_mask", "loss_dice"} <= set(losses)
    if switch.endswith("PBC.ENABLED"):
        assert model.class_indicator is None and model.criterion.proposal_selector is None
    if switch.endswith("BDS.ENABLED"):
        assert model.classifier.background_prototypes.shape[0] == 1


def test_mrpe_switch_selects_the_maskformer_style_baseline(tmp_path):
    from detectron2.modeling import build_model

    baseline = build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ALIGNZEG.MRPE.ENABLED": False}))
    assert not baseline.transformer_decoder.mutual_refinement and len(baseline.transformer_decoder.layers) == 3
    assert not hasattr(baseline.transformer_decoder, "image_refinement")
    losses = baseline.train()(_batch())
    assert torch.isfinite(sum(losses.values()))


def test_alignzeg_config_errors(tmp_path):
    from detectron2.modeling import build_model

    # a loss listed without its switch still brings its part
    listed = build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ALIGNZEG.PBC.ENABLED": False,
                                                    "MODEL.ZSMASK.LOSSES": ["labels", "masks", "class_indicator"]}))
    assert listed.class_indicator is not None and listed.criterion.proposal_selector is not None
    with pytest.raises(ValueError, match="DECODER_LAYERS"):
        build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ALIGNZEG.CLIP.DECODER_LAYERS": 2}))
    with pytest.raises(ValueError, match="FEATURE_LAYER"):
        build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ALIGNZEG.CLIP.FEATURE_LAYER": 2}))
    with pytest.raises(ValueError, match="'side' and 'clip'"):
        build_model(_alignzeg_cfg(tmp_path, **{"MODEL.BACKBONE.NAME": "CLIPVisualBackbone"}))


# ------------------------------------------------------------------ toy world
@pytest.mark.slow
def test_train_net_runs_alignzeg_on_the_toy_world(tmp_path):
    from conftest import train_on_smoke_world

    logged = train_on_smoke_world(tmp_path, "alignzeg.yaml", "toy_world_az_smoke", "SOLVER.MAX_ITER", "8",
                                  "TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS", "True", "TEST.ZERO_SHOT.BOOTSTRAP", "20")
    train_rows = [row for row in logged if "loss_bc" in row]
    assert train_rows and all(np.isfinite(row[k]) for row in train_rows for k in ("loss_vir", "loss_reg", "loss_ce"))
    with open(tmp_path / "inference" / "zero_shot_sem_seg_toy_world_az_smoke_test.json") as f:
        evaluated = json.load(f)
    # the evaluation diagnostics of a model with a class indicator (values may be None on 12 images)
    assert {"indicator_AUROC_matched", "indicator_AUROC_rest", "boundary_F", "hIoU_bootstrap_se"} <= set(evaluated)
    shares = [evaluated[f"unseen_as_{k}"] for k in ("right_unseen", "other_unseen", "seen", "no_class")]
    assert sum(shares) == pytest.approx(100.0)


def test_random_queries_need_learned_positional_queries(tmp_path):
    """MRPE's queries have no positional part, so Split Matching's random queries are a config
    error there; the MaskFormer-style baseline takes them."""
    from detectron2.modeling import build_model

    with pytest.raises(ValueError, match="RANDOM_QUERIES"):
        build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ZSMASK.RANDOM_QUERIES.NUM": 4}))
    model = build_model(_alignzeg_cfg(tmp_path, **{"MODEL.ZSMASK.RANDOM_QUERIES.NUM": 4,
                                                   "MODEL.ALIGNZEG.MRPE.ENABLED": False})).eval()
    with torch.no_grad():
        outputs = model.predict_queries(model.preprocess_images(_batch()))
    assert outputs["pred_masks"].shape[1] == 8 + 4 and outputs["pred_indicator"].shape == (2, 12)
