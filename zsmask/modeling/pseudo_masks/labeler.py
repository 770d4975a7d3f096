"""Pseudo labelers: parts of the meta-architecture that add targets for the unannotated regions
of training images, selected by ``MODEL.ZSMASK.PSEUDO_LABELER``.

``clip_kmeans`` (Split Matching, Sec. 3.2) wraps :class:`PseudoMaskGenerator`, an optional
trainable MLP on the region embeddings (Table 3's "dense features + MLP") and an optional
on-disk cache.

On-disk cache and augmentation: an entry is keyed by the SHA-1 of the *augmented* image as the
model receives it (uint8 pixels and size), its unannotated pixels, a hash of the CLIP weights
and every generator setting. A cached result is therefore only ever reused for exactly the same
view, and is never stale: change the augmentation, the CLIP or a setting and the key changes.
It pays off when views recur (no augmentation, or flips only: after the first epochs every view
is a hit); with random scales and crops views almost never recur and the cache only costs disk,
so leave it off there. Masks are stored bit-packed, one bit per pixel and mask (masks of
several K-means scales may overlap), region embeddings in float32 (before the MLP, which trains).
"""
import hashlib
import logging
import os
from typing import List, Optional

import numpy as np

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn

from ...utils import cache_dir
from ..clip.region_attention import check_region_attention_tower, first_region_block
from ..clip.shared import frozen_clip, weights_digest
from ..layers import MLP
from ..registries import get_registered
from .generator import PseudoMaskGenerator, PseudoMasks

__all__ = ["PSEUDO_LABELER_REGISTRY", "build_pseudo_labeler", "CLIPKMeansPseudoLabeler", "PseudoMaskCache",
           "clip_weights_digest"]

logger = logging.getLogger(__name__)

PSEUDO_LABELER_REGISTRY = Registry("ZSMASK_PSEUDO_LABELER")
PSEUDO_LABELER_REGISTRY.__doc__ = """
Pseudo labelers keyed by ``MODEL.ZSMASK.PSEUDO_LABELER``; called as ``cls(cfg, embed_dim=D)``;
``forward(clip, images (B, 3, H, W) 0-255, unannotated (B, H, W) bool) -> List[PseudoMasks]``.
"""


def build_pseudo_labeler(cfg, embed_dim: int) -> Optional[nn.Module]:
    """The labeler named by ``MODEL.ZSMASK.PSEUDO_LABELER``, or None when it is empty."""
    name = cfg.MODEL.ZSMASK.PSEUDO_LABELER
    if not name:
        return None
    labeler = get_registered(PSEUDO_LABELER_REGISTRY, name, "pseudo labeler", "MODEL.ZSMASK.PSEUDO_LABELER")
    return labeler(cfg, embed_dim=embed_dim)


def resolve_cache_dir(setting: str) -> str:
    """``MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CACHE_DIR``: "" (off), "auto" (``<zsmask cache>/pseudo_masks``,
    see :func:`zsmask.utils.cache_dir`) or a folder."""
    if setting == "auto":
        return os.path.join(cache_dir(), "pseudo_masks")
    return os.path.expanduser(setting)


def clip_weights_digest(clip) -> str:
    """SHA-1 of a CLIP module's parameter and buffer values (persistent across runs)."""
    return weights_digest(clip.model, "sha1")


