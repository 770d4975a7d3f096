"""Frozen CLIP as a zsmask component: text classifier weights and dense image embeddings."""
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from .shared import frozen_clip, weights_state
from .templates import resolve_templates, validate_templates
from .visual_towers import (
    VIT_DENSE_ROUTES,
    resnet_attnpool,
    resnet_dense_embeddings,
    resnet_stages,
    tower_kind,
    tower_stride,
    vit_dense_embeddings,
)

__all__ = ["CLIPTextImageEncoder", "VocabularyError", "check_class_names", "split_synonyms"]

_TEXT_BATCH = 256  # prompts per text-encoder call (bounds memory for large vocabularies)


class VocabularyError(ValueError):
    """A class vocabulary is missing, empty or malformed."""


def check_class_names(class_names: Sequence[str]) -> Tuple[str, ...]:
    """A vocabulary as a tuple of names; rejects a bare string, an empty list, empty or
    non-string names and duplicates (ignoring surrounding spaces) with a :class:`VocabularyError`."""
    if isinstance(class_names, str):
        raise VocabularyError(f"a vocabulary must be a list of class names, got the string {class_names!r}; "
                              "split it, e.g. names.split(',')")
    names = tuple(class_names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if not names or bad:
        raise VocabularyError(f"a vocabulary must be a non-empty list of non-empty class names, got {list(names)[:10]}")
    stripped = [n.strip() for n in names]
    duplicates = sorted({n for n in stripped if stripped.count(n) > 1})
    if duplicates:
        raise VocabularyError(f"the vocabulary has duplicate class names {duplicates[:10]}")
    return names


def split_synonyms(class_name: str) -> Tuple[str, ...]:
    """``"tv, monitor"`` -> ``("tv", "monitor")``; names without a comma are one synonym."""
    synonyms = tuple(s.strip() for s in class_name.split(","))
    if not all(synonyms):
        raise ValueError(f"Class name {class_name!r} has an empty synonym (names are split at ',')")
    return synonyms


def mean_over_synonyms(per_synonym: torch.Tensor, synonyms: Sequence[Tuple[str, ...]]) -> torch.Tensor:
    """Embeddings ``(S, ..., D)`` of the flattened synonyms of each name -> ``(len(synonyms), ..., D)``:
    per name, the L2-normalised mean of its synonyms' rows (in order)."""
    rows, start = [], 0
    for group in synonyms:
        rows.append(per_synonym[start:start + len(group)].mean(dim=0))
        start += len(group)
    return F.normalize(torch.stack(rows), dim=-1)


def clip_pixel_stats(clip_model: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """CLIP's pixel mean and std on the 0-255 scale, each ``(1, 3, 1, 1)`` (the model's
    preprocess config, else OpenAI's statistics)."""
    preprocess = open_clip.get_model_preprocess_cfg(clip_model)
    mean = preprocess.get("mean") or OPENAI_DATASET_MEAN
    std = preprocess.get("std") or OPENAI_DATASET_STD
    return torch.tensor(mean).view(1, -1, 1, 1) * 255.0, torch.tensor(std).view(1, -1, 1, 1) * 255.0


class CLIPTextImageEncoder(nn.Module):
    """A frozen open_clip model giving text classifiers and dense image embeddings.

    All CLIP parameters have ``requires_grad=False`` and the model stays in eval mode even when
    a parent calls ``.train()``. Text embeddings of a vocabulary are cached (LRU, per weights,
    device, dtype, class names and templates); the cache is dropped whenever the module is moved
    or cast (``_apply``), a state dict is loaded into it, or any CLIP tensor changes in place.
    The returned tensors are shared with the cache: do not modify them in place.
    """

    @configurable
    def __init__(
        self,
        *,
        clip_model: nn.Module,
        tokenizer: Callable,
        templates: Sequence[str],
        model_name: str = "",
        vit_dense_route: str = "maskclip",
        cache_size: int = 16,
        average_synonyms: bool = True,
    ):
        """
        Args:
            clip_model: an open_clip CLIP model (from :func:`load_clip`); frozen here.
            tokenizer: open_clip tokenizer: ``list[str] -> LongTensor (N, L)``.
            templates: prompt templates, each with one "{}".
            model_name: the open_clip architecture name (for reference and messages).
            vit_dense_route: how ViT dense embeddings are taken ("maskclip" or "value_only").
            cache_size: number of vocabularies whose embeddings are kept.
            average_synonyms: split class names at "," and average the synonyms' embeddings.
        """
        super().__init__()
        if vit_dense_route not in VIT_DENSE_ROUTES:
            raise ValueError(
                f"Unknown ViT dense route {vit_dense_route!r} (MODEL.CLIP.VIT_DENSE_ROUTE); "
                f"valid: {VIT_DENSE_ROUTES}"
            )
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.model = clip_model
        self.model_name = model_name
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.eval()
        self.tokenizer = tokenizer
        self.templates = validate_templates(templates)
        self.vit_dense_route = vit_dense_route
        self.cache_size = cache_size
        self.average_synonyms = average_synonyms
        self._tower = tower_kind(clip_model.visual)
        self._stride = tower_stride(clip_model.visual)
        self._context_length = open_clip.get_model_tokenize_cfg(clip_model).get("context_length")

        mean, std = clip_pixel_stats(clip_model)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

        self._cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._weights_version = 0
        self.register_load_state_dict_pre_hook(self._on_load_state_dict)

    @classmethod
    def from_config(cls, cfg):
        clip_cfg = cfg.MODEL.CLIP
        model = frozen_clip(cfg)
        model_context = open_clip.get_model_tokenize_cfg(model).get("context_length")
        context_length = clip_cfg.CONTEXT_LENGTH or model_context
        if model_context is not None and context_length > model_context:
            raise ValueError(
                f"MODEL.CLIP.CONTEXT_LENGTH={clip_cfg.CONTEXT_LENGTH} exceeds the context length "
                f"{model_context} of CLIP model {clip_cfg.MODEL_NAME!r}"
            )
        return {
            "clip_model": model,
            "model_name": clip_cfg.MODEL_NAME,
            "tokenizer": open_clip.get_tokenizer(clip_cfg.MODEL_NAME, context_length=context_length),
            "templates": resolve_templates(clip_cfg.PROMPT_TEMPLATE_SET, list(clip_cfg.PROMPT_TEMPLATES)),
            "vit_dense_route": clip_cfg.VIT_DENSE_ROUTE,
        }

    # ------------------------------------------------------------------------------ module state
    @property
    def embed_dim(self) -> int:
        """Width D of CLIP's joint image-text embedding space."""
        return int(self.model.visual.output_dim)

    @property
    def dense_stride(self) -> int:
        """Input pixels per cell of ``encode_image_dense``'s patch grid (patch size or 32)."""
        return self._stride

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True):
        """Set this module's mode; the CLIP model itself always stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def clear_cache(self) -> None:
        """Forget all cached vocabulary embeddings."""
        self._cache.clear()
        self._weights_version += 1

    def _on_load_state_dict(self, module, state_dict, prefix, *args, **kwargs):
        self.clear_cache()

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _weights_fingerprint(self) -> tuple:
        """Changes whenever a CLIP tensor is replaced or modified in place."""
        return self._weights_version, hash(weights_state(self.model))

    # ------------------------------------------------------------------------------ text
    def _tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts))
        if self._context_length is not None and tokens.shape[1] < self._context_length:
            # A shorter MODEL.CLIP.CONTEXT_LENGTH truncates prompts; pad to the model's length.
            tokens = F.pad(tokens, (0, self._context_length - tokens.shape[1]))
        return tokens.to(self.device)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings of raw prompts: ``(N, D)``, not cached."""
        chunks = []
        for start in range(0, len(prompts), _TEXT_BATCH):
            tokens = self._tokenize(prompts[start:start + _TEXT_BATCH])
            chunks.append(F.normalize(self.model.encode_text(tokens), dim=-1))
        return torch.cat(chunks, dim=0)

    def encode_vocabulary(self, class_names: Sequence[str], templates: Optional[Sequence[str]] = None,
                          per_template: bool = False) -> torch.Tensor:
        """Prompt-ensemble text classifier: ``(C, D)``, L2-normalised, on this module's device.

        Per class: each template filled with the name is encoded and L2-normalised, the mean over
        templates is L2-normalised again. With ``average_synonyms``, a name "a, b" gets the
        normalised mean of its synonyms' ensembles. ``templates`` overrides the configured ones.
        ``per_template`` keeps one embedding per template instead of their mean: ``(C, T, D)``
        (multiple text prompts, OTSeg Sec. 4.1). Cached per (weights, device, dtype, class names,
        templates, per_template).
        """
        names = check_class_names(class_names)
        templates = self.templates if templates is None else validate_templates(templates)
        dtype = next(self.model.parameters()).dtype
        key = (self._weights_fingerprint(), str(self.device), dtype, names, templates, per_template)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached

        synonyms = [split_synonyms(n) if self.average_synonyms else (n.strip(),) for n in names]
        flat = [s for group in synonyms for s in group]
        prompts = [t.format(s) for s in flat for t in templates]
        per_prompt = self.encode_prompts(prompts).view(len(flat), len(templates), -1)
        per_synonym = per_prompt if per_template else F.normalize(per_prompt.mean(dim=1), dim=-1)
        embeddings = mean_over_synonyms(per_synonym, synonyms)

        self._cache[key] = embeddings
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return embeddings

    # ------------------------------------------------------------------------------ image
    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """0-255 RGB ``(B, 3, H, W)`` -> CLIP-normalised, zero-padded to multiples of ``dense_stride``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        pad_h = -x.shape[-2] % self._stride
        pad_w = -x.shape[-1] % self._stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def encode_image_dense(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Dense and global CLIP image embeddings in the joint space.

        Args:
            images: float RGB ``(B, 3, H, W)`` on the 0-255 scale, any size (normalised here
                with CLIP's mean/std, zero-padded at the bottom/right to ``dense_stride``).
        Returns:
            ``patch_embeddings``: ``(B, D, ceil(H/s), ceil(W/s))`` with ``s = dense_stride``;
            ``cls_embedding``: ``(B, D)``; both L2-normalised along D. ViT: MaskCLIP-style last
            block (``vit_dense_route``) for patches, CLIP's pooled output for [CLS] (positional
            embedding bicubically resized). ModifiedResNet: v_proj/c_proj per res5 location
            (MaskCLIP), attention pooling with resized positional embedding for [CLS].
        Gradients flow to ``images`` if they require grad (CLIP's weights never get any).
        """
        x = self.normalize_images(images)
        visual = self.model.visual
        if self._tower == "vit":
            dense, pooled = vit_dense_embeddings(visual, x, self.vit_dense_route)
        else:
            res5 = resnet_stages(visual, x)["res5"]
            dense = resnet_dense_embeddings(visual.attnpool, res5)
            pooled = resnet_attnpool(visual.attnpool, res5)
        return {
            "patch_embeddings": F.normalize(dense, dim=1),
            "cls_embedding": F.normalize(pooled, dim=-1),
        }

    def forward(self, class_names: Sequence[str]) -> torch.Tensor:
        """Same as :meth:`encode_vocabulary`."""
        return self.encode_vocabulary(class_names)
