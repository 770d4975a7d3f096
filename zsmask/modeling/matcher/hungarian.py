"""Hungarian matching of queries to target masks (Mask2Former, Cheng et al. 2022, Sec. 3.2.4).

The cost of assigning query ``q`` to target ``t`` is

    C[q, t] = w_class * (-p_q(c_t)) + w_mask * BCE(m_q, m_t) + w_dice * Dice(m_q, m_t)

with ``p_q`` the softmax class probabilities of the query, ``c_t`` the target class, and the
mask terms evaluated on ``num_points`` uniformly random points shared by all queries and
targets of one image (DETR's matching cost, Carion et al. 2020, with Mask2Former's point
sampling). The optimal one-to-one assignment is found per image with
``scipy.optimize.linear_sum_assignment``.

Unlike the reference implementation, which loops over images, the costs of all images are
computed in one batched pass (targets padded to the largest count in the batch) in float32,
and only the assignment itself runs per image on CPU. With the same RNG state the random
points, and therefore the assignments, are the same as Mask2Former's.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from detectron2.config import configurable

from ..point_sampling import point_sample_shared
from .build import register_matcher
from .costs import batch_dice_cost, batch_sigmoid_bce_cost

__all__ = ["HungarianMatcher"]


@register_matcher("hungarian")
class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising the Mask2Former matching cost.

    Queries left unassigned are supervised as "no object" by the criterion. When an image has
    more targets than queries, ``min(Q, T)`` pairs are returned (the cheapest subset of
    targets stays unmatched); an image without targets gets empty index tensors.
    """

    @configurable
    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 112 * 112,
    ):
        """
        Args:
            cost_class: weight of the classification cost (``-p_q(c_t)``).
            cost_mask: weight of the point-sampled sigmoid BCE cost.
            cost_dice: weight of the point-sampled dice cost.
            num_points: random points per image at which masks are compared.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher needs at least one non-zero cost weight")
        if num_points <= 0:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @classmethod
    def from_config(cls, cfg):
        return {
            "cost_class": cfg.MODEL.MASK_FORMER.CLASS_WEIGHT,
            "cost_mask": cfg.MODEL.MASK_FORMER.MASK_WEIGHT,
            "cost_dice": cfg.MODEL.MASK_FORMER.DICE_WEIGHT,
            "num_points": cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS,
        }

    def sample_point_coords(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B, P, 2) uniform points in [0, 1], one set per image.

        Drawn as one ``torch.rand(1, P, 2)`` per image in order, exactly as Mask2Former's
        matcher does, so that a seeded run gives the same points (and assignments) as it.
        """
        return torch.cat(
            [torch.rand(1, self.num_points, 2, device=device) for _ in range(batch_size)], dim=0
        )

    @torch.no_grad()
    def compute_cost_matrices(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: Sequence[Dict[str, torch.Tensor]],
        point_coords: Optional[torch.Tensor] = None,
    ) -> List[torch.Tensor]:
        """Matching cost of every (query, target) pair, for all images in one batched pass.

        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1) class logits, last column "no object";
                ``"pred_masks"`` (B, Q, h, w) mask logits.
            targets: B dicts with ``"labels"`` (T_b,) int64 in [0, K) and ``"masks"``
                (T_b, H, W) bool or float masks (any H, W: points are normalised).
            point_coords: optional (B, P, 2) points in [0, 1]; drawn with
                :meth:`sample_point_coords` when None.

        Returns:
            B float32 CPU tensors of shape (Q, T_b).

        Raises:
            ValueError: on malformed targets or labels outside [0, K).
            FloatingPointError: on non-finite costs (NaN / Inf in the predictions, i.e.
                diverged training), naming the images concerned.
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        batch_size, num_queries = pred_logits.shape[:2]
        num_classes = pred_logits.shape[-1] - 1
        device = pred_masks.device
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} target dicts for a batch of {batch_size} images")
        num_targets = [self._check_target(t, b) for b, t in enumerate(targets)]
        if point_coords is None:
            point_coords = self.sample_point_coords(batch_size, device)
        max_targets = max(num_targets, default=0)
        if max_targets == 0:
            return [torch.zeros(num_queries, 0) for _ in range(batch_size)]

        labels = torch.zeros(batch_size, max_targets, dtype=torch.int64, device=device)
        for b, (target, n) in enumerate(zip(targets, num_targets)):
            labels[b, :n] = target["labels"].to(device=device, dtype=torch.int64)
        labels_min, labels_max = (int(v) for v in labels.aminmax())
        if labels_min < 0 or labels_max >= num_classes:
            raise ValueError(
                f"target labels must lie in [0, {num_classes}) for pred_logits with "
                f"{num_classes} classes + no object; got values in [{labels_min}, {labels_max}]"
            )

        with torch.autocast(device_type=device.type, enabled=False):
            point_coords = point_coords.to(device=device, dtype=torch.float32)
            # (B, Q, P): every query mask of image b read at the points of image b.
            pred_points = torch.stack(
                [point_sample_shared(pred_masks[b].float(), point_coords[b]) for b in range(batch_size)])
            target_points = self._sample_target_points(targets, num_targets, point_coords)
            cost = self.pair_costs(pred_logits.float(), labels, pred_points, target_points)
        cost = cost.cpu()

        finite = torch.isfinite(cost)
        for b, n in enumerate(num_targets):
            finite[b, :, n:] = True  # padding columns are never used
        if not bool(finite.all()):
            bad_images = [b for b in range(batch_size) if not bool(finite[b].all())]
            # FloatingPointError, like detectron2's non-finite-loss check: training stops.
            raise FloatingPointError(
                f"non-finite matching cost in image(s) {bad_images}: pred_logits or pred_masks "
                "contain NaN/Inf (diverged training?); cannot compute a Hungarian assignment"
            )
        return [cost[b, :, :n] for b, n in enumerate(num_targets)]

    def pair_costs(self, pred_logits: torch.Tensor, labels: torch.Tensor, pred_points: torch.Tensor,
                   target_points: torch.Tensor) -> torch.Tensor:
        """Weighted cost of every (query, target) pair: ``pred_logits`` (B, Q, K + 1) fp32,
        ``labels`` (B, T) class indices, ``pred_points`` (B, Q, P) mask logits and
        ``target_points`` (B, T, P) target values at the shared points -> (B, Q, T).

        Mask2Former's: ``-softmax`` probability of the target class, sigmoid BCE and dice.
        Subclasses change the terms here and inherit the batching, checks and assignment."""
        class_prob = pred_logits.softmax(-1)  # (B, Q, K + 1)
        num_queries = pred_logits.shape[1]
        cost = -self.cost_class * torch.gather(class_prob, 2, labels[:, None, :].expand(-1, num_queries, -1))
        if self.cost_mask != 0:
            cost = cost + self.cost_mask * batch_sigmoid_bce_cost(pred_points, target_points)
        if self.cost_dice != 0:
            cost = cost + self.cost_dice * batch_dice_cost(pred_points, target_points)
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Assign queries to targets (see :meth:`compute_cost_matrices` for the inputs).

        Returns:
            B tuples ``(query_idx, target_idx)`` of int64 CPU tensors of length
            ``min(Q, T_b)``, sorted by query index; target ``target_idx[i]`` is assigned to
            query ``query_idx[i]``.
        """
        indices = []
        for cost in self.compute_cost_matrices(outputs, targets):
            if cost.shape[1] == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            query_idx, target_idx = linear_sum_assignment(cost.numpy())
            indices.append(
                (torch.as_tensor(query_idx, dtype=torch.int64), torch.as_tensor(target_idx, dtype=torch.int64))
            )
        return indices

    @staticmethod
    def _check_target(target: Dict[str, torch.Tensor], image_index: int) -> int:
        """Validate one target dict; return its number of targets T_b."""
        for key in ("labels", "masks"):
            if key not in target:
                raise ValueError(f"targets[{image_index}] has no {key!r} entry (keys: {sorted(target)})")
        num = len(target["labels"])
        masks = target["masks"]
        if masks.dim() != 3 or masks.shape[0] != num:
            raise ValueError(
                f"targets[{image_index}]['masks'] must be (T, H, W) with T = {num} labels, "
                f"got shape {tuple(masks.shape)}"
            )
        return num

    @staticmethod
    def _sample_target_points(
        targets: Sequence[Dict[str, torch.Tensor]], num_targets: List[int], point_coords: torch.Tensor
    ) -> torch.Tensor:
        """(B, T_max, P) target mask values at each image's points; zero rows pad to T_max."""
        batch_size, num_points = point_coords.shape[:2]
        sampled = point_coords.new_zeros(batch_size, max(num_targets), num_points)
        for b, (target, n) in enumerate(zip(targets, num_targets)):
            if n == 0:
                continue
            masks = target["masks"].to(device=point_coords.device, dtype=torch.float32)
            sampled[b, :n] = point_sample_shared(masks, point_coords[b])
        return sampled

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
