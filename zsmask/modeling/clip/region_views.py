"""How a region of an image is shown to CLIP's image tower: the three views mask classifiers use.

* ``masked_image``: the whole canvas with every pixel outside the region replaced by a fill
  (CLIP's mean pixel, which normalises to zero): Split Matching's region embedding C_u
  (Sec. 3.2) and the masked-image input of MaskCLIP+ / ZegFormer.
* ``masked_crop``: the region's box window, outside pixels filled, resized to CLIP's input
  size: ZegFormer's and OVSeg's masked crops.
* ``context_crop``: the same window without masking (the region with its surroundings, as a
  detector crop).
* ``dense_pooled``: the region's mask averaged over dense (MaskCLIP) patch embeddings of the
  unmasked image, each cell weighted by the fraction of it the mask covers
  (:func:`mask_pooled_embeddings`; Split Matching's ``region_embedding="dense"``).

The box window is the region's bounding box made square around its centre, ``expand`` times
its longer side but never smaller than ``min_side`` (a region smaller than CLIP's input is not
enlarged: the window grows instead), shifted to lie inside the image and cut to the image's
size. It is resized to ``out_size`` x ``out_size`` (bilinear, antialiased when shrinking).
Images are float ``(3, H, W)`` on the 0-255 scale, masks ``(H, W)`` bool.
"""
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGE_VIEWS",
    "REGION_VIEWS",
    "mask_box",
    "box_window",
    "masked_image",
    "crop_window",
    "region_views",
    "cell_fractions",
    "mask_pooled_embeddings",
]

REGION_VIEWS = ("masked_image", "masked_crop", "context_crop", "dense_pooled")
IMAGE_VIEWS = REGION_VIEWS[:3]  # the views made from pixels (``dense_pooled`` is made from features)


def _check(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if mask.shape != image.shape[1:]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (H, W) of the image {tuple(image.shape)}")
    if not bool(mask.any()):
        raise ValueError("the region mask is empty: a view needs at least one region pixel")


def mask_box(mask: torch.Tensor) -> Tuple[int, int, int, int]:
    """Bounding box ``(y0, x0, y1, x1)`` (end exclusive) of a non-empty ``(H, W)`` bool mask."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _span(centre2: int, side: int, limit: int) -> Tuple[int, int]:
    """``[start, start + side)`` around ``centre2 / 2`` shifted inside ``[0, limit)``; side <= limit."""
    start = (centre2 - side) // 2
    start = min(max(start, 0), limit - side)
    return start, start + side


def box_window(mask: torch.Tensor, expand: float = 1.0, min_side: int = 0) -> Tuple[int, int, int, int]:
    """The square window ``(y0, x0, y1, x1)`` around ``mask``'s box (see the module docstring)."""
    y0, x0, y1, x1 = mask_box(mask)
    height, width = mask.shape
    side = max(int(round(expand * max(y1 - y0, x1 - x0))), int(min_side), 1)
    ya, yb = _span(y0 + y1, min(side, height), height)
    xa, xb = _span(x0 + x1, min(side, width), width)
    return ya, xa, yb, xb


def masked_image(image: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``image`` with pixels outside ``mask`` set to ``fill`` (``(3,)``): ``(3, H, W)``."""
    _check(image, mask)
    keep = mask.to(image.dtype).unsqueeze(0)
    return image * keep + fill.to(image).view(3, 1, 1) * (1 - keep)


def _resize(window: torch.Tensor, out_size: int) -> torch.Tensor:
    if tuple(window.shape[-2:]) == (out_size, out_size):
        return window
    shrinking = min(window.shape[-2:]) > out_size
    return F.interpolate(window[None], size=(out_size, out_size), mode="bilinear", align_corners=False,
                         antialias=shrinking)[0]


def crop_window(image: torch.Tensor, mask: torch.Tensor, out_size: int, expand: float = 1.0,
                min_side: int = 0, fill: torch.Tensor = None) -> torch.Tensor:
    """The box window of ``mask`` resized to ``(3, out_size, out_size)``; with ``fill`` the
    pixels outside the region are filled first (``masked_crop``), without it they are kept."""
    source = masked_image(image, mask, fill) if fill is not None else image
    if fill is None:
        _check(image, mask)
    y0, x0, y1, x1 = box_window(mask, expand, min_side)
    return _resize(source[:, y0:y1, x0:x1], out_size)


def region_views(image: torch.Tensor, masks: Sequence[torch.Tensor], fill: torch.Tensor, out_size: int,
                 crop_expand: float = 1.0, context_expand: float = 1.5,
                 min_side: int = None, views: Sequence[str] = IMAGE_VIEWS) -> Dict[str, torch.Tensor]:
    """The pixel views (all of :data:`IMAGE_VIEWS` unless ``views`` names some) of each region
    of one image.

    Args:
        image: ``(3, H, W)`` float, 0-255. masks: ``R`` non-empty ``(H, W)`` bool masks.
        fill: ``(3,)`` fill colour (CLIP's mean pixel). out_size: CLIP's input side.
        crop_expand / context_expand: window side over the box's longer side for the masked
            crop / the crop with context. min_side: smallest window side (default ``out_size``).
    Returns:
        ``{"masked_image": (R, 3, H, W), "masked_crop": (R, 3, S, S), "context_crop": (R, 3, S, S)}``
        with ``S = out_size``, restricted to ``views``.
    """
    unknown = [v for v in views if v not in IMAGE_VIEWS]
    if unknown:
        raise ValueError(f"Unknown region view(s) {unknown}; pixel views are {IMAGE_VIEWS}")
    min_side = out_size if min_side is None else min_side
    makers = {
        "masked_image": lambda m: masked_image(image, m, fill),
        "masked_crop": lambda m: crop_window(image, m, out_size, crop_expand, min_side, fill),
        "context_crop": lambda m: crop_window(image, m, out_size, context_expand, min_side),
    }
    if len(masks) == 0:
        shapes = {"masked_image": tuple(image.shape), "masked_crop": (3, out_size, out_size),
                  "context_crop": (3, out_size, out_size)}
        return {v: image.new_zeros((0,) + shapes[v]) for v in views}
    return {v: torch.stack([makers[v](m) for m in masks]) for v in views}


def cell_fractions(masks: torch.Tensor, grid: Tuple[int, int], stride: int) -> torch.Tensor:
    """Fraction of each ``stride x stride`` feature cell covered by ``masks`` ``(N, H, W)``
    (zero-padded at the bottom / right to the ``(h, w)`` grid): ``(N, h, w)``."""
    height, width = masks.shape[-2:]
    padded = F.pad(masks.float(), (0, grid[1] * stride - width, 0, grid[0] * stride - height))
    return F.avg_pool2d(padded.unsqueeze(1), stride).squeeze(1)


def mask_pooled_embeddings(dense: torch.Tensor, masks: torch.Tensor, stride: int) -> torch.Tensor:
    """Region embeddings ``(U, D)`` (L2-normalised) of ``masks`` ``(U, H, W)`` from one image's
    dense embeddings ``dense`` ``(D, h, w)``: the cell-fraction-weighted sum of the cells."""
    if masks.shape[0] == 0:
        return dense.new_zeros((0, dense.shape[0]))
    weights = cell_fractions(masks, dense.shape[-2:], stride).flatten(1).to(dense.dtype)  # (U, h*w)
    return F.normalize(weights @ dense.flatten(1).T, dim=-1)
