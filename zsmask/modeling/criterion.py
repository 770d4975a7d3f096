"""Set-prediction losses of Mask2Former (Cheng et al. 2022, Sec. 3.2.4 and 4).

After the matcher has assigned queries to targets, :class:`SetCriterion` computes

    L = w_ce * L_ce + w_mask * L_bce + w_dice * L_dice

on the final prediction and, with deep supervision, on every auxiliary prediction of the
decoder. ``L_ce`` is a cross-entropy over all queries (unmatched queries are supervised as
"no object", down-weighted by ``eos_coef``); ``L_bce`` and ``L_dice`` compare matched mask
pairs on points sampled by uncertainty (PointRend importance sampling). The classifier is
open-vocabulary, so the number of classes ``K`` is read from ``pred_logits`` on every call.

Losses are looked up by name in :data:`CRITERION_LOSS_REGISTRY`; methods register extra ones
with :func:`register_criterion_loss` (declaring the config key that weights each of their
outputs) and configs list them in ``MODEL.ZSMASK.LOSSES``, or name a boolean config key that
switches them on (``enabled_by``). Split Matching's (Chen et al., Eq. 3) are registered here
too: ``focal_labels`` (sigmoid focal classification), ``iou_dice_masks`` (soft IoU + dice) and
``candidate_cosine`` (L_cos); so are AlignZeg's (Ge et al., Eq. 8): ``class_indicator`` (L_bc),
``virtual_features`` (L_vir) and ``background_diversity`` (L_reg).
"""
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from .matcher import build_matcher
from .point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = [
    "SetCriterion",
    "build_criterion",
    "build_weight_dict",
    "CRITERION_LOSS_REGISTRY",
    "register_criterion_loss",
    "configured_losses",
    "background_diversity_loss",
    "mix_features",
    "sigmoid_bce_loss",
    "dice_loss",
    "soft_iou_loss",
    "sigmoid_focal_loss",
]

