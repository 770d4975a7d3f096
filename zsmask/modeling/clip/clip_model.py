"""Frozen CLIP as a zsmask component: text classifier weights and dense image embeddings."""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from .region_attention import (check_region_attention_tower, copies_to_embeddings, decode_cls_copies,
                               first_region_block, region_attention_bias, region_token_embeddings)
from .shared import frozen_clip, weights_state
from .templates import resolve_templates, validate_templates
from .visual_towers import (
    VIT_DENSE_ROUTES,
    resnet_attnpool,
    resnet_dense_embeddings,
    resnet_stages,
    run_blocks,
    tower_kind,
    tower_stride,
    vit_embed,
    vit_last_block_dense,
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

    def encode_image_dense(self, images: torch.Tensor, region_layers: int = 0) -> Dict[str, torch.Tensor]:
        """Dense and global CLIP image embeddings in the joint space.

        Args:
            images: float RGB ``(B, 3, H, W)`` on the 0-255 scale, any size (normalised here
                with CLIP's mean/std, zero-padded at the bottom/right to ``dense_stride``).
            region_layers: also keep the tokens entering CLIP's last ``region_layers`` blocks,
                for :meth:`encode_mask_regions` (ViT towers only; 0: none).
        Returns:
            ``patch_embeddings``: ``(B, D, ceil(H/s), ceil(W/s))`` with ``s = dense_stride``;
            ``cls_embedding``: ``(B, D)``; both L2-normalised along D. ViT: MaskCLIP-style last
            block (``vit_dense_route``) for patches, CLIP's pooled output for [CLS] (positional
            embedding bicubically resized). ModifiedResNet: v_proj/c_proj per res5 location
            (MaskCLIP), attention pooling with resized positional embedding for [CLS]. With
            ``region_layers``, ``block_inputs``: a list of ``region_layers`` tokens
            ``(B, 1 + h*w, width)``, the input of each of the last blocks in order.
        Gradients flow to ``images`` if they require grad (CLIP's weights never get any).
        """
        x = self.normalize_images(images)
        visual = self.model.visual
        block_inputs = None
        if region_layers:  # a ValueError for towers without [CLS] copies (ResNets)
            first = first_region_block(visual, region_layers, "encode_image_dense(region_layers=...)")
        if self._tower == "vit":
            blocks = visual.transformer.resblocks
            first = first if region_layers else len(blocks)
            tokens, grid = vit_embed(visual, x)
            # taps are 1-based "after block i" of blocks[:-1]: the input of block j is tap j
            penultimate, tapped = run_blocks(blocks[:-1], tokens, getattr(visual.transformer, "batch_first", True),
                                             taps=range(max(first, 1), len(blocks)))
            if region_layers:
                block_inputs = [tokens if j == 0 else tapped.get(j, penultimate) for j in range(first, len(blocks))]
            dense, pooled = vit_last_block_dense(visual, penultimate, grid, self.vit_dense_route)
        else:
            res5 = resnet_stages(visual, x)["res5"]
            dense = resnet_dense_embeddings(visual.attnpool, res5)
            pooled = resnet_attnpool(visual.attnpool, res5)
        out = {
            "patch_embeddings": F.normalize(dense, dim=1),
            "cls_embedding": F.normalize(pooled, dim=-1),
        }
        if block_inputs is not None:
            out["block_inputs"] = block_inputs
        return out

    def encode_mask_regions(self, block_inputs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Region embeddings of each image's masks from one forward (:meth:`encode_image_dense`
        with ``region_layers``): in the blocks of ``block_inputs`` one [CLS] copy per mask
        attends to itself and to the patch tokens its mask covers, each cell's logit biased
        by the log of the fraction it covers (:mod:`~zsmask.modeling.clip.region_attention`),
        while the patch tokens run as in plain CLIP; copies of one image never see another image.

        Args:
            block_inputs: ``encode_image_dense(images, k)["block_inputs"]``, k tensors
                ``(B, 1 + h*w, width)``.
            masks: B tensors ``(U_i, H, W)`` bool (or float coverage in [0, 1]) at the input
                images' size (U_i may be 0).
        Returns:
            B tensors ``(U_i, D)``, L2-normalised; the row of an empty mask (no region to see)
            is zero, and it takes no part in the forward.
        """
        visual = self.model.visual
        if len(masks) != block_inputs[0].shape[0]:
            raise ValueError(f"{len(masks)} mask sets for {block_inputs[0].shape[0]} images")
        blocks = list(visual.transformer.resblocks)[-len(block_inputs):]
        size = tuple(masks[0].shape[-2:]) if masks else (0, 0)
        grid = (-(-size[0] // self._stride), -(-size[1] // self._stride))
        if grid[0] * grid[1] != block_inputs[0].shape[1] - 1:
            raise ValueError(f"masks of {size} give a {grid} patch grid; the tokens hold "
                             f"{block_inputs[0].shape[1] - 1} patches (masks must be at the images' size)")
        nonempty = [m.flatten(1).any(dim=1) for m in masks]
        count = max([int(n.sum()) for n in nonempty] + [0])
        dim = self.embed_dim
        dtype = block_inputs[0].dtype
        results = [block_inputs[0].new_zeros((m.shape[0], dim), dtype=torch.float32) for m in masks]
        if count == 0:
            return results
        padded = block_inputs[0].new_zeros((len(masks), count) + size)  # (B, N, H, W), empty rows: padding
        for i, (m, keep) in enumerate(zip(masks, nonempty)):
            padded[i, :int(keep.sum())] = m[keep].to(dtype)
        bias = region_attention_bias(padded, grid, self._stride)
        copies = block_inputs[0][:, :1].expand(-1, count, -1)
        decoded = decode_cls_copies(blocks, copies, [t[:, 1:] for t in block_inputs], bias)
        embeddings = F.normalize(copies_to_embeddings(visual.ln_post, visual.proj, decoded).float(), dim=-1)
        for i, keep in enumerate(nonempty):
            results[i][keep] = embeddings[i, :int(keep.sum())]
        return results

    def encode_region_tokens(self, images: torch.Tensor, masks: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Region embeddings of each image's masks, CLIP run on each region's own cells (the
        cells a mask touches, outside pixels at CLIP's mean), all regions of an image packed
        into one sequence with block-diagonal attention
        (:func:`~zsmask.modeling.clip.region_attention.region_token_embeddings`); the sequence
        is split where it would exceed the image's own token count, so an image never costs
        much more than about one forward per its masks' total cell count over its grid.

        Args:
            images: ``(B, 3, H, W)`` RGB 0-255. masks: B tensors ``(U_i, H, W)`` bool at the
                images' size (U_i may be 0).
        Returns:
            B tensors ``(U_i, D)``, L2-normalised; the row of an empty mask is zero.
        """
        visual = self.model.visual
        check_region_attention_tower(visual, "REGION_EMBEDDING region_tokens")
        if len(masks) != images.shape[0]:
            raise ValueError(f"{len(masks)} mask sets for {images.shape[0]} images")
        x = self.normalize_images(images)
        budget = (x.shape[-2] // self._stride) * (x.shape[-1] // self._stride) + 1
        results = []
        for image, image_masks in zip(x, masks):
            if tuple(image_masks.shape[-2:]) != tuple(images.shape[-2:]):
                raise ValueError(f"masks {tuple(image_masks.shape)} must be (U, H, W) of the images "
                                 f"{tuple(images.shape)}")
            padded = F.pad(image_masks.bool(), (0, x.shape[-1] - images.shape[-1], 0, x.shape[-2] - images.shape[-2]))
            keep = padded.flatten(1).any(dim=1)
            out = image.new_zeros((image_masks.shape[0], self.embed_dim), dtype=torch.float32)
            regions = padded[keep]
            cells = F.max_pool2d(regions[:, None].float(), self._stride).flatten(1).sum(dim=1) + 1  # tokens
            embeddings, start = [], 0
            while start < regions.shape[0]:  # consecutive groups within the token budget (at least one region)
                stop = start + 1
                while stop < regions.shape[0] and float(cells[start:stop + 1].sum()) <= budget:
                    stop += 1
                embeddings.append(region_token_embeddings(visual, image, regions[start:stop]))
                start = stop
            if embeddings:
                out[keep] = F.normalize(torch.cat(embeddings).float(), dim=-1)
            results.append(out)
        return results

    def forward(self, class_names: Sequence[str]) -> torch.Tensor:
        """Same as :meth:`encode_vocabulary`."""
        return self.encode_vocabulary(class_names)
