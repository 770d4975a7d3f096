"""AlignZeg parts landed so far: negative proposal selection (Fig. 4) and Predictive Bias
Correction's score suppression (Eq. 7)."""
import pytest
import torch

from zsmask.modeling.inference import suppress_seen_scores
from zsmask.modeling.matcher import HungarianMatcher, NegativeProposalSelector, select_negative_proposals


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
    selector = MATCHER_REGISTRY.get("negative_proposals")(cfg)
    assert selector.top_k == 50 and selector.mask_cost.cost_class == 0.0
    assert selector.mask_cost.cost_mask == cfg.MODEL.MASK_FORMER.MASK_WEIGHT
