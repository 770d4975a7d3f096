"""Optimizer with per-parameter groups and the warm-up + poly LR schedule."""
from typing import Any, Dict, List, Set, Type

import torch
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler, ParamScheduler

__all__ = ["build_optimizer", "build_lr_scheduler", "PolyWithConstantEnding", "maybe_add_full_model_gradient_clipping"]

_NORM_TYPES = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm, torch.nn.LocalResponseNorm,
)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) with: backbone lr x ``SOLVER.BACKBONE_MULTIPLIER``; norm parameters at
    ``SOLVER.WEIGHT_DECAY_NORM``; embeddings (``nn.Embedding`` and parameters whose name ends in
    ``embed`` / ``embedding`` / ``prompt`` / ``context``) at ``SOLVER.WEIGHT_DECAY_EMBED``; frozen parameters
    skipped; gradient clipping from ``SOLVER.CLIP_GRADIENTS`` (including ``"full_model"``)."""
    params: List[Dict[str, Any]] = []
    seen: Set[torch.nn.Parameter] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in seen:
                continue
            seen.add(p)
            lr = cfg.SOLVER.BASE_LR
            wd = cfg.SOLVER.WEIGHT_DECAY
            full = f"{module_name}.{name}" if module_name else name
            if full.startswith("backbone.") or ".backbone." in full:
                lr *= cfg.SOLVER.BACKBONE_MULTIPLIER
            if isinstance(module, _NORM_TYPES):
                wd = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif isinstance(module, torch.nn.Embedding) or name.endswith(("embed", "embedding", "prompt", "prompts", "context")):
                wd = cfg.SOLVER.WEIGHT_DECAY_EMBED
            params.append({"params": [p], "lr": lr, "weight_decay": wd, "name": full})
    opt = cfg.SOLVER.OPTIMIZER.upper()
    if opt == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    elif opt == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {cfg.SOLVER.OPTIMIZER!r}")
    if not params:
        raise ValueError("the model has no trainable parameters")
    return maybe_add_full_model_gradient_clipping(cfg, cls)(params, lr=cfg.SOLVER.BASE_LR, **kwargs)


def maybe_add_full_model_gradient_clipping(cfg, optimizer_type: Type[torch.optim.Optimizer]):
    """``optimizer_type`` with the gradient clipping of ``SOLVER.CLIP_GRADIENTS``.

    ``CLIP_TYPE: "full_model"`` (Mask2Former's): before each step, rescale all gradients
    together so that their global ``NORM_TYPE``-norm over every parameter of the optimizer is
    at most ``CLIP_VALUE``. detectron2's per-parameter ``"value"`` / ``"norm"`` types are
    handled by :func:`detectron2.solver.build.maybe_add_gradient_clipping`.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        return maybe_add_gradient_clipping(cfg, optimizer_type)
    if clip.CLIP_VALUE <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 for 'full_model', got {clip.CLIP_VALUE}")
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)

    class FullModelGradientClippingOptimizer(optimizer_type):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelGradientClippingOptimizer.__name__ = optimizer_type.__name__ + "WithFullModelGradientClip"
    return FullModelGradientClippingOptimizer


class PolyWithConstantEnding(ParamScheduler):
    """``(1 - t) ** power`` that never drops below ``constant_ending`` (as a multiplier)."""

    def __init__(self, power: float, constant_ending: float = 0.0):
        self._poly = PolynomialDecayParamScheduler(1.0, power)
        self.constant_ending = constant_ending

    def __call__(self, where: float) -> float:
        value = self._poly(where)
        if self.constant_ending > 0 and value < self.constant_ending:
            return self.constant_ending
        return value


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """``WarmupPolyLR`` (warm-up from ``SOLVER.WARMUP_FACTOR`` over ``SOLVER.WARMUP_ITERS``, then
    poly decay with ``SOLVER.POLY_LR_POWER``); other names go to detectron2's builder."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = PolyWithConstantEnding(cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.POLY_LR_CONSTANT_ENDING)
    warmup_iters = min(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER)
    sched = WarmupParamScheduler(
        sched,
        cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters / max(cfg.SOLVER.MAX_ITER, 1),
        cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