Indices = Sequence[Tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[
    ["SetCriterion", Dict[str, torch.Tensor], Sequence[Dict[str, torch.Tensor]], Indices, float],
    Dict[str, torch.Tensor],
]

CRITERION_LOSS_REGISTRY = Registry("ZSMASK_CRITERION_LOSS")
CRITERION_LOSS_REGISTRY.__doc__ = """
Loss functions of :class:`SetCriterion`, keyed by the names given in its ``losses``.
Each is called as ``fn(criterion, outputs, targets, indices, num_masks)`` for one prediction
level and returns a dict of un-weighted scalar losses (the criterion adds the ``_i`` suffix
for auxiliary levels).
"""


# registered loss name -> {output key: dotted config key of its weight}
LOSS_WEIGHT_KEYS: Dict[str, Dict[str, str]] = {}
# registered loss name -> dotted boolean config key that adds it to the configured losses
LOSS_SWITCH_KEYS: Dict[str, str] = {}


def register_criterion_loss(name: str, weights: Optional[Mapping[str, str]] = None,
                            enabled_by: Optional[str] = None) -> Callable[[LossFn], LossFn]:
    """Decorator: register a loss function in :data:`CRITERION_LOSS_REGISTRY` under ``name``.

    ``weights`` maps each loss the function returns to the config key of its weight (e.g.
    ``{"loss_cos": "MODEL.SPLIT_MATCHING.COSINE_WEIGHT"}``); :func:`build_criterion` reads them.
    ``enabled_by`` names a boolean config key (e.g. ``"MODEL.ALIGNZEG.FES.ENABLED"``) that adds
    the loss to ``MODEL.ZSMASK.LOSSES`` when True, so one switch turns a method part on.
    """

    def deco(loss_fn: LossFn) -> LossFn:
        CRITERION_LOSS_REGISTRY._do_register(name, loss_fn)
        LOSS_WEIGHT_KEYS[name] = dict(weights or {})
        if enabled_by:
            LOSS_SWITCH_KEYS[name] = enabled_by
        return loss_fn

    return deco


def _config_node(cfg, dotted_key: str):
    node = cfg
    for part in dotted_key.split("."):
        node = getattr(node, part)
    return node


def _config_value(cfg, dotted_key: str) -> float:
    return float(_config_node(cfg, dotted_key))


def configured_losses(cfg) -> List[str]:
    """``MODEL.ZSMASK.LOSSES`` followed by the registered losses whose ``enabled_by`` switch is on."""
    losses = list(cfg.MODEL.ZSMASK.LOSSES)
    losses += [name for name, key in LOSS_SWITCH_KEYS.items() if bool(_config_node(cfg, key)) and name not in losses]
    return losses


def sigmoid_bce_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sigmoid BCE averaged over points, summed over masks, divided by ``num_masks``.

    Args:
        point_logits: (N, P) mask logits of N matched predictions.
        point_labels: (N, P) target values in [0, 1].
        num_masks: normaliser (average number of target masks per process).
    """
    loss = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss ``1 - (2 |p * y| + 1) / (|p| + |y| + 1)`` summed over masks / ``num_masks``.

    Args:
        point_logits: (N, P) mask logits (``p = sigmoid(logits)``).
        point_labels: (N, P) target values ``y`` in [0, 1].
        num_masks: normaliser (average number of target masks per process).
    """
    prob = point_logits.sigmoid()
    numerator = 2.0 * (prob * point_labels).sum(-1)
    denominator = prob.sum(-1) + point_labels.sum(-1)
    return (1.0 - (numerator + 1.0) / (denominator + 1.0)).sum() / num_masks


def soft_iou_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Soft IoU (Jaccard) loss ``1 - (|p * y| + 1) / (|p| + |y| - |p * y| + 1)`` summed over
    masks / ``num_masks`` (Split Matching's mask loss, with dice).

    Args:
        point_logits: (N, P) mask logits (``p = sigmoid(logits)``).
        point_labels: (N, P) target values ``y`` in [0, 1].
        num_masks: normaliser (average number of target masks per process).
    """
    prob = point_logits.sigmoid()
    intersection = (prob * point_labels).sum(-1)
    union = prob.sum(-1) + point_labels.sum(-1) - intersection
    return (1.0 - (intersection + 1.0) / (union + 1.0)).sum() / num_masks


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017, Eq. 5), same shape as ``logits``:
    ``-alpha_t (1 - p_t)^gamma log(p_t)``; ``alpha < 0`` disables the alpha weighting."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def build_weight_dict(main_weights: Mapping[str, float], num_aux_outputs: int) -> Dict[str, float]:
    """``main_weights`` (loss name -> weight) plus ``<name>_<i>`` copies for the
    ``num_aux_outputs`` auxiliary predictions (i = 0 .. num_aux_outputs - 1)."""
    weight_dict = dict(main_weights)
    for i in range(num_aux_outputs):
        weight_dict.update({f"{name}_{i}": weight for name, weight in main_weights.items()})
    return weight_dict


def _matched_query_index(indices: Indices, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(batch_idx, query_idx) of all matched queries, image by image, on ``device``."""
    batch_idx = torch.cat([torch.full_like(query, b) for b, (query, _) in enumerate(indices)])
    query_idx = torch.cat([query for query, _ in indices])
    return batch_idx.to(device), query_idx.to(device)


def _matched_target_masks(targets: Sequence[Dict[str, torch.Tensor]], indices: Indices) -> torch.Tensor:
    """(N, H, W) target masks of the matched pairs, in the order of :func:`_matched_query_index`.

    Masks of images with different sizes are zero-padded at the bottom / right to the largest
    size, as the images of a batch are padded before the predictions are made.
    """
    matched = [t["masks"][target_idx.to(t["masks"].device)] for t, (_, target_idx) in zip(targets, indices)]
    height = max(m.shape[-2] for m in matched)
    width = max(m.shape[-1] for m in matched)
    matched = [
        m if m.shape[-2:] == (height, width) else F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]))
        for m in matched
    ]
    return torch.cat(matched)


def _matched_labels(targets: Sequence[Dict[str, torch.Tensor]], indices: Indices, device) -> torch.Tensor:
    """(N,) target classes of the matched pairs, in the order of :func:`_matched_query_index`."""
    labels = torch.cat([t["labels"][target_idx.to(t["labels"].device)] for t, (_, target_idx) in zip(targets, indices)])
    return labels.to(device=device, dtype=torch.int64)


@register_criterion_loss("labels", weights={"loss_ce": "MODEL.MASK_FORMER.CLASS_WEIGHT"})
def loss_labels(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """Cross-entropy over all queries: matched ones to their target class, the others to the
    "no object" class K, whose weight is ``criterion.eos_coef`` (weighted mean over queries).

    Uses ``outputs["pred_logits"]`` (B, Q, K + 1); K may change from call to call.
    """
    logits = outputs["pred_logits"].float()
    num_classes = logits.shape[-1] - 1
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    batch_idx, query_idx = _matched_query_index(indices, logits.device)
    target_classes[batch_idx, query_idx] = _matched_labels(targets, indices, logits.device)
    class_weight = logits.new_ones(num_classes + 1)
    class_weight[-1] = criterion.eos_coef
    return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, class_weight)}


