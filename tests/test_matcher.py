"""HungarianMatcher: optimality against brute force, batched costs against a per-image loop,
edge cases (no targets, more targets than queries, NaN), the registry, and Mask2Former parity."""
import importlib.util
import itertools
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from zsmask.config import add_zsmask_config
from zsmask.modeling.matcher import MATCHER_REGISTRY, HungarianMatcher, build_matcher

WEIGHTS = dict(cost_class=2.0, cost_mask=5.0, cost_dice=5.0)


def make_case(seed, num_queries, num_targets, num_classes=5, pred_size=8, target_size=16):
    """Random outputs and targets; ``num_targets`` is a list (one entry per image)."""
    g = torch.Generator().manual_seed(seed)
    batch = len(num_targets)
    outputs = {
        "pred_logits": torch.randn(batch, num_queries, num_classes + 1, generator=g),
        "pred_masks": 3 * torch.randn(batch, num_queries, pred_size, pred_size, generator=g),
    }
    targets = [
        {
            "labels": torch.randint(num_classes, (t,), generator=g),
            "masks": torch.rand(t, target_size, target_size, generator=g) > 0.5,
        }
        for t in num_targets
    ]
    return outputs, targets


def reference_costs(outputs, targets, point_coords, cost_class, cost_mask, cost_dice):
    """Per-image, per-pair cost matrices written directly from the definition (no batching)."""
    costs = []
    for b, target in enumerate(targets):
        grid = (2 * point_coords[b] - 1)[None, :, None, :]  # (1, P, 1, 2)
        prob = outputs["pred_logits"][b].softmax(-1)
        pred = F.grid_sample(outputs["pred_masks"][b][None], grid, align_corners=False)[0, :, :, 0]
        tgt = F.grid_sample(target["masks"].float()[None], grid, align_corners=False)[0, :, :, 0]
        cost = torch.zeros(pred.shape[0], tgt.shape[0])
        for q in range(pred.shape[0]):
            for t in range(tgt.shape[0]):
                bce = F.binary_cross_entropy_with_logits(pred[q], tgt[t])
                p = pred[q].sigmoid()
                dice = 1 - (2 * (p * tgt[t]).sum() + 1) / (p.sum() + tgt[t].sum() + 1)
                cls = -prob[q, target["labels"][t]]
                cost[q, t] = cost_class * cls + cost_mask * bce + cost_dice * dice
        costs.append(cost)
    return costs


def brute_force(cost):
    """Minimal total cost and its pairs over all one-to-one assignments of min(Q, T) pairs."""
    num_queries, num_targets = cost.shape
    best = (float("inf"), None)
    if num_queries >= num_targets:
        for queries in itertools.permutations(range(num_queries), num_targets):
            pairs = set(zip(queries, range(num_targets)))
            best = min(best, (sum(cost[q, t].item() for q, t in pairs), pairs), key=lambda x: x[0])
    else:
        for tgts in itertools.permutations(range(num_targets), num_queries):
            pairs = set(zip(range(num_queries), tgts))
            best = min(best, (sum(cost[q, t].item() for q, t in pairs), pairs), key=lambda x: x[0])
    return best


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    g = torch.Generator().manual_seed(100 + seed)
    num_queries = int(torch.randint(1, 7, (1,), generator=g))
    num_targets = torch.randint(0, 5, (3,), generator=g).tolist()
    outputs, targets = make_case(seed, num_queries, num_targets)
    matcher = HungarianMatcher(**WEIGHTS, num_points=50)

    torch.manual_seed(seed)
    indices = matcher(outputs, targets)
    torch.manual_seed(seed)  # the matcher draws one (1, P, 2) set of points per image
    coords = torch.cat([torch.rand(1, 50, 2) for _ in targets])
    ref_costs = reference_costs(outputs, targets, coords, **WEIGHTS)
    for cost, (query_idx, target_idx), n in zip(ref_costs, indices, num_targets):
        best_cost, best_pairs = brute_force(cost)
        assert len(query_idx) == len(target_idx) == min(num_queries, n)
        if n == 0:
            continue
        found = sum(cost[q, t].item() for q, t in zip(query_idx.tolist(), target_idx.tolist()))
        assert found == pytest.approx(best_cost, abs=1e-4)
        assert set(zip(query_idx.tolist(), target_idx.tolist())) == best_pairs


