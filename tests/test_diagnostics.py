"""Evaluation diagnostics on crafted predictions with counts known by hand."""
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from zsmask.evaluation.diagnostics import (
    auroc,
    boundary_counts,
    boundary_f_score,
    proposal_region_labels,
    unseen_pixel_outcomes,
)
from zsmask.evaluation.zero_shot_evaluator import GeneralizedZeroShotSemSegEvaluator

UNSEEN = [2, 3]  # classes 0 and 1 are seen


def test_unseen_pixel_outcomes_count_each_case():
    gt = np.array([[2, 2, 2, 2], [3, 3, 3, 0], [1, 255, 2, 3]])
    pred = np.array([[2, 2, 3, 0], [3, 1, 2, 0], [0, 2, 1, 3]])
    none = np.zeros_like(gt, dtype=bool)
    none[2, 3] = True  # an unseen pixel predicted right by argmax but claimed by no class
    # unseen gt pixels: row 0 (4), row 1 columns 0-2 (3), row 2 columns 2-3 (2) = 9
    # right: (0,0) (0,1) (1,0) = 3; other unseen: (0,2) (1,2) = 2; seen: (0,3) (1,1) (2,2) = 3; no class: 1
    counts = unseen_pixel_outcomes(pred, none, gt, UNSEEN)
    assert counts.tolist() == [3, 2, 3, 1]


def test_boundary_counts_and_f_score_by_hand():
    gt = np.zeros((1, 10), dtype=np.int64)
    gt[0, 5:] = 1  # one boundary pixel: column 4 (its right neighbour differs)
    pred = np.zeros((1, 10), dtype=np.int64)
    pred[0, 7:] = 1  # boundary at column 6: 2 px from the ground truth's
    assert boundary_counts(pred, gt, tolerance=3).tolist() == [1, 1, 1, 1]
    assert boundary_counts(pred, gt, tolerance=1).tolist() == [0, 1, 0, 1]
    pred[0, 2] = 1  # two more predicted boundary pixels: columns 1 and 2, at 3 and 2 px
    assert boundary_counts(pred, gt, tolerance=2).tolist() == [2, 3, 1, 1]
    assert boundary_f_score(np.array([2, 3, 1, 1])) == pytest.approx(100 * 2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert np.isnan(boundary_f_score(np.array([0, 0, 0, 4])))
    ignored = gt.copy()
    ignored[0, 0] = 255  # pixels within 3 px of an ignored pixel are left out
    assert boundary_counts(pred, ignored, tolerance=3).tolist() == [1, 1, 1, 1]


def test_auroc_against_pairwise_counting():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    positive = np.array([True, False, True, False, False])
    # pairs (positive, negative): 0.9 beats all 3; 0.8 ties one 0.8 and beats 0.3 and 0.1 -> 2.5
    assert auroc(scores, positive) == pytest.approx(100 * (3 + 2.5) / 6)
    assert np.isnan(auroc(scores, np.zeros(5, bool)))
    rng = np.random.RandomState(0)
    s, p = rng.rand(200), rng.rand(200) < 0.3
    pairs = [(a > b) + 0.5 * (a == b) for a in s[p] for b in s[~p]]
    assert auroc(s, p) == pytest.approx(100 * np.mean(pairs))


def test_proposals_are_assigned_to_their_best_region():
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:, 2:] = 2  # left half seen class 0, right half unseen class 2
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :, 2:] = True       # the unseen region exactly: IoU 1
    masks[1, 0, :] = True        # 2 px on each region: IoU 2/10 with both -> the first (seen) region
    masks[2, :, :3] = True       # 8 px of seen (IoU 8/12), 4 px of unseen (IoU 4/16)
    on_unseen, matched, valid = proposal_region_labels(masks, gt, UNSEEN)
    assert on_unseen.tolist() == [True, False, False]
    assert matched.tolist() == [True, False, True] and valid.all()


def test_evaluator_reports_diagnostics_from_outputs():
    name = "diagnostics_crafted_test"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c", "d"], seen_classes=[0, 1], unseen_classes=[2, 3],
                                  ignore_label=255)
    evaluator = GeneralizedZeroShotSemSegEvaluator(name, distributed=False)
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:, 2:] = 2
    scores = torch.zeros(4, 4, 4)
    scores[0, :, :2] = 1.0  # seen half right
    scores[2, :2, 2:] = 1.0  # unseen: top 4 px right
    scores[1, 2:, 2] = 1.0   # 2 px as seen class 1
    scores[3, 3, 3] = 0.05   # 1 px claimed by no class (highest score 0.05 < 0.1); (2, 3) likewise (all 0)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :, 2:] = True
    masks[1, :, :2] = True
    outputs = [{"sem_seg": scores, "proposals": {"masks": masks, "indicator": torch.tensor([0.9, 0.2])}}]
    evaluator.process([{"sem_seg_gt": gt, "file_name": "x"}], outputs)
    res = evaluator.evaluate()["sem_seg"]
    assert res["unseen_as_right_unseen"] == pytest.approx(100 * 4 / 8)
    assert res["unseen_as_seen"] == pytest.approx(100 * 2 / 8)
    assert res["unseen_as_no_class"] == pytest.approx(100 * 2 / 8)
    assert res["unseen_as_other_unseen"] == 0.0
    assert res["indicator_AUROC_matched"] == 100.0  # the unseen proposal scores higher
    assert np.isnan(res["indicator_AUROC_rest"])
    assert np.isfinite(res["boundary_F"])


def test_bootstrap_standard_error_matches_the_resampling_distribution():
    from zsmask.evaluation.diagnostics import bootstrap_standard_errors

    per_image = np.array([[[1]], [[3]]])  # two images; the metric is the summed count
    se = bootstrap_standard_errors(per_image, lambda c: {"x": float(c[0, 0])}, ["x"], resamples=4000)
    # a resample sums two draws of {1, 3}: 2, 4, 6 with probabilities 1/4, 1/2, 1/4 -> std sqrt(2)
    assert se["x"] == pytest.approx(np.sqrt(2), rel=0.05)
    same = np.stack([np.eye(3, dtype=np.int64)] * 5)
    assert bootstrap_standard_errors(same, lambda c: {"x": float(c.trace())}, ["x"])["x"] == 0.0


def test_paired_bootstrap_cancels_what_two_models_share_per_image():
    from zsmask.evaluation.diagnostics import bootstrap_standard_errors, paired_bootstrap_standard_errors

    metric = lambda c: {"x": float(c[0, 0])}  # noqa: E731  (the summed count: linear, so exact)
    a = np.array([[[1]], [[3]], [[10]]])
    b = np.array([[[0]], [[3]], [[10]]])  # per-image differences (1, 0, 0)
    se = paired_bootstrap_standard_errors(a, b, metric, ["x"], resamples=4000)
    # the difference sums 3 draws of {1, 0, 0}: binomial(3, 1/3) -> std sqrt(3 * 1/3 * 2/3) = sqrt(2/3)
    assert se["x"] == pytest.approx(np.sqrt(2 / 3), rel=0.05)
    assert bootstrap_standard_errors(a, metric, ["x"], resamples=4000)["x"] > 3 * se["x"]  # scene difficulty
    assert paired_bootstrap_standard_errors(a, a, metric, ["x"])["x"] == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap_standard_errors(a, b[:2], metric, ["x"])