class PseudoMaskCache:
    """Pseudo masks on disk under ``root/<key[:2]>/<key>.pt`` (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(identity: str, image: torch.Tensor, unannotated: torch.Tensor) -> str:
        digest = hashlib.sha1(identity.encode())
        digest.update(str(tuple(image.shape)).encode())
        digest.update(image.detach().round().clamp(0, 255).to("cpu", torch.uint8).contiguous().numpy().tobytes())
        digest.update(unannotated.detach().to("cpu", torch.bool).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key + ".pt")

    def load(self, key: str, device) -> Optional[PseudoMasks]:
        path = self._path(key)
        if not os.path.isfile(path):
            self.misses += 1
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            embeddings = entry["embeddings"]
            count, height, width = (int(v) for v in entry["shape"])
            bits = np.unpackbits(entry["packed"].numpy(), count=count * height * width)
            masks = torch.from_numpy(bits.astype(bool)).view(count, height, width)
            if masks.shape[0] != embeddings.shape[0]:
                raise ValueError(f"{masks.shape[0]} masks for {embeddings.shape[0]} embeddings")
        except Exception as error:  # a damaged entry is recomputed, never trusted
            logger.warning(f"pseudo-mask cache entry {path} is unreadable ({error}); recomputing it")
            self.misses += 1
            return None
        self.hits += 1
        return PseudoMasks(masks.to(device), embeddings.to(device))

    def store(self, key: str, pseudo: PseudoMasks) -> None:
        masks = pseudo.masks.cpu()
        packed = torch.from_numpy(np.packbits(masks.numpy().astype(bool).ravel()))
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        torch.save({"packed": packed, "shape": torch.tensor(masks.shape), "embeddings": pseudo.embeddings.float().cpu()},
                   tmp)
        os.replace(tmp, path)


class CLIPKMeansPseudoLabeler(nn.Module):
    """Split Matching's pseudo masks Y_u and region embeddings C_u (Sec. 3.2)."""

    @configurable
    def __init__(self, *, generator: PseudoMaskGenerator, embed_dim: int, embedding_mlp: bool = False,
                 cache_dir: str = ""):
        """
        Args:
            generator: the frozen-CLIP K-means pseudo-mask generator.
            embed_dim: D of CLIP's joint space.
            embedding_mlp: pass C_u through a trainable 2-layer MLP (Table 3's "F_u + MLP").
            cache_dir: folder of the on-disk cache, "" for none.
        """
        super().__init__()
        self.generator = generator
        self.embedding_mlp = MLP(embed_dim, embed_dim, embed_dim, 2) if embedding_mlp else None
        self.cache = PseudoMaskCache(cache_dir) if cache_dir else None
        self._identity = None  # (CLIP runtime fingerprint, persistent identity string)

    @classmethod
    def from_config(cls, cfg, embed_dim: int):
        pm = cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS
        generator_args = PseudoMaskGenerator.from_config(cfg)
        embedding_mlp = pm.REGION_EMBEDDING == "dense_mlp"
        what = f"MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING {pm.REGION_EMBEDDING}"
        if pm.REGION_EMBEDDING == "cls_attention":  # fail at build, not at the first pseudo mask
            first_region_block(frozen_clip(cfg).visual, pm.REGION_ATTENTION_LAYERS, f"{what} (REGION_ATTENTION_LAYERS)")
        elif pm.REGION_EMBEDDING == "region_tokens":
            check_region_attention_tower(frozen_clip(cfg).visual, what)
        if embedding_mlp:
            generator_args["region_embedding"] = "dense"
        return {
            "generator": PseudoMaskGenerator(**generator_args),
            "embed_dim": embed_dim,
            "embedding_mlp": embedding_mlp,
            "cache_dir": resolve_cache_dir(pm.CACHE_DIR),
        }

    def _cache_identity(self, clip) -> str:
        fingerprint = clip._weights_fingerprint()
        if self._identity is None or self._identity[0] != fingerprint:
            self._identity = (fingerprint, f"{clip_weights_digest(clip)}|{self.generator.settings}")
        return self._identity[1]

    def forward(self, clip, images: torch.Tensor, unannotated: torch.Tensor) -> List[PseudoMasks]:
        """``images`` (B, 3, H, W) RGB 0-255, ``unannotated`` (B, H, W) bool -> one
        :class:`PseudoMasks` per image (embeddings L2-normalised, after the MLP if any)."""
        if self.cache is None:
            results = self.generator(clip, images, unannotated)
        else:
            identity = self._cache_identity(clip)
            keys = [self.cache.key(identity, images[i], unannotated[i]) for i in range(images.shape[0])]
            results = [self.cache.load(key, images.device) for key in keys]
            missing = [i for i, r in enumerate(results) if r is None]
            if missing:
                computed = self.generator(clip, images[missing], unannotated[missing])
                for i, pseudo in zip(missing, computed):
                    self.cache.store(keys[i], pseudo)
                    results[i] = pseudo
        if self.embedding_mlp is not None:
            results = [PseudoMasks(r.masks, F.normalize(self.embedding_mlp(r.embeddings), dim=-1)) for r in results]
        return results


PSEUDO_LABELER_REGISTRY._do_register("clip_kmeans", CLIPKMeansPseudoLabeler)
