"""Pseudo masks Y_u and region embeddings C_u for the unannotated regions of training images
(Split Matching Sec. 3.2, following CLIP-ZSS's multi-scale K-means and mask fusion).

Per image: frozen CLIP dense features O (``encode_image_dense``) -> seeds G (Eq. 1) -> K-means
over the unannotated cells, one per window size (``kmeans_scales="per_scale"``, CLIP-ZSS's
multi-scale K-means) or one from all seeds (``"joint"``) -> fusion of clusters with similar
centroids, across scales -> one mask per fused cluster, intersected with the unannotated pixels
at image resolution (so a pseudo mask never covers an annotated pixel) -> masks that overlap
another by more than ``duplicate_iou`` merged into it (clusters of one region at several
scales) -> C_u, the CLIP [CLS] embedding of the image with everything
outside the mask replaced by CLIP's mean pixel (``region_embedding="cls"``, the paper's: one
CLIP forward per mask), the [CLS] embedding of one copy per mask that attends, in CLIP's last
``region_attention_layers`` blocks, only to the patch tokens its mask covers (``"cls_attention"``:
all masks of an image from the same forward that gives the dense features), the [CLS] of CLIP
run on each mask's own cells, all masks of an image packed in one sequence (``"region_tokens"``;
both in :mod:`~zsmask.modeling.clip.region_attention`), or the mask-averaged dense feature
(``"dense"``).
"""
from dataclasses import dataclass
from typing import List, Sequence

import torch
from detectron2.config import configurable

from ..clip.region_views import cell_fractions, mask_pooled_embeddings
from .kmeans import KMEANS_SCALES, fuse_clusters, fused_cell_masks, kmeans_clusters, merge_duplicates

__all__ = ["PseudoMasks", "PseudoMaskGenerator", "REGION_EMBEDDINGS"]

REGION_EMBEDDINGS = ("cls", "cls_attention", "region_tokens", "dense")
_CLIP_BATCH = 32  # masked images per CLIP forward


@dataclass
class PseudoMasks:
    """Pseudo masks of one image: ``masks`` ``(U, H, W)`` bool, ``embeddings`` ``(U, D)``
    L2-normalised C_u; U may be 0. Ordered by area, largest first."""

    masks: torch.Tensor
    embeddings: torch.Tensor