def _matched_point_logits_and_labels(criterion, outputs, targets, indices):
    """Matched mask logits and targets at importance-sampled points: two (N, P) tensors, or
    None when nothing is matched. The points are normalised, so predictions need no upsampling."""
    pred_masks = outputs["pred_masks"]
    batch_idx, query_idx = _matched_query_index(indices, pred_masks.device)
    if query_idx.numel() == 0:
        return None
    matched_logits = pred_masks[batch_idx, query_idx][:, None].float()  # (N, 1, h, w)
    matched_targets = _matched_target_masks(targets, indices).to(matched_logits)[:, None]  # (N, 1, H, W)
    with torch.no_grad():
        point_coords = get_uncertain_point_coords_with_randomness(
            matched_logits,
            calculate_uncertainty,
            criterion.num_points,
            criterion.oversample_ratio,
            criterion.importance_sample_ratio,
        )
        point_labels = point_sample(matched_targets, point_coords).squeeze(1)  # (N, P)
    point_logits = point_sample(matched_logits, point_coords).squeeze(1)  # (N, P)
    return point_logits, point_labels


@register_criterion_loss("masks", weights={"loss_mask": "MODEL.MASK_FORMER.MASK_WEIGHT",
                                           "loss_dice": "MODEL.MASK_FORMER.DICE_WEIGHT"})
