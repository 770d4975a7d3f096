"""Build open_clip models by architecture name, with weights from an open_clip tag or a local file.

:func:`load_clip` is the one way zsmask creates a CLIP model (text classifier, dense features
and the CLIP visual backbone all go through it). :func:`register_clip_architecture` adds a
custom architecture (e.g. the toy CLIP) to open_clip's registry from a plain dict.

Every call of :func:`load_clip` returns a **fresh** model. The parts of a zsmask model do not
call it directly: they share the process's one frozen CLIP (:mod:`.shared`).
"""
import atexit
import difflib
import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Mapping, Optional

import open_clip
import torch
from torch import nn

__all__ = [
    "ClipWeightsError",
    "load_clip",
    "load_clip_state_dict",
    "register_clip_architecture",
    "register_clip_architecture_file",
    "available_clip_architectures",
    "load_clip_from_config",
    "register_pretrained_source",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_MAX_LISTED_MISMATCHES = 5
_ZSMASK_CLIP_PREFIX = "clip.model."  # the frozen CLIP's keys in a zsmask model's state dict


class ClipWeightsError(ValueError):
    """A CLIP checkpoint that cannot be loaded into the expected architecture."""


# ------------------------------------------------------------------------------------ registry
_custom_config_dir: Optional[str] = None
_registered_configs: Dict[str, dict] = {}


def _config_dir() -> str:
    """A per-process folder for the JSON files open_clip's public ``add_model_config`` reads."""
    global _custom_config_dir
    if _custom_config_dir is None:
        _custom_config_dir = tempfile.mkdtemp(prefix="zsmask_clip_configs_")
        atexit.register(shutil.rmtree, _custom_config_dir, ignore_errors=True)
    return _custom_config_dir


def available_clip_architectures() -> List[str]:
    """Names accepted as ``MODEL.CLIP.MODEL_NAME`` (open_clip built-ins and registered ones)."""
    return list(open_clip.list_models())


def register_clip_architecture(name: str, config: Mapping) -> None:
    """Register a custom open_clip architecture so ``load_clip(name, ...)`` can build it.

    ``config`` is an open_clip model config: ``{"embed_dim": D, "vision_cfg": {...},
    "text_cfg": {...}}`` (plus optional keys such as ``"quick_gelu"``), exactly the content of
    one of open_clip's ``model_configs/*.json`` files. ``vision_cfg["layers"]`` an int gives a
    ViT tower, a list of 4 ints a ModifiedResNet. Example (a tiny ViT CLIP)::

        register_clip_architecture("tiny-vit", {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2,
                           "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                         "layers": 2},
        })

    Registering the same name again with the same config is a no-op; with a different config it
    replaces the earlier registration (a built-in open_clip name can never be replaced).
    Registration is per process (open_clip's registry is global).
    """
    if not isinstance(name, str) or not name or os.sep in name or "/" in name or name.startswith("."):
        raise ValueError(f"CLIP architecture name must be a plain non-empty name, got {name!r}")
    if name.startswith(_SCHEMA_PREFIXES):
        raise ValueError(f"CLIP architecture name {name!r} must not start with {_SCHEMA_PREFIXES}")
    config = json.loads(json.dumps(dict(config)))  # deep copy; also rejects non-JSON values
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(
            f"CLIP architecture {name!r}: config lacks {missing}; an open_clip model config needs "
            "'embed_dim', 'vision_cfg' and 'text_cfg'"
        )
    if name in _registered_configs:
        if _registered_configs[name] == config:
            return
    elif name in open_clip.list_models():
        raise ValueError(
            f"CLIP architecture {name!r} is an open_clip built-in and cannot be re-registered; "
            "choose another name"
        )
    path = os.path.join(_config_dir(), f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    open_clip.add_model_config(path)
    if open_clip.get_model_config(name) != config:
        raise RuntimeError(f"open_clip did not register CLIP architecture {name!r}")
    _registered_configs[name] = config


def register_clip_architecture_file(name: str, path: str) -> None:
    """Register the architecture in JSON file ``path`` under ``name`` (MODEL.CLIP.ARCHITECTURE_FILE).

    The file holds an open_clip model config (as :func:`register_clip_architecture` takes) or an
    open_clip ``open_clip_config.json`` (``{"model_cfg": {...}, ...}``).
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CLIP architecture file {path!r} not found (MODEL.CLIP.ARCHITECTURE_FILE); expected a "
            f"JSON open_clip model config for model {name!r}"
        )
    try:
        with open(path, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"CLIP architecture file {path!r} (MODEL.CLIP.ARCHITECTURE_FILE) is not readable JSON: {e}"
        ) from e
    if isinstance(config, dict) and isinstance(config.get("model_cfg"), dict):
        config = config["model_cfg"]
    if not isinstance(config, dict):
        raise ValueError(f"CLIP architecture file {path!r} must hold a JSON object, got {type(config).__name__}")
    try:
        register_clip_architecture(name, config)
    except ValueError as e:
        raise ValueError(f"CLIP architecture file {path!r} (MODEL.CLIP.ARCHITECTURE_FILE): {e}") from e


# ------------------------------------------------------------------------------------ sources
_pretrained_sources: Dict[tuple, Callable[[], str]] = {}


def register_pretrained_source(model_name: str, tag: str, resolve: Callable[[], str]) -> None:
    """Make ``MODEL.CLIP.PRETRAINED: <tag>`` of ``model_name`` mean the local file ``resolve()``
    returns (called at load time; it may build the file, as the toy CLIP's pretraining does).
    The file is then loaded exactly like a user's checkpoint file."""
    if not tag or _looks_like_path(tag):
        raise ValueError(f"a pretrained source tag must be a plain name, got {tag!r}")
    _pretrained_sources[(model_name, tag)] = resolve


# ------------------------------------------------------------------------------------ loading
def _check_model_name(model_name: str) -> None:
    if model_name.startswith(_SCHEMA_PREFIXES):
        return
    valid = open_clip.list_models()
    if model_name not in valid:
        close = difflib.get_close_matches(model_name, valid, n=5, cutoff=0.4)
        hint = f" Similar names: {close}." if close else ""
        raise ValueError(
            f"Unknown CLIP architecture {model_name!r} (MODEL.CLIP.MODEL_NAME).{hint} "
            "Custom architectures must be registered first with "
            "zsmask.modeling.clip.register_clip_architecture(name, config)."
        )


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith(("~", "."))
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def load_clip_state_dict(path: str, model_name: str) -> Dict[str, torch.Tensor]:
    """Read a CLIP checkpoint file into a flat state dict (CPU tensors).

    Accepts a raw state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``,
    optionally with DistributedDataParallel's ``"module."`` key prefix, and a self-contained
    zsmask checkpoint (``tools/export_model.py --format checkpoint``: its CLIP is read);
    ``.safetensors`` files are read with safetensors. ``model_name`` only serves the error messages.
    """
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            checkpoint = load_file(path, device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a checkpoint, unreadable
        raise ClipWeightsError(
            f"Could not read CLIP weights file {path!r} ({type(e).__name__}: {e}); expected an "
            f"open_clip checkpoint of model {model_name!r} (MODEL.CLIP.PRETRAINED)."
        ) from e
    state_dict = checkpoint
    if isinstance(checkpoint, Mapping) and checkpoint.get("clip_included") and isinstance(checkpoint.get("model"), Mapping):
        # a self-contained zsmask checkpoint: the text classifier's CLIP under "clip.model."
        state_dict = {k[len(_ZSMASK_CLIP_PREFIX):]: v for k, v in checkpoint["model"].items()
                      if k.startswith(_ZSMASK_CLIP_PREFIX)}
    for wrapper_key in ("state_dict", "model"):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper_key), Mapping):
            state_dict = state_dict[wrapper_key]
            break
    if (
        not isinstance(state_dict, Mapping)
        or not state_dict
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items())
    ):
        raise ClipWeightsError(
            f"CLIP weights file {path!r} holds no state dict of tensors (got "
            f"{type(checkpoint).__name__}); expected an open_clip checkpoint of model "
            f"{model_name!r} (MODEL.CLIP.PRETRAINED)."
        )
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


class _DropRandomInitWarning(logging.Filter):
    """Hides open_clip's "initialized randomly" warning while zsmask loads weights itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


def _create_for_own_weights(model_name: str) -> nn.Module:
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        return open_clip.create_model(model_name, device="cpu")
    finally:
        root.removeFilter(quiet)


def _guess_architecture(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Registered architectures whose parameter names and shapes equal the checkpoint's."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    matches = []
    for name in _registered_configs:
        try:
            reference = _create_for_own_weights(name).state_dict()
        except Exception:  # a registered config that does not build is not a candidate
            continue
        if {k: tuple(v.shape) for k, v in reference.items()} == shapes:
            matches.append(name)
    return matches


def _load_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: str, model_name: str):
    """Load ``state_dict`` into ``model`` strictly; raise :class:`ClipWeightsError` on mismatch."""
    expected = model.state_dict()
    # open_clip checkpoints store logit_scale / logit_bias either as scalars or 1-d (as open_clip).
    for key in ("logit_scale", "logit_bias"):
        if key in state_dict and key in expected and state_dict[key].numel() == expected[key].numel():
            state_dict[key] = state_dict[key].reshape(expected[key].shape)
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:_MAX_LISTED_MISMATCHES])
                more = f" (+{len(items) - _MAX_LISTED_MISMATCHES} more)" if len(items) > _MAX_LISTED_MISMATCHES else ""
                parts.append(f"{len(items)} {title} keys: {shown}{more}")
        guesses = _guess_architecture(state_dict)
        guess = f" It matches the registered architecture(s) {guesses}." if guesses else ""
        raise ClipWeightsError(
            f"CLIP weights file {path!r} does not fit the expected model {model_name!r} "
            f"(MODEL.CLIP.MODEL_NAME): " + "; ".join(parts) + f".{guess} Set MODEL.CLIP.MODEL_NAME "
            "to the architecture the checkpoint was trained with (open_clip name, or register a "
            "custom one with register_clip_architecture)."
        )
    model.load_state_dict(state_dict, strict=True)


def load_clip(model_name: str, pretrained: str = "") -> nn.Module:
    """Create the open_clip model ``model_name`` (float32, eval mode, on CPU).

    Args:
        model_name: open_clip architecture ("ViT-B-16", "RN50", a name registered with
            :func:`register_clip_architecture`, or an open_clip "hf-hub:"/"local-dir:" source).
        pretrained: "" for random initialisation; a path to a local checkpoint file
            (.pt/.pth/.bin/.safetensors; loaded strictly); a tag registered with
            :func:`register_pretrained_source` (e.g. ``"zsmask-toy"`` of the toy CLIP), which
            names a local file; or an open_clip pretrained tag of ``model_name`` ("openai",
            "laion2b_s34b_b88k", ...; downloaded by open_clip).

    Returns a new ``open_clip.CLIP``/``CustomTextCLIP`` each call (no sharing between callers).
    Raises ValueError (unknown name or tag), FileNotFoundError (missing file) or
    :class:`ClipWeightsError` (unreadable file or wrong architecture); all name the expected model.
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"MODEL.CLIP.MODEL_NAME must be a non-empty string, got {model_name!r}")
    pretrained = (pretrained or "").strip()
    _check_model_name(model_name)
    if model_name.startswith(_SCHEMA_PREFIXES):
        if pretrained:
            raise ValueError(
                f"CLIP model {model_name!r} carries its own weights; leave MODEL.CLIP.PRETRAINED "
                f"empty (got {pretrained!r})"
            )
        model = open_clip.create_model(model_name, device="cpu")
        return model.float().eval()

    if (model_name, pretrained) in _pretrained_sources:
        pretrained = _pretrained_sources[(model_name, pretrained)]()
    if not pretrained:
        model = open_clip.create_model(model_name, device="cpu")
    elif os.path.isfile(os.path.expanduser(pretrained)):
        path = os.path.expanduser(pretrained)
        state_dict = load_clip_state_dict(path, model_name)
        model = _create_for_own_weights(model_name)
        _load_strict(model, state_dict, path, model_name)
        logger.info("Loaded CLIP %s weights from %s", model_name, path)
    elif _looks_like_path(pretrained) or os.path.isdir(os.path.expanduser(pretrained)):
        kind = "is a folder, not a file" if os.path.isdir(os.path.expanduser(pretrained)) else "not found"
        raise FileNotFoundError(
            f"CLIP weights file {pretrained!r} {kind}; expected an open_clip checkpoint of model "
            f"{model_name!r} (MODEL.CLIP.PRETRAINED)."
        )
    else:
        if not open_clip.is_pretrained_cfg(model_name, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            listed = f"valid tags: {tags}" if tags else "open_clip has no pretrained tags for it"
            raise ValueError(
                f"Unknown pretrained tag {pretrained!r} for CLIP model {model_name!r} "
                f"(MODEL.CLIP.PRETRAINED); {listed}. A local checkpoint file also works (give "
                "its path)."
            )
        model = open_clip.create_model(model_name, pretrained=pretrained, device="cpu")
    return model.float().eval()


def load_clip_from_config(cfg) -> nn.Module:
    """:func:`load_clip` of ``MODEL.CLIP.MODEL_NAME`` / ``PRETRAINED``, first registering
    ``MODEL.CLIP.ARCHITECTURE_FILE`` under MODEL_NAME when that key is set."""
    clip_cfg = cfg.MODEL.CLIP
    architecture_file = clip_cfg.get("ARCHITECTURE_FILE", "")
    if architecture_file:
        register_clip_architecture_file(clip_cfg.MODEL_NAME, architecture_file)
    return load_clip(clip_cfg.MODEL_NAME, clip_cfg.PRETRAINED)
