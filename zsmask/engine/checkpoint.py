"""Checkpoints that hold only what was trained, written atomically.

A zsmask model's frozen CLIP (:mod:`zsmask.modeling.clip.shared`) is most of its state dict
(about 570 MiB for ViT-B/16, reachable under several names when several parts read it) and never
changes, so :class:`SlimCheckpointer` leaves it out. A saved file holds

- ``"model"``: the state dict without the frozen CLIP's entries (trainable parameters and the
  buffers that change);
- ``"clip_reference"``: one ``{"model_name", "pretrained", "sha256"}`` per frozen CLIP the model
  reads (:func:`~zsmask.modeling.clip.shared.clip_reference`);
- what detectron2 adds: optimizer, scheduler and trainer state, ``"iteration"``.

Loading rebuilds CLIP from the config (the model is built before its weights are loaded) and
checks the reference: a different CLIP is a :class:`ClipReferenceError` naming both. A file
that holds the frozen CLIP too (an older full checkpoint, or a shareable one from
:func:`full_checkpoint`) loads as well: its CLIP entries are checked against the loaded CLIP
and dropped, with a one-line notice. Files without CLIP entries or reference (a detectron2 /
ImageNet backbone in ``MODEL.WEIGHTS``) load as in detectron2.
"""
import logging
import os
import shutil
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ..modeling.clip.shared import clip_reference, describe_reference, live_frozen_clips
from ..utils import atomic_write

__all__ = ["CheckpointWriteError", "ClipReferenceError", "SlimCheckpointer", "carries_clip", "frozen_clip_entries", "full_checkpoint",
           "read_clip_from_weights", "slim_state_dict", "upgrade_checkpoint_state"]

logger = logging.getLogger(__name__)


class ClipReferenceError(ValueError):
    """A checkpoint trained with another CLIP than the configured one."""


def upgrade_checkpoint_state(model: nn.Module, state_dict: dict) -> None:
    """Let each module that has ``upgrade_checkpoint(state_dict, prefix)`` convert its entries of
    an older checkpoint layout in place. detectron2 drops entries whose shape differs from the
    model's before ``load_state_dict`` (and its pre-hooks) runs, so conversions happen here."""
    for name, module in model.named_modules():
        upgrade = getattr(module, "upgrade_checkpoint", None)
        if upgrade is None:
            continue
        prefix = f"{name}." if name else ""
        upgrade(state_dict, prefix)
        if prefix.startswith("module."):  # a DistributedDataParallel model; checkpoints may lack the wrapper
            upgrade(state_dict, prefix[len("module."):])


def _storage_key(tensor: torch.Tensor) -> tuple:
    return tensor.data_ptr(), tensor.numel(), tensor.dtype, str(tensor.device)


def frozen_clip_entries(model: nn.Module, state: Optional[Mapping[str, torch.Tensor]] = None
                        ) -> Tuple[Dict[str, torch.Tensor], List[nn.Module]]:
    """``({key: tensor}, clips)``: the entries of ``state`` (default ``model.state_dict()``) that
    are tensors of a frozen CLIP (same storage, under any name), and those CLIP models, in order
    of first use."""
    owners = {}
    for clip in live_frozen_clips():
        for tensor in clip.state_dict().values():
            if tensor.numel():
                owners[_storage_key(tensor)] = clip
    entries, clips = {}, []
    for key, tensor in (model.state_dict() if state is None else state).items():
        clip = owners.get(_storage_key(tensor)) if tensor.numel() else None
        if clip is not None:
            entries[key] = tensor
            if all(c is not clip for c in clips):
                clips.append(clip)
    return entries, clips


def slim_state_dict(model: nn.Module) -> Tuple[Dict[str, torch.Tensor], List[Dict[str, str]]]:
    """``(state dict without the frozen CLIP entries, their CLIP references)``."""
    state = model.state_dict()
    frozen, clips = frozen_clip_entries(model, state)
    return {k: v for k, v in state.items() if k not in frozen}, [clip_reference(c) for c in clips]


def full_checkpoint(model: nn.Module, cfg=None) -> Dict[str, object]:
    """A self-contained checkpoint for sharing: the whole state dict (frozen CLIP included; tensors
    reachable under several names are stored once by ``torch.save``), the CLIP references,
    ``"clip_included": True`` and, with ``cfg``, the config as yaml under ``"config"``. Its CLIP
    loads through ``MODEL.CLIP.PRETRAINED <this file>`` (see :func:`~zsmask.modeling.clip.load_clip_state_dict`)."""
    state = model.state_dict()
    _, clips = frozen_clip_entries(model, state)
    data = {"model": state, "clip_reference": [clip_reference(c) for c in clips], "clip_included": True}
    if cfg is not None:
        data["config"] = cfg.dump()
    return data


def carries_clip(path: str) -> bool:
    """Whether ``path`` is a self-contained checkpoint (:func:`full_checkpoint`); read lazily
    (memory-mapped), False for anything else, unreadable files included."""
    if not path or "://" in path or not os.path.isfile(path):
        return False
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file (e.g. a detectron2 .pkl), or damaged: not ours
        return False
    return isinstance(data, dict) and bool(data.get("clip_included"))


