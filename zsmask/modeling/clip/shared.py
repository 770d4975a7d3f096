"""One frozen CLIP per process, and the reference a checkpoint stores instead of its weights.

Every part of a zsmask model that reads CLIP without training it (the text classifier, a frozen
CLIP backbone, AlignZeg's side adapter and semantic decoder, the pseudo labeler and SAZS's key
features through the text classifier) gets the same open_clip model from :func:`frozen_clip`:
built and read from disk once per process, all parameters ``requires_grad=False``, eval mode.
A part that trains CLIP weights (``MODEL.CLIP_BACKBONE.FREEZE False``) copies what it trains.

Models built in one process share the instance while it is unchanged: moving one model to
another device moves the CLIP of every model built before it; a model built after a CLIP was
moved, cast or modified gets a fresh one. A random-init CLIP (``MODEL.CLIP.PRETRAINED ""``) is
drawn from a fixed seed without touching the global random state, so every process builds the
same weights and a checkpoint can refer to them.

:func:`clip_reference` names the frozen weights a checkpoint was trained with: model name,
pretrained tag or file, and the SHA-256 of the weights actually loaded (:func:`weights_digest`).
"""
import hashlib
import json
import os
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from .loader import _registered_configs, load_clip, register_clip_architecture_file

__all__ = ["RANDOM_INIT_SEED", "clip_reference", "describe_reference", "frozen_clip", "live_frozen_clips",
           "release_frozen_clips", "weights_digest", "weights_state"]

RANDOM_INIT_SEED = 0  # seed of the random initialisation every frozen CLIP is created under

# Held for the life of the process: parts keep pieces of a CLIP (blocks, a tower), not always the
# model itself, and a second copy must not be built while those pieces are alive.
_live: Dict[tuple, nn.Module] = {}
_REFERENCE_ATTR = "_zsmask_clip_reference"  # (fingerprint, reference) cached on the model


def weights_digest(module: nn.Module, algorithm: str = "sha256") -> str:
    """Hex digest of a module's state dict: for each entry in key order, its name and its values
    as contiguous float32 bytes on the CPU (independent of the device and dtype it lives in)."""
    digest = hashlib.new(algorithm)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_state(model: nn.Module) -> tuple:
    """Changes whenever a tensor of ``model`` is replaced, moved, cast or modified in place."""
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple((t.data_ptr(), t._version, t.dtype, str(t.device)) for t in tensors)


def _identity(model_name: str, pretrained: str) -> tuple:
    """What makes two requests the same CLIP: name, architecture, weight source (a file by its
    real path, size and modification time)."""
    architecture = json.dumps(_registered_configs.get(model_name), sort_keys=True)
    source = pretrained
    path = os.path.expanduser(pretrained)
    if pretrained and os.path.isfile(path):
        stat = os.stat(path)
        source = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    return model_name, architecture, source


def frozen_clip(cfg) -> nn.Module:
    """The process's frozen open_clip model of ``MODEL.CLIP.MODEL_NAME`` / ``PRETRAINED`` (after
    registering ``MODEL.CLIP.ARCHITECTURE_FILE``, if set): the live instance when one exists
    unchanged, else a new one from :func:`~zsmask.modeling.clip.loader.load_clip` (random init
    from :data:`RANDOM_INIT_SEED`). Do not train or modify it; copy what you train."""
    clip_cfg = cfg.MODEL.CLIP
    if clip_cfg.get("ARCHITECTURE_FILE", ""):
        register_clip_architecture_file(clip_cfg.MODEL_NAME, clip_cfg.ARCHITECTURE_FILE)
    pretrained = (clip_cfg.PRETRAINED or "").strip()
    key = _identity(clip_cfg.MODEL_NAME, pretrained)
    model = _live.get(key)
    if model is not None and model._zsmask_built_state == weights_state(model):
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = load_clip(clip_cfg.MODEL_NAME, pretrained)
    model.requires_grad_(False).eval()
    model._zsmask_source = {"model_name": clip_cfg.MODEL_NAME, "pretrained": pretrained}
    model._zsmask_built_state = weights_state(model)
    _live[key] = model
    return model


def live_frozen_clips() -> List[nn.Module]:
    """The frozen CLIP models this process handed out and still holds."""
    return list(_live.values())


def release_frozen_clips() -> None:
    """Forget the held frozen CLIPs (models that use one keep it; the next model gets a new one)."""
    _live.clear()


def clip_reference(model: nn.Module) -> Dict[str, str]:
    """``{"model_name", "pretrained", "sha256"}`` of a frozen CLIP (see the module docstring);
    the digest is computed once per state of its weights."""
    cached = getattr(model, _REFERENCE_ATTR, None)
    fingerprint = weights_state(model)
    if cached is None or cached[0] != fingerprint:
        source = getattr(model, "_zsmask_source", {"model_name": "", "pretrained": ""})
        cached = (fingerprint, {**source, "sha256": weights_digest(model)})
        setattr(model, _REFERENCE_ATTR, cached)
    return dict(cached[1])


def describe_reference(reference: Optional[Mapping[str, str]]) -> str:
    """One line naming a CLIP reference: ``ViT-B-16 (pretrained 'openai', sha256 1a2b3c4d...)``."""
    if not reference:
        return "an unknown CLIP"
    pretrained = reference.get("pretrained") or "random init"
    return f"{reference.get('model_name')!r} (pretrained {pretrained!r}, sha256 {str(reference.get('sha256'))[:12]}...)"
