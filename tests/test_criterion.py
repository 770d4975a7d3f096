"""SetCriterion: hand-computed loss values, deep-supervision keys, empty batches, changing
vocabulary, precomputed indices, extra registered losses, and gloo all_reduce of num_masks."""
import math
import uuid

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import get_cfg

from zsmask.config import add_zsmask_config
from zsmask.modeling.criterion import (
    CRITERION_LOSS_REGISTRY,
    SetCriterion,
    build_criterion,
    dice_loss,
    register_criterion_loss,
    sigmoid_bce_loss,
)
from zsmask.modeling.matcher import HungarianMatcher


class NoMatcher(torch.nn.Module):
    """Fails if called: the tests pass precomputed indices."""

    def forward(self, outputs, targets):
        raise AssertionError("matcher must not be called when indices are given")


def make_criterion(matcher=None, **kwargs):
    args = dict(
        matcher=matcher or NoMatcher(),
        weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        eos_coef=0.1,
        num_points=64,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    args.update(kwargs)
    return SetCriterion(**args)


def one_target_case(mask_logit, target_mask):
    """1 image, 2 queries, 3 classes; query 0 is matched to the single target (class 1)."""
    logits = torch.tensor([[[1.0, 2.0, 0.5, -1.0], [0.0, 0.3, -0.2, 1.5]]])
    masks = torch.full((1, 2, 8, 8), float(mask_logit))
    targets = [{"labels": torch.tensor([1]), "masks": target_mask[None]}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    return {"pred_logits": logits, "pred_masks": masks}, targets, indices


def test_cross_entropy_by_hand():
    outputs, targets, indices = one_target_case(0.0, torch.zeros(16, 16, dtype=torch.bool))
    losses = make_criterion()(outputs, targets, indices=indices)
    l0, l1 = outputs["pred_logits"][0].tolist()
    nll_matched = -(l0[1] - math.log(sum(math.exp(v) for v in l0)))  # target class 1
    nll_no_object = -(l1[3] - math.log(sum(math.exp(v) for v in l1)))  # class K = 3, weight 0.1
    expected = (1.0 * nll_matched + 0.1 * nll_no_object) / (1.0 + 0.1)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_of_constant_zero_logits_are_analytic():
    """Logit 0 everywhere (also at zero-padded borders): BCE = ln 2 for any target; with an
    empty target, dice = 1 - 1 / (P / 2 + 1)."""
    for target in (torch.zeros(16, 16, dtype=torch.bool), torch.rand(16, 16) > 0.5):
        outputs, targets, indices = one_target_case(0.0, target)
        losses = make_criterion()(outputs, targets, indices=indices)
        assert losses["loss_mask"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    outputs, targets, indices = one_target_case(0.0, torch.zeros(16, 16, dtype=torch.bool))
    losses = make_criterion()(outputs, targets, indices=indices)
    assert losses["loss_dice"].item() == pytest.approx(1.0 - 1.0 / (64 / 2 + 1), rel=1e-6)


def test_dice_perfect_and_inverse_mask():
    empty = torch.zeros(16, 16, dtype=torch.bool)
    outputs, targets, indices = one_target_case(-100.0, empty)  # confident and right
    assert make_criterion()(outputs, targets, indices=indices)["loss_dice"].item() == pytest.approx(0.0, abs=1e-6)
    outputs, targets, indices = one_target_case(100.0, empty)  # confident and wrong
    assert make_criterion()(outputs, targets, indices=indices)["loss_dice"].item() == pytest.approx(1.0, abs=0.02)

    # A real object at the prediction resolution, with uniform points: only points within a
    # pixel of its boundary (~3 %) read interpolated, hence imperfect, values. (Importance
    # sampling would pick exactly those points.)
    target = torch.zeros(64, 64, dtype=torch.bool)
    target[16:48, 12:40] = True
    logits = 100.0 * (2.0 * target.float() - 1.0)
    for sign, expected in ((1.0, 0.0), (-1.0, 1.0)):
        outputs = {"pred_logits": torch.zeros(1, 1, 3), "pred_masks": (sign * logits)[None, None]}
        losses = make_criterion(num_points=2000, importance_sample_ratio=0.0)(
            outputs,
            [{"labels": torch.tensor([0]), "masks": target[None]}],
            indices=[(torch.tensor([0]), torch.tensor([0]))],
        )
        assert losses["loss_dice"].item() == pytest.approx(expected, abs=0.03)


def test_loss_functions_on_points():
    labels = (torch.rand(3, 40) > 0.5).float()
    perfect = 50.0 * (2 * labels - 1)
    assert dice_loss(perfect, labels, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, labels, 3.0).item() == pytest.approx(1.0, abs=0.05)
    constant = torch.full((3, 40), 0.7)
    softplus = math.log1p(math.exp(0.7))
    expected = sum(softplus - 0.7 * row.mean().item() for row in labels) / 2.0
    assert sigmoid_bce_loss(constant, labels, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_deep_supervision_keys_and_weights_from_config():
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 3
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 32
    criterion = build_criterion(cfg)
    assert isinstance(criterion.matcher, HungarianMatcher) and criterion.eos_coef == 0.1
    g = torch.Generator().manual_seed(0)

    def prediction():
        return {
            "pred_logits": torch.randn(2, 5, 4, generator=g),
            "pred_masks": torch.randn(2, 5, 8, 8, generator=g),
        }

    outputs = prediction()
    outputs["aux_outputs"] = [prediction() for _ in range(3)]  # DEC_LAYERS + 1 predictions
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 32, 32, generator=g) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 32, 32, generator=g) > 0.5},
    ]
    losses = criterion(outputs, targets)
    names = ["loss_ce", "loss_mask", "loss_dice"]
    assert set(losses) == set(names + [f"{n}_{i}" for n in names for i in range(3)])
    assert set(losses) == set(criterion.weight_dict)
    assert criterion.weight_dict["loss_ce_2"] == 2.0 and criterion.weight_dict["loss_dice_0"] == 5.0

    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = False
    assert set(build_criterion(cfg).weight_dict) == set(names)