def read_clip_from_weights(cfg) -> None:
    """When ``MODEL.WEIGHTS`` carries its CLIP (:func:`carries_clip`), make it ``MODEL.CLIP.PRETRAINED``
    too (logged), so that a shared checkpoint needs no other CLIP file. ``cfg`` must not be frozen."""
    weights = cfg.MODEL.WEIGHTS
    if cfg.MODEL.CLIP.PRETRAINED != weights and carries_clip(weights):
        logger.info("%s carries its CLIP: MODEL.CLIP.PRETRAINED set to it (was %r)", weights, cfg.MODEL.CLIP.PRETRAINED)
        cfg.MODEL.CLIP.PRETRAINED = weights


def _strip_module_prefix(state: dict) -> None:
    if state and all(k.startswith("module.") for k in state):
        for key in list(state):
            state[key[len("module."):]] = state.pop(key)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the folder and its free space."""


class SlimCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` that saves without the frozen CLIP and checks its reference
    on load (see the module docstring). ``<name>.pth`` and ``last_checkpoint`` are replaced
    atomically, so a crash while saving leaves the previous checkpoint usable (non-local save
    folders, ``scheme://``, are written directly). Loading first converts older checkpoint
    layouts (:func:`upgrade_checkpoint_state`)."""

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        state, references = slim_state_dict(self.model)
        data = {"model": state}
        if references:
            data["clip_reference"] = references
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        if self._is_local():
            try:
                atomic_write(save_file, lambda f: torch.save(data, f), "wb")
            except OSError as e:  # a full disk, a quota, a folder gone: the previous checkpoint stays
                raise CheckpointWriteError(self._write_failure(save_file, e)) from e
        else:
            with self.path_manager.open(save_file, "wb") as f:
                torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def _write_failure(self, save_file: str, error: OSError) -> str:
        try:
            free = f"{shutil.disk_usage(self.save_dir).free / 2 ** 30:.2f} GiB free there"
        except OSError:
            free = "its free space could not be read"
        last = os.path.join(self.save_dir, "last_checkpoint")
        kept = (f"last_checkpoint still names {open(last).read().strip()}, which is intact" if os.path.isfile(last)
                else "no earlier checkpoint exists")
        return (f"cannot write checkpoint {save_file} ({error}); {kept}. The folder {self.save_dir} has {free}: "
                "free space there (or set OUTPUT_DIR elsewhere), then continue with --resume")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            atomic_write(path, lambda f: f.write(last_filename_basename), "w")
        except OSError as e:
            raise CheckpointWriteError(self._write_failure(path, e)) from e

    def _load_file(self, filename: str):
        self._loading = filename
        return super()._load_file(filename)

    def _load_model(self, checkpoint):
        state = checkpoint.get("model")
        frozen = {}
        if isinstance(state, dict):
            _strip_module_prefix(state)
            upgrade_checkpoint_state(self.model, state)
            frozen, clips = frozen_clip_entries(self.model)
            if clips:
                self._check_clip(state, checkpoint.get("clip_reference"), frozen, clips)
        incompatible = super()._load_model(checkpoint)
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in frozen]
        return incompatible

    def _check_clip(self, state: dict, saved: Optional[List[Mapping[str, str]]], frozen: Dict[str, torch.Tensor],
                    clips: List[nn.Module]) -> None:
        """Refuse a checkpoint of another CLIP; drop the CLIP entries a file holds (checked)."""
        name = getattr(self, "_loading", "the checkpoint")
        current = [clip_reference(c) for c in clips]
        if saved is not None:
            if sorted(r.get("sha256") for r in saved) != sorted(r["sha256"] for r in current):
                raise ClipReferenceError(
                    f"{name} was trained with CLIP {', '.join(describe_reference(r) for r in saved)}, but the config "
                    f"builds CLIP {', '.join(describe_reference(r) for r in current)}; set MODEL.CLIP.MODEL_NAME / "
                    "PRETRAINED to the checkpoint's CLIP (a self-contained file from tools/export_model.py "
                    "--format checkpoint carries its CLIP)")
        held = [k for k in frozen if k in state]
        if not held:
            return
        if saved is None:  # an older full checkpoint: its CLIP must be the configured one
            for key in held:
                ours, theirs = frozen[key], state[key]
                if theirs.shape != ours.shape or not torch.equal(theirs.to(ours.device, ours.dtype), ours):
                    raise ClipReferenceError(
                        f"{name} holds CLIP weights ({key}) that differ from the configured CLIP "
                        f"{describe_reference(current[0])}; set MODEL.CLIP.MODEL_NAME / PRETRAINED to the CLIP it "
                        "was trained with")
        storages = {_storage_key(state[k]): state[k].numel() * state[k].element_size() for k in held}
        size = sum(storages.values()) / 2 ** 20
        for key in held:
            del state[key]
        logger.info("%s holds the frozen CLIP (%d entries, %.0f MiB), identical to the configured one; not loaded "
                    "again (zsmask checkpoints leave it out)", name, len(held), size)
