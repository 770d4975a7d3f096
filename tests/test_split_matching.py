"""Split Matching (Chen et al.): the split matcher, its losses, MFE, random queries, pseudo
targets in the model, the pseudo-mask cache, and a short train_net.py run on the toy world."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Instances

import zsmask.modeling  # noqa: F401  (registration)
from zsmask.modeling.auxiliary_heads import MultiScaleFeatureEnhancement, target_label_map
from zsmask.modeling.criterion import (
    SetCriterion,
    build_criterion,
    sigmoid_focal_loss,
    soft_iou_loss,
)
from zsmask.modeling.heads import VocabularyClassifier
from zsmask.modeling.heads.vocabulary_classifier import PADDING_LOGIT
from zsmask.modeling.matcher import FocalHungarianMatcher, SplitMatcher, batch_focal_class_cost, batch_iou_cost
from zsmask.modeling.meta_arch.zero_shot_mask_former import add_pseudo_targets, draw_random_queries
from zsmask.modeling.pseudo_masks import CLIPKMeansPseudoLabeler, PseudoMaskCache, PseudoMaskGenerator, PseudoMasks

from conftest import tiny_model_cfg, train_on_smoke_world

SM_LOSSES = ["focal_labels", "iou_dice_masks", "candidate_cosine"]


# ------------------------------------------------------------------ matcher
def _split_problem(seed, num_seen_queries, num_candidates, seen_targets, pseudo_targets, num_text=4, size=16):
    g = torch.Generator().manual_seed(seed)
    batch = len(seen_targets)
    max_pseudo = max(pseudo_targets)
    queries = num_seen_queries + num_candidates
    outputs = {
        "pred_logits": torch.randn(batch, queries, num_text + max_pseudo + 1, generator=g) * 3,
        "pred_masks": torch.randn(batch, queries, size, size, generator=g) * 3,
    }
    targets = []
    for n_seen, n_pseudo in zip(seen_targets, pseudo_targets):
        labels = torch.cat((torch.randperm(num_text, generator=g)[:n_seen], num_text + torch.arange(n_pseudo)))
        targets.append({
            "labels": labels,
            "masks": torch.rand(n_seen + n_pseudo, size * 2, size * 2, generator=g) > 0.5,
            "is_pseudo": torch.cat((torch.zeros(n_seen, dtype=torch.bool), torch.ones(n_pseudo, dtype=torch.bool))),
        })
    return outputs, targets


def _brute_force_group(cost, queries, members):
    """Minimum total cost over all injective assignments of the smaller side to the larger."""
    if len(members) == 0 or len(queries) == 0:
        return 0.0
    sub = cost[np.ix_(queries, members)]
    if len(members) <= len(queries):
        return min(sum(sub[p[t], t] for t in range(len(members)))
                   for p in itertools.permutations(range(len(queries)), len(members)))
    return min(sum(sub[q, p[q]] for q in range(len(queries)))
               for p in itertools.permutations(range(len(members)), len(queries)))


@pytest.mark.parametrize("seed,seen_targets,pseudo_targets", [
    (0, [2, 3], [2, 1]),
    (1, [4, 0], [1, 3]),   # more seen targets than seen queries; an image with no seen target
    (2, [1, 2], [4, 2]),   # more pseudo masks than candidate queries
])
def test_split_matcher_never_crosses_groups_and_equals_brute_force(seed, seen_targets, pseudo_targets):
    matcher = SplitMatcher(num_seen_queries=3, cost_class=2.0, cost_bce=5.0, cost_iou=5.0, cost_dice=5.0,
                           num_points=64)
    outputs, targets = _split_problem(seed, 3, 3, seen_targets, pseudo_targets)
    torch.manual_seed(seed)
    indices = matcher(outputs, targets)
    torch.manual_seed(seed)  # the same random points
    costs = matcher.compute_cost_matrices(outputs, targets)
    for (query_idx, target_idx), target, cost in zip(indices, targets, costs):
        is_pseudo = target["is_pseudo"][target_idx]
        assert torch.equal(query_idx >= 3, is_pseudo)  # candidate <-> pseudo, seen <-> seen, never across
        assert len(set(query_idx.tolist())) == len(query_idx) and len(set(target_idx.tolist())) == len(target_idx)
        assert torch.equal(query_idx, query_idx.sort().values)
        n_seen, n_pseudo = int((~target["is_pseudo"]).sum()), int(target["is_pseudo"].sum())
        assert int((~is_pseudo).sum()) == min(3, n_seen) and int(is_pseudo.sum()) == min(3, n_pseudo)
        cost = cost.numpy()
        total = float(cost[query_idx.numpy(), target_idx.numpy()].sum())
        optimum = (_brute_force_group(cost, np.arange(3), np.flatnonzero(~target["is_pseudo"].numpy()))
                   + _brute_force_group(cost, np.arange(3, 6), np.flatnonzero(target["is_pseudo"].numpy())))
        assert total == pytest.approx(optimum, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_hungarian_control_is_split_matching_without_the_split(seed):
    """Split Matching's control matcher: the same pair costs over all queries and targets, one
    optimal assignment. With the candidate queries and pseudo masks removed, split matching
    assigns exactly what the control assigns."""
    costs = dict(cost_class=2.0, cost_bce=5.0, cost_iou=5.0, cost_dice=5.0, num_points=64)
    control, split = FocalHungarianMatcher(**costs), SplitMatcher(num_seen_queries=4, **costs)
    outputs, targets = _split_problem(seed, 4, 2, [3, 5], [2, 1], num_text=6)
    seen_targets = [{"labels": t["labels"][~t["is_pseudo"]], "masks": t["masks"][~t["is_pseudo"]],
                     "is_pseudo": t["is_pseudo"][~t["is_pseudo"]]} for t in targets]
    seen_outputs = {k: v[:, :4] for k, v in outputs.items()}
    torch.manual_seed(seed)
    expected = split(outputs, seen_targets)  # candidate queries get nothing: no pseudo masks
    torch.manual_seed(seed)
    got = control(seen_outputs, seen_targets)
    for (q_split, t_split), (q_control, t_control) in zip(expected, got):
        assert torch.equal(q_split, q_control) and torch.equal(t_split, t_control)
    torch.manual_seed(seed)
    cost_split = split.compute_cost_matrices(seen_outputs, seen_targets)
    torch.manual_seed(seed)
    cost_control = control.compute_cost_matrices(seen_outputs, seen_targets)
    assert all(torch.equal(a, b) for a, b in zip(cost_split, cost_control))
    # all queries on the full problem: one optimal assignment of every target (T <= Q)
    torch.manual_seed(seed)
    indices = control(outputs, targets)
    torch.manual_seed(seed)  # the same random points
    full_costs = control.compute_cost_matrices(outputs, targets)
    for (query_idx, target_idx), target, cost in zip(indices, targets, full_costs):
        assert sorted(target_idx.tolist()) == list(range(len(target["labels"])))
        total = float(cost.numpy()[query_idx.numpy(), target_idx.numpy()].sum())
        optimum = _brute_force_group(cost.numpy(), np.arange(6), np.arange(len(target["labels"])))
        assert total == pytest.approx(optimum, abs=1e-4)
    assert "cost_iou=5.0" in repr(control) and "num_seen_queries=4, cost_class=2.0" in repr(split)


def test_split_matcher_keeps_groups_apart_even_when_crossing_is_cheaper():
    # Seen query 0 predicts the pseudo mask perfectly and candidate query 1 the seen mask: plain
    # Hungarian matching would cross; split matching must not.
    size = 8
    seen_mask = torch.zeros(1, size, size, dtype=torch.bool)
    seen_mask[0, :, :4] = True
    pseudo_mask = ~seen_mask
    logits = torch.full((1, 2, 2 + 1), -5.0)
    logits[0, 0, 1] = logits[0, 1, 0] = 5.0
    outputs = {"pred_logits": logits,
               "pred_masks": torch.stack([pseudo_mask[0].float() * 20 - 10, seen_mask[0].float() * 20 - 10])[None]}
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.cat((seen_mask, pseudo_mask)),
                "is_pseudo": torch.tensor([False, True])}]
    split = SplitMatcher(num_seen_queries=1, num_points=64)(outputs, targets)[0]
    assert split[0].tolist() == [0, 1] and split[1].tolist() == [0, 1]
    from zsmask.modeling.matcher import HungarianMatcher
    plain = HungarianMatcher(num_points=64)(outputs, targets)[0]
    assert plain[1].tolist() == [1, 0]  # the crossing assignment split matching forbids


def test_split_matcher_config_errors():
    from detectron2.config import get_cfg

    from zsmask.config import add_zsmask_config
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.ZSMASK.MATCHER = "split_matching"
    with pytest.raises(ValueError, match="PSEUDO_LABELER"):
        build_criterion(cfg)
    cfg.MODEL.ZSMASK.PSEUDO_LABELER = "clip_kmeans"
    cfg.MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES = 100
    with pytest.raises(ValueError, match="NUM_CANDIDATE_QUERIES=100"):
        build_criterion(cfg)
    cfg.MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES = 40
    cfg.MODEL.ZSMASK.LOSSES = SM_LOSSES
    criterion = build_criterion(cfg)
    assert criterion.matcher.num_seen_queries == 60
    assert criterion.weight_dict["loss_focal"] == 2.0 and criterion.weight_dict["loss_iou_3"] == 5.0
    assert criterion.weight_dict["loss_cos_8"] == 1.0
    outputs, targets = _split_problem(0, 60, 40, [2], [1])
    with pytest.raises(ValueError, match="is_pseudo"):
        criterion.matcher(outputs, [{k: v for k, v in targets[0].items() if k != "is_pseudo"}])


def test_focal_class_and_iou_costs_hand_made():
    logits = torch.tensor([[[0.0, 2.0]]])  # one query, two classes
    cost = batch_focal_class_cost(logits, torch.tensor([[0, 1]]), alpha=0.25, gamma=2.0)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected_0 = 0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2)
    expected_1 = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p ** 2 * -math.log(1 - p)
    torch.testing.assert_close(cost, torch.tensor([[[expected_0, expected_1]]]))
    big = torch.full((1, 1, 4), 50.0)
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    iou = batch_iou_cost(big, target)
    torch.testing.assert_close(iou, torch.tensor([[[1 - 3 / 5, 0.0]]]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ losses
def _criterion(losses=SM_LOSSES, **kwargs):
    return SetCriterion(matcher=torch.nn.Identity(), weight_dict={}, eos_coef=0.1, losses=losses,
                        num_points=64, oversample_ratio=1.0, importance_sample_ratio=0.0, **kwargs)


def test_sigmoid_focal_and_soft_iou_hand_made():
    loss = sigmoid_focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)]))
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert soft_iou_loss(labels * 100 - 50, labels, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_iou_loss(torch.full((1, 4), 50.0), labels, 1.0).item() == pytest.approx(1 - 3 / 5, abs=1e-6)
    assert soft_iou_loss(torch.full((2, 4), 50.0), labels.expand(2, -1), 2.0).item() == pytest.approx(0.4, abs=1e-6)


def test_focal_labels_loss_value_ignores_padding_and_no_object():
    criterion = _criterion()
    # 2 queries, 2 text classes + 1 pseudo class + 1 padded pseudo column + "no object"
    logits = torch.tensor([[[1.0, -1.0, 0.5, PADDING_LOGIT, 7.0], [-2.0, 0.0, 3.0, PADDING_LOGIT, -7.0]]])
    outputs = {"pred_logits": logits, "pred_masks": torch.zeros(1, 2, 4, 4)}
    targets = [{"labels": torch.tensor([2]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}]
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    loss = criterion.loss_fns["focal_labels"](criterion, outputs, targets, indices, 1.0)["loss_focal"]
    one_hot = torch.tensor([[0.0, 0, 0], [0, 0, 1]])
    expected = sigmoid_focal_loss(logits[0, :, :3], one_hot).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_candidate_cosine_loss_uses_matched_pseudo_pairs_only():
    criterion = _criterion()
    embeddings = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]], requires_grad=True)
    outputs = {"pred_logits": torch.zeros(1, 3, 4), "pred_masks": torch.zeros(1, 3, 4, 4),
               "pred_embeddings": embeddings}
    targets = [{"labels": torch.tensor([0, 2, 3]), "masks": torch.ones(3, 4, 4, dtype=torch.bool),
                "is_pseudo": torch.tensor([False, True, True]),
                "embeddings": torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])}]
    # query 0 <-> seen target 0 (orthogonal: must not count), query 1 <-> pseudo 1 (orthogonal: 1),
    # query 2 <-> pseudo 2 (opposite: 2)
    indices = [(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))]
    loss = criterion.loss_fns["candidate_cosine"](criterion, outputs, targets, indices, 3.0)["loss_cos"]
    assert loss.item() == pytest.approx((1.0 + 2.0) / 2)
    loss.backward()
    assert embeddings.grad[0, 0].abs().sum() == 0 and embeddings.grad[0, 1:].abs().sum() > 0
    none = [(torch.tensor([0]), torch.tensor([0]))]
    zero = criterion.loss_fns["candidate_cosine"](criterion, outputs, targets, none, 1.0)["loss_cos"]
    assert zero.item() == 0.0 and zero.requires_grad


def test_split_matching_losses_finite_on_a_random_problem_and_zero_for_a_perfect_one():
    criterion = _criterion()
    outputs, targets = _split_problem(3, 3, 3, [2, 1], [1, 2], size=8)
    outputs["pred_embeddings"] = torch.randn(2, 6, 5)
    for t in targets:
        t["embeddings"] = torch.randn(len(t["labels"]), 5)
    indices = [(torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2])), (torch.tensor([0, 3, 4]), torch.tensor([0, 1, 2]))]
    losses = criterion(outputs, targets, indices=indices)
    assert set(losses) == {"loss_focal", "loss_mask", "loss_iou", "loss_dice", "loss_cos"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    # a perfect prediction: exact masks, confident right classes, embeddings equal to C_u (a
    # mask covering the image: no boundary for bilinear point sampling to blur)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    logits = torch.full((1, 1, 3), -30.0)
    logits[0, 0, 1] = 30.0
    perfect = {"pred_logits": logits, "pred_masks": mask.float()[None] * 60 - 30,
               "pred_embeddings": torch.tensor([[[0.0, 2.0]]])}
    target = [{"labels": torch.tensor([1]), "masks": mask, "is_pseudo": torch.tensor([True]),
               "embeddings": torch.tensor([[0.0, 1.0]])}]
    perfect_losses = criterion(perfect, target, indices=[(torch.tensor([0]), torch.tensor([0]))])
    assert perfect_losses["loss_focal"].item() == pytest.approx(0.0, abs=1e-6)
    assert perfect_losses["loss_cos"].item() == pytest.approx(0.0, abs=1e-6)
    # point sampling reads zero padding at the border, so the mask losses are small, not zero
    for name in ("loss_iou", "loss_dice"):  # (BCE at such points is not small: tested elsewhere)
        assert perfect_losses[name] < losses[name] / 5


# ------------------------------------------------------------------ classifier
def test_joint_logits_pad_per_image_classes_and_sigmoid_has_no_void_parameter():
    classifier = VocabularyClassifier(4, 10.0, logit_bias_init=-2.0, class_score="sigmoid")
    assert classifier.void_embedding is None
    text = F.normalize(torch.randn(3, 4), dim=-1)
    extra = torch.randn(2, 2, 4)
    valid = torch.tensor([[True, True], [True, False]])
    embeddings = torch.randn(2, 5, 4)
    logits = classifier.joint_logits(embeddings, text, extra, valid)
    assert logits.shape == (2, 5, 3 + 2 + 1)
    assert (logits[1, :, 4] == PADDING_LOGIT).all() and (logits[..., -1] == PADDING_LOGIT).all()
    expected = 10.0 * F.cosine_similarity(embeddings[0, :, None], extra[0, None], dim=-1) - 2.0
    torch.testing.assert_close(logits[0, :, 3:5], expected)
    scores = classifier.scores(logits)
    assert scores.shape == (2, 5, 5) and scores[1, :, 4].max() == 0
    softmax = VocabularyClassifier(4, 10.0)
    torch.testing.assert_close(softmax.scores(softmax(embeddings, text)).sum(-1) <= 1.0,
                               torch.ones(2, 5, dtype=torch.bool))


def test_add_pseudo_targets_builds_the_joint_class_space():
    text = F.normalize(torch.randn(4, 3), dim=-1)
    targets = [{"labels": torch.tensor([2, 0]), "masks": torch.zeros(2, 8, 8, dtype=torch.bool)},
               {"labels": torch.tensor([1]), "masks": torch.zeros(1, 8, 8, dtype=torch.bool)}]
    pseudo = [PseudoMasks(torch.ones(1, 6, 6, dtype=torch.bool), F.normalize(torch.randn(1, 3), dim=-1)),
              PseudoMasks(torch.zeros(0, 8, 8, dtype=torch.bool), torch.zeros(0, 3))]
    joint, extra, valid = add_pseudo_targets(targets, pseudo, text)
    assert joint[0]["labels"].tolist() == [2, 0, 4] and joint[1]["labels"].tolist() == [1]
    assert joint[0]["is_pseudo"].tolist() == [False, False, True] and joint[1]["is_pseudo"].tolist() == [False]
    assert joint[0]["masks"].shape == (3, 8, 8) and joint[0]["masks"][2].sum() == 36  # padded to 8 x 8
    torch.testing.assert_close(joint[0]["embeddings"], torch.cat((text[[2, 0]], pseudo[0].embeddings)))
    assert extra.shape == (2, 1, 3) and valid.tolist() == [[True], [False]]


# ------------------------------------------------------------------ MFE
@pytest.mark.parametrize("norm", ["GN", "BN", ""])
def test_mfe_shapes_gradients_and_loss(norm):
    torch.manual_seed(0)
    head = MultiScaleFeatureEnhancement(in_channels=8, embed_dim=6, norm=norm)
    features = [torch.randn(2, 8, s, s, requires_grad=True) for s in (4, 8, 16)]
    fused = head.fuse(features)
    assert fused.shape == (2, 8, 16, 16)
    classifier = VocabularyClassifier(6, 10.0, class_score="sigmoid")
    text = torch.randn(3, 6)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32], masks[1, 32:] = True, True
    targets = [{"labels": torch.tensor([0, 3]), "masks": masks},
               {"labels": torch.tensor([2]), "masks": torch.zeros(1, 64, 64, dtype=torch.bool)}]
    extra, valid = torch.randn(2, 1, 6), torch.tensor([[True], [False]])
    losses = head({"multi_scale_features": features}, targets,
                  lambda e: classifier.joint_logits(e, text, extra, valid))
    assert set(losses) == set(head.weight_dict) == {"loss_mfe_ce", "loss_mfe_focal"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)  # all three scales
    assert all(p.grad is not None for p in head.parameters())
    with pytest.raises(ValueError, match="NORM"):
        MultiScaleFeatureEnhancement(in_channels=8, embed_dim=6, norm="LN")


def test_target_label_map_marks_uncovered_pixels_ignored():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 2:, :2] = True, True
    label = target_label_map([{"labels": torch.tensor([5, 7]), "masks": masks}], (2, 2))
    assert label.tolist() == [[[5, 5], [7, -1]]]


# ------------------------------------------------------------------ random queries
def test_random_queries_are_seeded_and_device_independent():
    learned = torch.randn(5, 4) * 3 + 1
    a = draw_random_queries(200, learned, seed=7, distribution="normal")
    assert torch.equal(a, draw_random_queries(200, learned, seed=7, distribution="normal"))
    assert not torch.equal(a, draw_random_queries(200, learned, seed=8, distribution="normal"))
    assert abs(a.mean().item()) < 0.2 and abs(a.std().item() - 1) < 0.1
    fitted = draw_random_queries(4000, learned, seed=7, distribution="fitted")
    torch.testing.assert_close(fitted.mean(0), learned.mean(0), atol=0.2, rtol=0)
    with pytest.raises(ValueError, match="DISTRIBUTION"):
        draw_random_queries(2, learned, seed=0, distribution="uniform")


# ------------------------------------------------------------------ the model with split matching
def _sm_cfg(tmp_path, **overrides):
    sm = {"MODEL.ZSMASK.MATCHER": "split_matching", "MODEL.ZSMASK.LOSSES": SM_LOSSES,
          "MODEL.ZSMASK.CLASS_SCORE": "sigmoid", "MODEL.ZSMASK.PSEUDO_LABELER": "clip_kmeans",
          "MODEL.ZSMASK.AUXILIARY_HEADS": ["MultiScaleFeatureEnhancement"],
          "MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES": 3,
          "MODEL.SPLIT_MATCHING.PSEUDO_MASKS.WINDOW_SIZES": [1, 2],
          "MODEL.SPLIT_MATCHING.PSEUDO_MASKS.MIN_AREA": 0.02}
    sm.update(overrides)
    return tiny_model_cfg(tmp_path, **sm)


def _input_with_unannotated_region(seed, size=64):
    g = torch.Generator().manual_seed(seed)
    label = torch.full((size, size), 1, dtype=torch.long)
    label[: size // 2] = 0
    label[size // 2:, size // 2:] = 255  # unannotated: pseudo masks go here
    image = torch.rand(3, size, size, generator=g) * 60
    image[0][label == 0] += 180
    image[2][label == 255] += 180
    instances = Instances((size, size))
    instances.gt_classes = torch.tensor([0, 1])
    instances.gt_masks = label[None] == torch.tensor([0, 1])[:, None, None]
    return {"image": image, "instances": instances, "sem_seg": label, "vocabulary": ["red", "green"],
            "height": size, "width": size}


def test_model_trains_with_pseudo_targets_and_mfe_and_infers_with_random_queries(tmp_path):
    cfg = _sm_cfg(tmp_path, **{"MODEL.ZSMASK.RANDOM_QUERIES.NUM": 4})
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    batch = [_input_with_unannotated_region(0), _input_with_unannotated_region(1)]
    seen_pseudo = {}
    labeler_forward = model.pseudo_labeler.forward

    def spy(clip, images, unannotated):
        out = labeler_forward(clip, images, unannotated)
        seen_pseudo["masks"] = [p.masks for p in out]
        seen_pseudo["unannotated"] = unannotated
        return out

    model.pseudo_labeler.forward = spy
    losses = model(batch)
    assert {"loss_focal", "loss_mask", "loss_iou", "loss_dice", "loss_cos", "loss_mfe_ce",
            "loss_mfe_focal"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_cos"] > 0
    for masks, region in zip(seen_pseudo["masks"], seen_pseudo["unannotated"]):
        assert masks.shape[0] >= 1 and not (masks & ~region).any()  # only the unannotated quarter
    sum(losses.values()).backward()
    head = model.auxiliary_heads[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())

    model.eval()
    with torch.no_grad():
        images = model.preprocess_images(batch[:1])
        outputs = model.predict_queries(images)
        assert outputs["pred_embeddings"].shape[1] == 8 + 4  # learned + random queries
        first = model(batch[:1])[0]["sem_seg"]
        assert torch.equal(first, model(batch[:1])[0]["sem_seg"])  # reproducible
        assert first.shape == (2, 64, 64) and (first >= 0).all() and (first <= 8 + 4).all()
        model.random_query_seed = 1
        assert not torch.equal(first, model(batch[:1])[0]["sem_seg"])
        model.num_random_queries = 0
        assert model.predict_queries(images)["pred_embeddings"].shape[1] == 8


def test_candidate_calibration_divides_candidate_cosines_by_kappa_on_a_hand_made_matrix(tmp_path):
    cfg = _sm_cfg(tmp_path, **{"MODEL.ZSMASK.RANDOM_QUERIES.NUM": 2,
                               "MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION": True})
    model = build_model(cfg).eval()  # 8 learned queries: 5 seen, 3 candidates; then 2 random ones
    with torch.no_grad():
        model.classifier.logit_scale.fill_(math.log(10.0))
        model.classifier.logit_bias.fill_(-2.0)
    cosine = torch.tensor([[0.8, 0.1]] * 5 + [[0.2, 0.65]] * 5)  # (10 queries, 2 classes)
    logits = F.pad(10.0 * cosine - 2.0, (0, 1), value=-1e4)
    with pytest.raises(RuntimeError, match="kappa"):
        model.calibrate_candidates(logits)  # nothing measured yet
    model.region_text_alignment.copy_(torch.tensor([0.75 * 4, 4.0], dtype=torch.float64))  # kappa = 0.75
    calibrated = model.calibrate_candidates(logits)
    torch.testing.assert_close(calibrated[:5], logits[:5])  # seen queries untouched
    torch.testing.assert_close(calibrated[5:, :2], 10.0 * cosine[5:] / 0.75 - 2.0)  # candidates and random
    assert calibrated[5:, 2].eq(-1e4).all()
    # a candidate that only lost to a seen query by the modality gap now wins
    scores = calibrated[:, :2].sigmoid()
    assert scores[5, 1] > scores[0, 0] > logits[5, 1].sigmoid()


def test_training_measures_kappa_on_annotated_regions_without_changing_the_losses(tmp_path):
    batch = [_input_with_unannotated_region(0), _input_with_unannotated_region(1)]
    losses = {}
    for masks in (512, 0):  # measured, not measured: the same losses (no randomness used)
        cfg = _sm_cfg(tmp_path, **{"MODEL.SPLIT_MATCHING.ALIGNMENT_MASKS": masks})
        torch.manual_seed(0)
        model = build_model(cfg).train()
        losses[masks] = {k: v.item() for k, v in model(batch).items()}
        if masks:
            total, count = model.region_text_alignment.tolist()
            assert count == 4  # two annotated regions per image
            regions = [x["instances"].gt_masks for x in batch]
            raw = model.preprocess_images(batch, normalize=False).tensor
            embedded = torch.cat(model.pseudo_labeler.generator.region_embeddings(model.clip, raw, regions))
            text = model.text_embeddings(("red", "green"))[torch.tensor([0, 1, 0, 1])]
            assert total / count == pytest.approx(F.cosine_similarity(embedded, text).mean().item(), abs=1e-5)
            model(batch)
            assert model.region_text_alignment[1].item() == 8
            model.alignment_masks = 8
            model(batch)
            assert model.region_text_alignment[1].item() == 8  # frozen once enough regions were seen
            assert "region_text_alignment" in model.state_dict()
    assert losses[512] == losses[0]
    hungarian = build_model(tiny_model_cfg(tmp_path))
    assert hungarian.region_text_alignment is None and "region_text_alignment" not in hungarian.state_dict()
    with pytest.raises(ValueError, match="CANDIDATE_CALIBRATION"):
        build_model(tiny_model_cfg(tmp_path, **{"MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION": True}))


def test_sigmoid_scores_with_the_softmax_loss_is_a_config_error(tmp_path):
    cfg = tiny_model_cfg(tmp_path, **{"MODEL.ZSMASK.CLASS_SCORE": "sigmoid"})
    with pytest.raises(ValueError, match="focal_labels"):
        build_model(cfg)


@pytest.mark.parametrize("region_embedding", ["dense", "dense_mlp"])
def test_region_embedding_variants_train(tmp_path, region_embedding):
    cfg = _sm_cfg(tmp_path, **{"MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING": region_embedding,
                               "MODEL.ZSMASK.AUXILIARY_HEADS": []})
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    assert (model.pseudo_labeler.embedding_mlp is not None) == (region_embedding == "dense_mlp")
    losses = model([_input_with_unannotated_region(0)])
    sum(losses.values()).backward()
    if region_embedding == "dense_mlp":
        assert all(p.grad is not None for p in model.pseudo_labeler.embedding_mlp.parameters())


# ------------------------------------------------------------------ on-disk cache
def test_pseudo_mask_cache_reuses_identical_views_only_and_survives_damage(tmp_path, caplog):
    from detectron2.config import get_cfg

    from zsmask.config import add_zsmask_config
    from zsmask.modeling.clip import CLIPTextImageEncoder, register_clip_architecture
    from conftest import TINY_CLIP_CONFIG, TINY_CLIP_NAME

    register_clip_architecture(TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.CLIP.PRETRAINED = TINY_CLIP_NAME, ""
    torch.manual_seed(0)
    clip = CLIPTextImageEncoder(cfg)
    generator = PseudoMaskGenerator(window_sizes=[1, 2], min_area=0.02)
    labeler = CLIPKMeansPseudoLabeler(generator=generator, embed_dim=clip.embed_dim, cache_dir=str(tmp_path))
    torch.manual_seed(1)
    images = (torch.rand(2, 3, 64, 64) * 255).round()
    unannotated = torch.zeros(2, 64, 64, dtype=torch.bool)
    unannotated[:, 16:, 16:] = True
    fresh = generator(clip, images, unannotated)
    first = labeler(clip, images, unannotated)
    assert labeler.cache.misses == 2 and labeler.cache.hits == 0
    second = labeler(clip, images, unannotated)
    assert labeler.cache.hits == 2
    for a, b, c in zip(fresh, first, second):
        assert torch.equal(a.masks, b.masks) and torch.equal(a.masks, c.masks)
        torch.testing.assert_close(a.embeddings, c.embeddings)
    flipped = labeler(clip, images.flip(-1), unannotated.flip(-1))  # another view: a miss
    assert labeler.cache.misses == 4 and len(flipped) == 2
    # overlapping masks (two K-means scales) come back bit for bit
    overlapping = torch.zeros(3, 64, 64, dtype=torch.bool)
    overlapping[0, 16:, 16:40], overlapping[1, 16:, 30:], overlapping[2, 20:30, 20:60] = True, True, True
    other = PseudoMaskCache(str(tmp_path.parent / f"{tmp_path.name}_other"))
    key = other.key("overlap", images[0], unannotated[0])
    other.store(key, PseudoMasks(overlapping, torch.randn(3, clip.embed_dim)))
    assert torch.equal(other.load(key, "cpu").masks, overlapping)
    entries = sorted(str(p) for p in tmp_path.rglob("*.pt"))
    assert len(entries) == 4
    with open(entries[0], "wb") as f:
        f.write(b"damaged")
    labeler(clip, images, unannotated)
    labeler(clip, images.flip(-1), unannotated.flip(-1))
    assert "unreadable" in caplog.text and labeler.cache.misses == 5
    with torch.no_grad():
        clip.model.visual.proj.mul_(2)  # other CLIP weights: new keys
    labeler(clip, images, unannotated)
    assert labeler.cache.misses == 7


# ------------------------------------------------------------------ train_net.py on the toy world
def test_train_net_runs_split_matching_on_the_toy_world(tmp_path):
    logged = train_on_smoke_world(tmp_path, "split_matching.yaml", "toy_world_sm_smoke", "SOLVER.MAX_ITER", "6",
                                  "MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CACHE_DIR", str(tmp_path / "pseudo_cache"))
    train_rows = [row for row in logged if "loss_cos" in row]
    assert train_rows and all(np.isfinite(row["loss_mfe_ce"]) for row in train_rows)
    assert any((tmp_path / "pseudo_cache").rglob("*.pt"))


def test_train_net_runs_split_matchings_control_on_the_toy_world(tmp_path):
    """The control row (ablations/hungarian_sigmoid_focal_q24.yaml) trains with Split Matching's
    losses on all 24 queries and no pseudo masks."""
    logged = train_on_smoke_world(tmp_path, "ablations/hungarian_sigmoid_focal_q24.yaml", "toy_world_sm_control",
                                  "SOLVER.MAX_ITER", "4")
    train_rows = [row for row in logged if "loss_focal" in row]
    assert train_rows and all(np.isfinite(row["loss_focal"]) and np.isfinite(row["loss_iou"]) for row in train_rows)
    assert not any("loss_cos" in row or "loss_ce" in row for row in logged)