def test_batch_without_targets_gives_zero_mask_losses_with_graph():
    pred_masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    pred_logits = torch.randn(2, 4, 6, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}
    criterion = make_criterion(matcher=HungarianMatcher(num_points=16))
    losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, [empty, empty])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    sum(losses.values()).backward()
    assert pred_masks.grad is not None and torch.count_nonzero(pred_masks.grad) == 0
    assert torch.count_nonzero(pred_logits.grad) > 0


def test_image_without_targets_adds_only_to_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, masks = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    target = {"labels": torch.tensor([2]), "masks": torch.rand(1, 16, 16, generator=g) > 0.5}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}
    match = (torch.tensor([1]), torch.tensor([0]))
    criterion = make_criterion()
    torch.manual_seed(0)
    alone = criterion({"pred_logits": logits[:1], "pred_masks": masks[:1]}, [target], indices=[match])
    torch.manual_seed(0)
    both = criterion(
        {"pred_logits": logits, "pred_masks": masks},
        [target, empty],
        indices=[match, (torch.zeros(0, dtype=torch.int64),) * 2],
    )
    assert both["loss_mask"].item() == pytest.approx(alone["loss_mask"].item(), rel=1e-6)
    assert both["loss_dice"].item() == pytest.approx(alone["loss_dice"].item(), rel=1e-6)
    assert both["loss_ce"].item() != pytest.approx(alone["loss_ce"].item())


def test_vocabulary_size_changes_between_calls():
    criterion = make_criterion(matcher=HungarianMatcher(num_points=16))
    for num_classes in (3, 7, 2):
        outputs = {"pred_logits": torch.randn(1, 4, num_classes + 1), "pred_masks": torch.randn(1, 4, 8, 8)}
        targets = [{"labels": torch.tensor([num_classes - 1]), "masks": torch.rand(1, 8, 8) > 0.5}]
        losses = criterion(outputs, targets)
        assert all(torch.isfinite(v) for v in losses.values())