def test_batched_costs_equal_per_image_loop():
    outputs, targets = make_case(7, 6, [3, 0, 4, 1], target_size=20)
    targets[3]["masks"] = targets[3]["masks"].float() * 0.7  # soft masks are allowed too
    matcher = HungarianMatcher(**WEIGHTS, num_points=64)
    coords = torch.rand(4, 64, 2)
    batched = matcher.compute_cost_matrices(outputs, targets, point_coords=coords)
    for ours, ref in zip(batched, reference_costs(outputs, targets, coords, **WEIGHTS)):
        assert ours.shape == ref.shape and ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_targets_of_different_sizes_per_image():
    outputs, targets = make_case(8, 4, [2, 2], target_size=16)
    targets[1]["masks"] = torch.rand(2, 24, 20) > 0.5
    matcher = HungarianMatcher(**WEIGHTS, num_points=32)
    coords = torch.rand(2, 32, 2)
    batched = matcher.compute_cost_matrices(outputs, targets, point_coords=coords)
    for ours, ref in zip(batched, reference_costs(outputs, targets, coords, **WEIGHTS)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_output_format_sorted_int64_cpu():
    outputs, targets = make_case(3, 6, [4, 2])
    for query_idx, target_idx in HungarianMatcher(**WEIGHTS, num_points=40)(outputs, targets):
        assert query_idx.dtype == target_idx.dtype == torch.int64
        assert query_idx.device.type == "cpu"
        assert torch.equal(query_idx, query_idx.sort().values)
        assert len(set(query_idx.tolist())) == len(query_idx)
        assert len(set(target_idx.tolist())) == len(target_idx)


def test_images_without_targets():
    outputs, targets = make_case(1, 5, [0, 3, 0])
    indices = HungarianMatcher(**WEIGHTS, num_points=20)(outputs, targets)
    assert [len(q) for q, _ in indices] == [0, 3, 0]
    assert indices[0][0].dtype == indices[0][1].dtype == torch.int64

    outputs, targets = make_case(2, 5, [0, 0])
    indices = HungarianMatcher(**WEIGHTS, num_points=20)(outputs, targets)
    assert all(len(q) == len(t) == 0 for q, t in indices)


def test_more_targets_than_queries_assigns_every_query():
    outputs, targets = make_case(4, 2, [4])
    ((query_idx, target_idx),) = HungarianMatcher(**WEIGHTS, num_points=30)(outputs, targets)
    assert query_idx.tolist() == [0, 1]
    assert len(set(target_idx.tolist())) == 2


def test_costs_are_float32_under_autocast():
    outputs, targets = make_case(5, 6, [3, 2])
    matcher = HungarianMatcher(**WEIGHTS, num_points=40)
    coords = torch.rand(2, 40, 2)
    plain = matcher.compute_cost_matrices(outputs, targets, point_coords=coords)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = matcher.compute_cost_matrices(outputs, targets, point_coords=coords)
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)


def test_non_finite_predictions_raise():
    outputs, targets = make_case(6, 3, [1, 2])
    outputs["pred_masks"][1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite matching cost in image\(s\) \[1\]"):
        HungarianMatcher(**WEIGHTS, num_points=20)(outputs, targets)


def test_bad_targets_raise():
    outputs, targets = make_case(6, 3, [2])
    matcher = HungarianMatcher(**WEIGHTS, num_points=20)
    with pytest.raises(ValueError, match="labels must lie in"):
        matcher(outputs, [{"labels": torch.tensor([0, 5]), "masks": targets[0]["masks"]}])
    with pytest.raises(ValueError, match="must be \\(T, H, W\\)"):
        matcher(outputs, [{"labels": torch.tensor([0]), "masks": targets[0]["masks"]}])
    with pytest.raises(ValueError, match="2 target dicts for a batch of 1"):
        matcher(outputs, targets * 2)


def test_registry_builds_hungarian_from_config():
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 77
    matcher = build_matcher(cfg)
    assert "hungarian" in MATCHER_REGISTRY
    assert isinstance(matcher, HungarianMatcher)
    assert (matcher.cost_class, matcher.cost_mask, matcher.cost_dice, matcher.num_points) == (2.0, 5.0, 5.0, 77)


def test_unknown_matcher_lists_registered_names():
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.ZSMASK.MATCHER = "hungarain"
    with pytest.raises(KeyError, match="'hungarain'.*registered matchers: .*hungarian"):
        build_matcher(cfg)


@pytest.mark.skipif(importlib.util.find_spec("mask2former") is None, reason="maskformer2 peer not installed")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # the peer's torch.cuda.amp.autocast
def test_same_assignments_as_mask2former():
    """Seeded identically, both matchers draw the same points and return the same pairs."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from peers import load_peer_module

    peer = load_peer_module("modeling/matcher.py", "peer_matcher").HungarianMatcher(**WEIGHTS, num_points=200)
    outputs, targets = make_case(9, 10, [4, 1, 6], num_classes=20, pred_size=16, target_size=64)
    torch.manual_seed(0)
    expected = peer(outputs, targets)
    torch.manual_seed(0)
    ours = HungarianMatcher(**WEIGHTS, num_points=200)(outputs, targets)
    for (q_ours, t_ours), (q_peer, t_peer) in zip(ours, expected):
        assert torch.equal(q_ours, q_peer) and torch.equal(t_ours, t_peer)