def loss_masks(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """Sigmoid BCE and dice between matched masks on importance-sampled points.

    Uses ``outputs["pred_masks"]`` (B, Q, h, w) logits and ``targets[b]["masks"]`` (T_b, H, W).
    Without any matched pair the losses are zeros that stay connected to the graph.
    """
    matched = _matched_point_logits_and_labels(criterion, outputs, targets, indices)
    if matched is None:
        zero = outputs["pred_masks"].sum() * 0.0
        return {"loss_mask": zero, "loss_dice": zero.clone()}
    return {
        "loss_mask": sigmoid_bce_loss(*matched, num_masks),
        "loss_dice": dice_loss(*matched, num_masks),
    }


@register_criterion_loss("iou_dice_masks", weights={"loss_mask": "MODEL.MASK_FORMER.MASK_WEIGHT",
                                                    "loss_iou": "MODEL.SPLIT_MATCHING.IOU_WEIGHT",
                                                    "loss_dice": "MODEL.MASK_FORMER.DICE_WEIGHT"})
def loss_iou_dice_masks(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """Split Matching's L_mask (Eq. 3): soft IoU and dice between matched masks, plus
    Mask2Former's sigmoid BCE (weight ``MODEL.MASK_FORMER.MASK_WEIGHT``; 0 gives IoU + dice
    alone), on the same importance-sampled points as :func:`loss_masks`."""
    matched = _matched_point_logits_and_labels(criterion, outputs, targets, indices)
    if matched is None:
        zero = outputs["pred_masks"].sum() * 0.0
        return {"loss_mask": zero, "loss_iou": zero.clone(), "loss_dice": zero.clone()}
    return {
        "loss_mask": sigmoid_bce_loss(*matched, num_masks),
        "loss_iou": soft_iou_loss(*matched, num_masks),
        "loss_dice": dice_loss(*matched, num_masks),
    }


@register_criterion_loss("focal_labels", weights={"loss_focal": "MODEL.MASK_FORMER.CLASS_WEIGHT"})
def loss_focal_labels(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """Split Matching's L_cls (Eq. 3): sigmoid focal loss of every query against every class of
    ``pred_logits`` (B, Q, C + 1) except "no object": one-hot at the matched target's class,
    all zeros for unmatched queries; summed and divided by ``num_masks`` (Deformable DETR).
    Padded class columns (see ``VocabularyClassifier.joint_logits``) contribute nothing."""
    logits = outputs["pred_logits"][..., :-1].float()
    one_hot = torch.zeros_like(logits)
    batch_idx, query_idx = _matched_query_index(indices, logits.device)
    one_hot[batch_idx, query_idx, _matched_labels(targets, indices, logits.device)] = 1.0
    loss = sigmoid_focal_loss(logits, one_hot, criterion.focal_alpha, criterion.focal_gamma)
    return {"loss_focal": loss.sum() / num_masks}


@register_criterion_loss("candidate_cosine", weights={"loss_cos": "MODEL.SPLIT_MATCHING.COSINE_WEIGHT"})
def loss_candidate_cosine(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """Split Matching's L_cos = 1 - cos(V'_u, C_u): the class embedding of every query matched
    to a pseudo mask against that mask's region embedding, averaged over those pairs.

    Uses ``outputs["pred_embeddings"]`` (B, Q, D) and ``targets[b]["is_pseudo"]`` (T,) with
    ``targets[b]["embeddings"]`` (T, D) (the class embedding of every target)."""
    embeddings = outputs["pred_embeddings"]
    predicted, region = [], []
    for b, (target, (query_idx, target_idx)) in enumerate(zip(targets, indices)):
        target_idx = target_idx.to(target["is_pseudo"].device)
        pseudo = target["is_pseudo"][target_idx]
        predicted.append(embeddings[b, query_idx.to(embeddings.device)[pseudo.to(embeddings.device)]])
        region.append(target["embeddings"][target_idx[pseudo]].to(embeddings))
    predicted, region = torch.cat(predicted), torch.cat(region)
    if predicted.shape[0] == 0:
        return {"loss_cos": embeddings.sum() * 0.0}
    cosine = F.cosine_similarity(predicted.float(), region.float(), dim=-1)
    return {"loss_cos": (1.0 - cosine).mean()}


def _seen_matches(targets, indices, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch_idx, query_idx, labels) of the queries matched to annotated (not pseudo) targets."""
    batch_idx, query_idx = _matched_query_index(indices, device)
    labels = _matched_labels(targets, indices, device)
    pseudo = [t["is_pseudo"][target_idx.to(t["is_pseudo"].device)] if "is_pseudo" in t
              else torch.zeros(len(target_idx), dtype=torch.bool) for t, (_, target_idx) in zip(targets, indices)]
    seen = ~torch.cat(pseudo).to(device) if pseudo else torch.zeros(0, dtype=torch.bool, device=device)
    return batch_idx[seen], query_idx[seen], labels[seen]


@register_criterion_loss("class_indicator", weights={"loss_bc": "MODEL.ALIGNZEG.PBC.WEIGHT"},
                         enabled_by="MODEL.ALIGNZEG.PBC.ENABLED")
def loss_class_indicator(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """AlignZeg's L_bc (Eq. 6): BCE of the class indicator ``outputs["pred_indicator"]`` (B, Q)
    logits against the labels of ``criterion.proposal_selector`` (0: matched to a seen class,
    1: negative proposal, -1: ignored), averaged over the selected proposals. Predictions
    without an indicator (auxiliary levels) add nothing."""
    if "pred_indicator" not in outputs:
        return {}
    if criterion.proposal_selector is None:
        raise ValueError("the 'class_indicator' loss needs a proposal selector (MODEL.ALIGNZEG.PBC.SELECTOR)")
    logits = outputs["pred_indicator"].float()
    labels = torch.stack(criterion.proposal_selector(outputs, targets, indices)).to(logits.device)
    selected = labels >= 0
    if not selected.any():
        return {"loss_bc": logits.sum() * 0.0}
    return {"loss_bc": F.binary_cross_entropy_with_logits(logits[selected], labels[selected].float())}


@register_criterion_loss("virtual_features", weights={"loss_vir": "MODEL.ALIGNZEG.FES.WEIGHT"},
                         enabled_by="MODEL.ALIGNZEG.FES.ENABLED")
def loss_virtual_features(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """AlignZeg's Feature Expansion, L_vir (Eqs. 2, 3).

    The class embeddings F_cls of the queries matched to seen targets in the batch and their
    classes' text embeddings T^{b,s} are mixed with a shuffled copy, F^v = β F + (1 - β) F',
    T^v = β T + (1 - β) T' (β ~ Beta(α, α), one per batch); each virtual feature's logits are
    [F^v·T^T, F^v·T^v^T] (the classifier's scaled cosine) and its label is the last one, C.
    Needs ``outputs["classifier"]`` and ``outputs["text_embeddings"]`` (K, D), which the
    meta-architecture adds to the final prediction only; fewer than two features give zero.
    """
    if "classifier" not in outputs:
        return {}
    embeddings = outputs["pred_embeddings"]
    classifier, text = outputs["classifier"], outputs["text_embeddings"].to(embeddings)
    batch_idx, query_idx, labels = _seen_matches(targets, indices, embeddings.device)
    if labels.numel() < 2:
        return {"loss_vir": embeddings.sum() * 0.0}
    features, prototypes = embeddings[batch_idx, query_idx], text[labels]
    virtual_features, virtual_prototypes = mix_features(features, prototypes, criterion.mixup_alpha)
    logits = torch.cat((classifier.scaled_cosine(virtual_features[None], text[None])[0],
                        classifier.scaled_cosine(virtual_features[:, None], virtual_prototypes[:, None])[:, 0]), dim=-1)
    target = torch.full((logits.shape[0],), text.shape[0], dtype=torch.int64, device=logits.device)
    return {"loss_vir": F.cross_entropy(logits.float(), target)}


def mix_features(features: torch.Tensor, prototypes: torch.Tensor, alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: (N, D) features and their (N, D) class prototypes mixed with a random permutation
    of themselves by one β ~ Beta(alpha, alpha): two (N, D) tensors."""
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample().item()
    order = torch.randperm(features.shape[0], device=features.device)
    return (beta * features + (1 - beta) * features[order],
            beta * prototypes + (1 - beta) * prototypes[order])


def background_diversity_loss(prototypes: torch.Tensor) -> torch.Tensor:
    """AlignZeg's L_reg (Eq. 4): the mean of g_i · g_j^T over the M (M - 1) / 2 pairs of the
    (M, D) background prototypes, taken L2-normalised (the classifier compares them by cosine,
    so only their directions matter; raw vectors could lower the loss by growing)."""
    count = prototypes.shape[0]
    if count < 2:
        raise ValueError(f"L_reg needs at least 2 background prototypes, got {count}")
    normed = F.normalize(prototypes.float(), dim=-1)
    return 2.0 * torch.triu(normed @ normed.t(), diagonal=1).sum() / (count * (count - 1))


@register_criterion_loss("background_diversity", weights={"loss_reg": "MODEL.ALIGNZEG.BDS.WEIGHT"},
                         enabled_by="MODEL.ALIGNZEG.BDS.ENABLED")
def loss_background_diversity(criterion, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
    """L_reg (Eq. 4) of ``outputs["classifier"].background_prototypes`` (final prediction only)."""
    if "classifier" not in outputs:
        return {}
    return {"loss_reg": background_diversity_loss(outputs["classifier"].background_prototypes)}


class SetCriterion(nn.Module):
    """Mask2Former's losses for matched query predictions, with deep supervision.

    ``forward`` returns un-weighted losses; the meta-architecture multiplies them by
    :attr:`weight_dict` (keys ``loss_*`` for the final prediction and ``loss_*_<i>`` for
    auxiliary prediction ``i``).
    """

    @configurable
    def __init__(
        self,
        matcher: nn.Module,
        weight_dict: Mapping[str, float],
        eos_coef: float,
        losses: Sequence[str] = ("labels", "masks"),
        num_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mixup_alpha: float = 3.0,
        proposal_selector: Optional[nn.Module] = None,
    ):
        """
        Args:
            matcher: assigns queries to targets, ``matcher(outputs, targets) -> indices``.
            weight_dict: loss name -> weight (kept for the meta-architecture).
            eos_coef: cross-entropy weight of the "no object" class.
            losses: names in :data:`CRITERION_LOSS_REGISTRY` to compute.
            num_points: points per matched mask for the mask losses.
            oversample_ratio: candidates per point for importance sampling.
            importance_sample_ratio: fraction of the points chosen by uncertainty.
            focal_alpha, focal_gamma: parameters of the focal losses.
            mixup_alpha: α of the Beta(α, α) mixing weight of ``virtual_features``.
            proposal_selector: labels proposals for ``class_indicator``,
                ``selector(outputs, targets, indices) -> [(Q,) int64]`` (e.g. ``negative_proposals``).
        """
        super().__init__()
        unknown = [name for name in losses if name not in CRITERION_LOSS_REGISTRY]
        if unknown:
            registered = ", ".join(sorted(name for name, _ in CRITERION_LOSS_REGISTRY))
            raise KeyError(f"Unknown criterion loss(es) {unknown}; registered losses: {registered}")
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.loss_fns: Dict[str, LossFn] = {name: CRITERION_LOSS_REGISTRY.get(name) for name in losses}
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mixup_alpha = mixup_alpha
        self.proposal_selector = proposal_selector

    @classmethod
    def from_config(cls, cfg, matcher):
        mask_former = cfg.MODEL.MASK_FORMER
        # The decoder also predicts before its first layer: DEC_LAYERS + 1 predictions, the
        # last of which is the main output, so DEC_LAYERS auxiliary ones.
        num_aux_outputs = mask_former.DEC_LAYERS if mask_former.DEEP_SUPERVISION else 0
        losses = configured_losses(cfg)
        unknown = [name for name in losses if name not in LOSS_WEIGHT_KEYS]
        if unknown:
            raise KeyError(f"Unknown criterion loss(es) {unknown} in MODEL.ZSMASK.LOSSES; registered losses: "
                           f"{', '.join(sorted(LOSS_WEIGHT_KEYS))}")
        main_weights = {key: _config_value(cfg, config_key)
                        for name in losses for key, config_key in LOSS_WEIGHT_KEYS[name].items()}
        return {
            "matcher": matcher,
            "weight_dict": build_weight_dict(main_weights, num_aux_outputs),
            "eos_coef": mask_former.NO_OBJECT_WEIGHT,
            "losses": losses,
            "num_points": mask_former.TRAIN_NUM_POINTS,
            "oversample_ratio": mask_former.OVERSAMPLE_RATIO,
            "importance_sample_ratio": mask_former.IMPORTANCE_SAMPLE_RATIO,
            "focal_alpha": cfg.MODEL.SPLIT_MATCHING.FOCAL_ALPHA,
            "focal_gamma": cfg.MODEL.SPLIT_MATCHING.FOCAL_GAMMA,
            "mixup_alpha": cfg.MODEL.ALIGNZEG.FES.ALPHA,
            "proposal_selector": (build_matcher(cfg, cfg.MODEL.ALIGNZEG.PBC.SELECTOR)
                                  if "class_indicator" in losses else None),
        }

    def get_num_masks(self, targets: Sequence[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """Number of target masks averaged over processes (all_reduce when distributed), >= 1."""
        num_masks = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            world_size = dist.get_world_size()
        return torch.clamp(num_masks / world_size, min=1).item()

    def compute_losses(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: Sequence[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """All configured losses of one prediction level (un-weighted, without suffix)."""
        losses = {}
        for name in self.losses:
            losses.update(self.loss_fns[name](self, outputs, targets, indices, num_masks))
        return losses

    def forward(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: Sequence[Dict[str, torch.Tensor]],
        indices: Optional[Indices] = None,
        aux_indices: Optional[Sequence[Indices]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1), ``"pred_masks"`` (B, Q, h, w), and
                optionally ``"aux_outputs"``: a list of dicts of the same form.
            targets: B dicts with ``"labels"`` (T_b,) in [0, K) and ``"masks"`` (T_b, H, W).
            indices: precomputed assignment for the final prediction (else the matcher's).
            aux_indices: precomputed assignments, one per auxiliary prediction (else the
                matcher's).

        Returns:
            Un-weighted losses: ``loss_ce``, ``loss_mask``, ``loss_dice`` (for the default
            ``losses``) and ``<name>_<i>`` for auxiliary prediction i.
        """
        main_outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        if indices is None:
            indices = self.matcher(main_outputs, targets)
        num_masks = self.get_num_masks(targets, outputs["pred_logits"].device)
        losses = self.compute_losses(main_outputs, targets, indices, num_masks)

        aux_outputs: List[Dict[str, torch.Tensor]] = list(outputs.get("aux_outputs", []))
        if aux_indices is not None and len(aux_indices) != len(aux_outputs):
            raise ValueError(f"got {len(aux_indices)} aux_indices for {len(aux_outputs)} aux_outputs")
        for i, aux in enumerate(aux_outputs):
            aux_match = aux_indices[i] if aux_indices is not None else self.matcher(aux, targets)
            aux_losses = self.compute_losses(aux, targets, aux_match, num_masks)
            losses.update({f"{name}_{i}": value for name, value in aux_losses.items()})
        return losses

    def extra_repr(self) -> str:
        return (
            f"losses={self.losses}, eos_coef={self.eos_coef}, num_points={self.num_points}, "
            f"oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio},\n"
            f"weight_dict={self.weight_dict}"
        )


def build_criterion(cfg, matcher: Optional[nn.Module] = None) -> SetCriterion:
    """:class:`SetCriterion` from ``cfg``; the matcher is built from ``cfg`` when not given."""
    if matcher is None:
        matcher = build_matcher(cfg)
    return SetCriterion(cfg, matcher)