def test_registered_extra_loss_and_unknown_loss():
    name = f"constant_{uuid.uuid4().hex[:6]}"

    @register_criterion_loss(name)
    def constant_loss(criterion, outputs, targets, indices, num_masks):
        return {"loss_constant": outputs["pred_logits"].sum() * 0.0 + len(indices)}

    assert name in CRITERION_LOSS_REGISTRY
    criterion = make_criterion(losses=("labels", name))
    outputs = {"pred_logits": torch.randn(2, 3, 4), "pred_masks": torch.randn(2, 3, 8, 8)}
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)}] * 2
    indices = [(torch.tensor([0]), torch.tensor([0]))] * 2
    losses = criterion(outputs, targets, indices=indices)
    assert set(losses) == {"loss_ce", "loss_constant"} and losses["loss_constant"].item() == 2.0

    with pytest.raises(KeyError, match="registered losses: .*labels.*masks"):
        make_criterion(losses=("labels", "cosine_typo"))


def test_aux_indices_precomputed():
    outputs = {"pred_logits": torch.randn(1, 3, 4), "pred_masks": torch.randn(1, 3, 8, 8)}
    outputs["aux_outputs"] = [{"pred_logits": torch.randn(1, 3, 4), "pred_masks": torch.randn(1, 3, 8, 8)}]
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)}]
    match = [(torch.tensor([2]), torch.tensor([0]))]
    losses = make_criterion()(outputs, targets, indices=match, aux_indices=[match])
    assert {"loss_ce_0", "loss_mask_0", "loss_dice_0"} <= set(losses)
    with pytest.raises(ValueError, match="aux_indices"):
        make_criterion()(outputs, targets, indices=match, aux_indices=[])


def _num_masks_worker(rank, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        targets = [{"labels": torch.zeros(3 if rank == 0 else 0, dtype=torch.int64)}]
        results[rank] = make_criterion().get_num_masks(targets, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_num_masks_averaged_over_processes_with_gloo(tmp_path):
    """Rank 0 has 3 targets, rank 1 none: both normalise by (3 + 0) / 2 = 1.5."""
    results = mp.Manager().dict()
    # fork: the workers inherit the imported modules (spawning would re-import torch, ~15 s).
    mp.start_processes(
        _num_masks_worker, args=(str(tmp_path / "dist_init"), results), nprocs=2, join=True, start_method="fork"
    )
    assert dict(results) == {0: 1.5, 1: 1.5}
    assert make_criterion().get_num_masks([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0


def test_targets_of_different_sizes_are_zero_padded():
    """Targets are compared on the padded batch canvas: a smaller mask equals its padded copy."""
    g = torch.Generator().manual_seed(2)
    outputs = {
        "pred_logits": torch.randn(2, 3, 4, generator=g),
        "pred_masks": torch.randn(2, 3, 8, 8, generator=g),
    }
    small = torch.rand(1, 12, 10, generator=g) > 0.5
    padded = torch.zeros(1, 16, 16, dtype=torch.bool)
    padded[:, :12, :10] = small
    big = torch.rand(1, 16, 16, generator=g) > 0.5
    match = [(torch.tensor([0]), torch.tensor([0])), (torch.tensor([2]), torch.tensor([0]))]
    results = []
    for first in (small, padded):
        torch.manual_seed(0)
        targets = [{"labels": torch.tensor([1]), "masks": first}, {"labels": torch.tensor([0]), "masks": big}]
        results.append(make_criterion()(outputs, targets, indices=match))
    for name in ("loss_mask", "loss_dice"):
        assert results[0][name].item() == pytest.approx(results[1][name].item(), rel=1e-6)
