"""Building a trained zsmask model for inference, from a config file or object plus weights.

Shared by :class:`zsmask.Predictor`, the demo and the tools (benchmark, analysis, export,
pseudo-mask visualisation), so that every entry point resolves configs, devices and weight
files the same way and fails with the same clear messages.
"""
import os
from typing import Optional, Sequence, Tuple, Union

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from .checkpoint import SlimCheckpointer, read_clip_from_weights
from .setup import build_config

__all__ = ["default_device", "inference_config", "load_inference_model"]


def default_device() -> str:
    """"cuda" when this torch sees a CUDA device, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_config(config: Union[str, CfgNode], weights: Optional[str] = None, device: Optional[str] = None,
                     opts: Sequence[str] = ()) -> CfgNode:
    """A frozen config for inference: ``config`` (a yaml path, with ``_BASE_``, or a CfgNode,
    which is copied) + ``opts`` (``["KEY", "value", ...]``), with ``MODEL.WEIGHTS`` set to
    ``weights`` when given and ``MODEL.DEVICE`` to ``device`` (default :func:`default_device`).
    Weights that carry their CLIP (``tools/export_model.py --format checkpoint``) also become
    ``MODEL.CLIP.PRETRAINED``, so no other CLIP file is needed."""
    import zsmask.data  # noqa: F401  (registers the built-in splits whose vocabularies configs name)
    import zsmask.modeling  # noqa: F401  (registers the meta-architecture and its parts)

    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        cfg.merge_from_list(list(opts))
    else:
        if not os.path.isfile(str(config)):
            raise FileNotFoundError(f"config file not found: {config} (expected a yaml such as "
                                    "configs/toy/hungarian.yaml)")
        cfg = build_config(str(config), opts)
    if weights is not None:
        cfg.MODEL.WEIGHTS = str(weights)
    if weights is not None or isinstance(config, CfgNode):  # build_config has looked at the yaml's own
        read_clip_from_weights(cfg)
    cfg.MODEL.DEVICE = str(device or default_device())
    if torch.device(cfg.MODEL.DEVICE).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.MODEL.DEVICE!r} was asked for but this torch sees no CUDA device; "
                           "use device='cpu' (or leave it unset to choose automatically)")
    cfg.freeze()
    return cfg


def load_inference_model(config: Union[str, CfgNode], weights: Optional[str] = None, device: Optional[str] = None,
                         opts: Sequence[str] = ()) -> Tuple[nn.Module, CfgNode]:
    """``(model in eval mode on its device, frozen config)``; see :func:`inference_config`.

    ``MODEL.WEIGHTS`` (or ``weights``) is loaded with zsmask's checkpointer (older layouts
    converted, see :func:`~zsmask.engine.checkpoint.upgrade_checkpoint_state`); an empty value
    keeps the initialisation (CLIP still loads its own weights from ``MODEL.CLIP``). A weights
    path that is not a file raises FileNotFoundError naming it.
    """
    cfg = inference_config(config, weights, device, opts)
    path = cfg.MODEL.WEIGHTS
    if path and "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"model weights not found: {path} (MODEL.WEIGHTS; a model_final.pth written "
                                "by train_net.py)")
    model = build_model(cfg)
    if path:
        SlimCheckpointer(model).load(path)
    model.eval()
    return model, cfg