class PseudoMaskGenerator:
    """Builds :class:`PseudoMasks` for a batch; holds no weights (CLIP is passed in)."""

    @configurable
    def __init__(
        self,
        *,
        window_sizes: Sequence[int] = (4, 8, 16),
        kmeans_iterations: int = 10,
        fusion_threshold: float = 0.9,
        min_area: float = 0.005,
        max_masks: int = 20,
        cell_unannotated_fraction: float = 0.5,
        region_embedding: str = "cls",
        kmeans_scales: str = "per_scale",
        duplicate_iou: float = 0.5,
        region_attention_layers: int = 3,
    ):
        """
        Args:
            window_sizes: Eq. 1's window sizes S, in cells of the CLIP feature grid.
            kmeans_iterations: K-means rounds.
            fusion_threshold: centroids with cosine similarity above it are merged.
            min_area: smallest pseudo mask kept, as a fraction of the image's pixels.
            max_masks: at most this many pseudo masks per image (the largest).
            cell_unannotated_fraction: a feature cell is clustered when more than this
                fraction of its pixels is unannotated.
            region_embedding: "cls" (CLIP [CLS] of the masked image), "cls_attention" (a [CLS]
                copy attending to the mask's patches in the last blocks), "region_tokens"
                (CLIP on the mask's own cells, packed) or "dense" (mask-averaged dense CLIP features).
            kmeans_scales: "per_scale" (one K-means per window size) or "joint" (one K-means
                from the seeds of all window sizes).
            duplicate_iou: masks overlapping by more than this IoU are merged (>= 1: never).
            region_attention_layers: CLIP's last blocks in which "cls_attention" copies see
                only their mask (before them, the [CLS] of the whole image).
        """
        if kmeans_scales not in KMEANS_SCALES:
            raise ValueError(f"kmeans_scales must be one of {KMEANS_SCALES}, got {kmeans_scales!r}")
        if region_embedding not in REGION_EMBEDDINGS:
            raise ValueError(f"region_embedding must be one of {REGION_EMBEDDINGS}, got {region_embedding!r}")
        if not 0.0 <= fusion_threshold <= 1.0:
            raise ValueError(f"fusion_threshold must be in [0, 1], got {fusion_threshold}")
        self.window_sizes = tuple(int(s) for s in window_sizes)
        self.kmeans_iterations = kmeans_iterations
        self.fusion_threshold = fusion_threshold
        self.min_area = min_area
        self.max_masks = max_masks
        self.cell_unannotated_fraction = cell_unannotated_fraction
        self.region_embedding = region_embedding
        self.kmeans_scales = kmeans_scales
        self.duplicate_iou = float(duplicate_iou)
        if region_attention_layers < 1:
            raise ValueError(f"region_attention_layers must be >= 1, got {region_attention_layers}")
        self.region_attention_layers = int(region_attention_layers)

    @classmethod
    def from_config(cls, cfg):
        pm = cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS
        return {
            "window_sizes": list(pm.WINDOW_SIZES),
            "kmeans_iterations": pm.KMEANS_ITERATIONS,
            "fusion_threshold": pm.FUSION_THRESHOLD,
            "min_area": pm.MIN_AREA,
            "max_masks": pm.MAX_MASKS,
            "cell_unannotated_fraction": pm.CELL_UNANNOTATED_FRACTION,
            "region_embedding": pm.REGION_EMBEDDING,
            "kmeans_scales": pm.KMEANS_SCALES,
            "duplicate_iou": pm.DUPLICATE_IOU,
            "region_attention_layers": pm.REGION_ATTENTION_LAYERS,
        }

    @property
    def settings(self) -> tuple:
        """What the masks and embeddings depend on besides CLIP and the image (cache identity)."""
        settings = (self.window_sizes, self.kmeans_iterations, self.fusion_threshold, self.min_area, self.max_masks,
                    self.cell_unannotated_fraction, self.region_embedding, self.kmeans_scales, self.duplicate_iou)
        if self.region_embedding == "cls_attention":
            settings += (self.region_attention_layers,)
        return settings

    def _dense_pass(self, clip, images: torch.Tensor):
        """CLIP's dense features (B, D, h, w), and for "cls_attention" the tokens its copies need."""
        layers = self.region_attention_layers if self.region_embedding == "cls_attention" else 0
        out = clip.encode_image_dense(images, region_layers=layers)
        return out["patch_embeddings"].float(), out.get("block_inputs")

    def cluster(self, dense: torch.Tensor, cell_valid: torch.Tensor) -> torch.Tensor:
        """Cells of every fused cluster: ``dense`` ``(B, D, h, w)``, ``cell_valid`` ``(B, h, w)``
        bool -> ``(B, M, h, w)`` bool (M = the number of seeds; rows of clusters merged into
        another, and of empty ones, are empty)."""
        batch, _, height, width = dense.shape
        members, centroids, counts = kmeans_clusters(dense, cell_valid, self.window_sizes, self.kmeans_iterations,
                                                     self.kmeans_scales)
        component = fuse_clusters(centroids, counts, self.fusion_threshold)  # (B, M)
        return fused_cell_masks(members, component).view(batch, -1, height, width)

    @torch.no_grad()
    def __call__(self, clip, images: torch.Tensor, unannotated: torch.Tensor) -> List[PseudoMasks]:
        """
        Args:
            clip: a :class:`~zsmask.modeling.clip.CLIPTextImageEncoder` (frozen).
            images: ``(B, 3, H, W)`` RGB on the 0-255 scale.
            unannotated: ``(B, H, W)`` bool, the pixels pseudo masks may cover (the ignore
                pixels of the training label, *without* padding).
        Returns:
            one :class:`PseudoMasks` per image, on the images' device.
        """
        if unannotated.shape != (images.shape[0],) + tuple(images.shape[-2:]):
            raise ValueError(f"unannotated {tuple(unannotated.shape)} must be (B, H, W) of images {tuple(images.shape)}")
        dense, block_inputs = self._dense_pass(clip, images)  # (B, D, h, w)
        stride = clip.dense_stride
        cell_valid = cell_fractions(unannotated, dense.shape[-2:], stride) > self.cell_unannotated_fraction
        cells = self.cluster(dense, cell_valid)
        masks = [self._image_masks(cells[i], unannotated[i], stride) for i in range(images.shape[0])]
        return [PseudoMasks(m, e) for m, e in zip(masks, self._region_embeddings(clip, images, dense, block_inputs,
                                                                                 masks))]

    @torch.no_grad()
    def region_embeddings(self, clip, images: torch.Tensor, masks: List[torch.Tensor]) -> List[torch.Tensor]:
        """Region embeddings of any masks, made as C_u is made for pseudo masks: ``images``
        ``(B, 3, H, W)`` RGB 0-255 and ``masks[i]`` ``(U_i, H, W)`` bool -> ``[(U_i, D)]``."""
        dense = block_inputs = None
        if self.region_embedding in ("cls_attention", "dense"):
            dense, block_inputs = self._dense_pass(clip, images)
        return self._region_embeddings(clip, images, dense, block_inputs, masks)

    def _region_embeddings(self, clip, images: torch.Tensor, dense, block_inputs, masks: List[torch.Tensor]):
        """C_u of every image's masks by ``region_embedding``: ``[(U_i, D)]``."""
        if self.region_embedding == "dense":
            return [self._embeddings(clip, images[i], dense[i], m) for i, m in enumerate(masks)]
        if self.region_embedding == "cls_attention":
            return clip.encode_mask_regions(block_inputs, masks)
        if self.region_embedding == "region_tokens":
            return clip.encode_region_tokens(images, masks)
        return self._masked_cls_embeddings(clip, images, masks)

    def _masked_cls_embeddings(self, clip, images: torch.Tensor, masks: List[torch.Tensor]) -> List[torch.Tensor]:
        """C_u of every image's masks from CLIP [CLS] of the masked images, all images' masked
        copies batched together: ``masks[i]`` (U_i, H, W) -> ``[(U_i, D)]``."""
        image_index = torch.cat([torch.full((m.shape[0],), i, dtype=torch.long) for i, m in enumerate(masks)])
        flat = torch.cat(masks, dim=0)
        mean = clip.pixel_mean.view(1, 3, 1, 1).to(images.dtype)
        embeddings = [images.new_zeros((0, clip.embed_dim))]
        for start in range(0, flat.shape[0], _CLIP_BATCH):
            keep = flat[start:start + _CLIP_BATCH].unsqueeze(1).to(images.dtype)  # (u, 1, H, W)
            source = images[image_index[start:start + _CLIP_BATCH].to(images.device)]
            masked = source * keep + mean * (1 - keep)
            embeddings.append(clip.encode_image_dense(masked)["cls_embedding"].float())
        return list(torch.cat(embeddings, dim=0).split([m.shape[0] for m in masks]))

    def _image_masks(self, cells: torch.Tensor, unannotated: torch.Tensor, stride: int) -> torch.Tensor:
        """``(M, h, w)`` bool cells of fused clusters -> ``(U, H, W)`` bool masks, largest first."""
        height, width = unannotated.shape
        cell_area = cells.flatten(1).sum(dim=1)
        candidates = torch.nonzero(cell_area, as_tuple=False).flatten()
        candidates = candidates[cell_area[candidates].argsort(descending=True)][: 2 * self.max_masks]
        masks = cells[candidates].repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)[:, :height, :width]
        masks = masks & unannotated.unsqueeze(0)
        masks = masks[masks.flatten(1).sum(dim=1) >= self.min_area * height * width]
        masks = merge_duplicates(masks, self.duplicate_iou)
        return masks[masks.flatten(1).sum(dim=1).argsort(descending=True)][: self.max_masks]

    def _embeddings(self, clip, image: torch.Tensor, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """C_u ``(U, D)`` of one image's masks (``image`` (3, H, W), ``dense`` (D, h, w))."""
        if masks.shape[0] == 0:
            return dense.new_zeros((0, dense.shape[0]))
        if self.region_embedding == "dense":
            return mask_pooled_embeddings(dense, masks, clip.dense_stride)
        return self._masked_cls_embeddings(clip, image[None], [masks])[0]
