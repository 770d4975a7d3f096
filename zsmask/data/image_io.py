"""Reading images and label maps with clear errors and the conversions users expect.

* Images of any PIL mode become 8-bit RGB (or BGR): grayscale is replicated, palette and
  CMYK are converted, RGBA drops its alpha, 16-bit and 32-bit grayscale are rescaled from
  their full range (not clipped), and EXIF orientation is applied (as detectron2 does).
* Label maps must hold single-channel class ids (8 or 16 bit); dataset ids are turned into
  vocabulary indices with a look-up table, and ids that are neither a class nor the ignore
  label are reported with the file's path.
"""
import glob
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .splits import UNMAPPED

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "LabelFileError", "array_to_rgb", "find_images", "pil_to_array",
           "label_size", "read_image", "read_sem_seg", "check_same_size", "unique_output_paths"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image file is missing, unreadable or corrupt."""


class LabelFileError(ValueError):
    """A label file is unreadable, has the wrong format or size, or holds unknown ids."""


_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Rescale a high-bit-depth single-channel array to uint8 (full range, not clipped)."""
    arr = arr.astype(np.float64)
    if mode == "F":
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0 if arr.max(initial=0.0) <= 255.0 else arr.max()
    else:
        top = 255.0 if arr.max(initial=0) <= 255 else 65535.0
    return np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def pil_to_array(img: Image.Image, format: str = "RGB") -> np.ndarray:
    """An opened PIL image as ``(H, W, 3)`` uint8 in ``format`` ("RGB" or "BGR"), converted as
    the module docstring says (EXIF orientation applied)."""
    if format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {format!r}")
    img = ImageOps.exif_transpose(img)
    img.load()
    if img.mode in _HIGH_DEPTH_MODES:
        gray = _to_uint8(np.asarray(img), img.mode)
        arr = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        arr = np.asarray(img.convert("RGB"))
    if format == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def array_to_rgb(array: np.ndarray, format: str = "RGB") -> np.ndarray:
    """An in-memory image as ``(H, W, 3)`` uint8 RGB.

    ``array`` is ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` in ``format`` ("RGB", or "BGR"
    as OpenCV returns) or ``(H, W, 4)`` with alpha (dropped); uint8, uint16 (rescaled from
    its full range), bool, or float (on [0, 1] when its maximum is at most 1, else [0, 255]).
    """
    if format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {format!r}")
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape[:2]:
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("the image array holds NaN or infinite values")
        arr = _to_uint8(arr, "F")
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0:
            raise ValueError(f"expected uint8, uint16, bool or float image values, got dtype {arr.dtype}")
        arr = _to_uint8(arr, "I")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3]
    if format == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _too_many_pixels(error: Exception) -> str:
    """PIL's decompression-bomb refusal (raised from the header, before decoding) in words."""
    counts = [int(n) for n in re.findall(r"(\d+) pixels", str(error))]
    declared = f"{counts[0]:,} pixels" if counts else "more pixels than PIL decodes safely"
    limit = f", more than the {counts[1]:,} that PIL decodes safely" if len(counts) > 1 else ""
    return (f"it declares {declared}{limit} (a decompression bomb, or an image far larger than segmentation "
            "needs); resize it")


def read_image(path: str, format: str = "RGB") -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 array in ``format`` ("RGB" or "BGR").

    Raises:
        ImageReadError: the file is missing, not an image, or truncated / corrupt.
    """
    if format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {format!r}")
    try:
        with Image.open(path) as img:
            return pil_to_array(img, format)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"cannot read image {path}: {_too_many_pixels(e)}") from e
    except FileNotFoundError as e:
        raise ImageReadError(f"image not found: {path}") from e
    except IsADirectoryError as e:
        raise ImageReadError(f"expected an image file, got a folder: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e


def label_size(path: str) -> Tuple[int, int]:
    """``(H, W)`` of a label file from its header (the pixels are not read).

    Raises:
        LabelFileError: the file is missing or not an image.
    """
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Image.DecompressionBombError as e:
        raise LabelFileError(f"cannot read label file {path}: {_too_many_pixels(e)}") from e
    except FileNotFoundError as e:
        raise LabelFileError(f"label file not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LabelFileError(f"cannot read label file {path}: {e}") from e


def read_sem_seg(path: str, label_map: Optional[np.ndarray] = None, ignore_label: int = 255) -> np.ndarray:
    """Read a label file as an ``(H, W)`` int64 array.

    Args:
        path: single-channel PNG (mode L, P or I;16) holding dataset class ids.
        label_map: optional look-up table (see :func:`~zsmask.data.splits.vocabulary_label_map`)
            applied to the ids; ids it marks as unmapped raise :class:`LabelFileError`.
        ignore_label: only used in messages.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P") + _HIGH_DEPTH_MODES[:-1]:
                raise LabelFileError(
                    f"label file {path} has mode {img.mode}; labels must be single-channel class ids "
                    "(8-bit L/P or 16-bit PNG). Colour-coded labels need converting (datasets/prepare_*.py)"
                )
            arr = np.asarray(img).astype(np.int64)
    except Image.DecompressionBombError as e:
        raise LabelFileError(f"cannot read label file {path}: {_too_many_pixels(e)}") from e
    except FileNotFoundError as e:
        raise LabelFileError(f"label file not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise LabelFileError(f"cannot read label file {path}: {e}") from e
    if label_map is None:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() >= len(label_map)):
        raise LabelFileError(f"label file {path} holds ids outside [0, {len(label_map) - 1}]")
    mapped = label_map[arr].astype(np.int64)
    bad = mapped == UNMAPPED
    if bad.any():
        ids = np.unique(arr[bad]).tolist()
        n = int((label_map != UNMAPPED).sum()) - 1
        raise LabelFileError(
            f"label file {path} holds ids {ids[:10]} that are neither a class id of the dataset "
            f"nor the ignore label {ignore_label}; expected ids 0..{n - 1} (was it converted by "
            "the prepare script?)"
        )
    return mapped


def check_same_size(image_hw: Tuple[int, int], label_hw: Tuple[int, int], image_path: str, label_path: str) -> None:
    """Raise :class:`LabelFileError` naming both files when image and label sizes differ."""
    if tuple(image_hw) != tuple(label_hw):
        raise LabelFileError(
            f"label file {label_path} is {label_hw[0]}x{label_hw[1]} (HxW) but its image "
            f"{image_path} is {image_hw[0]}x{image_hw[1]}"
        )


def find_images(patterns: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The files named by command-line ``patterns`` and the problems found: a file is taken as
    given (an unreadable one is reported when it is read), a folder gives its image files
    (:data:`IMAGE_EXTENSIONS`, sorted, not recursive) and a glob pattern its matching files
    (sorted). Returns ``(paths without repeats, problem messages)``; a folder without images
    or a pattern without matches is a problem."""
    paths, problems = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, name) for name in os.listdir(pattern)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(pattern, name)))
            if not found:
                problems.append(f"folder {pattern} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.exists(pattern) or not glob.has_magic(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
            if not found:
                problems.append(f"no file matches {pattern}")
        paths.extend(found)
    return list(dict.fromkeys(paths)), problems


def unique_output_paths(inputs: Sequence[str], folder: str, extension: str = ".png") -> List[str]:
    """``<folder>/<input name><extension>`` per input, ``_1``, ``_2`` ... added when inputs from
    different folders share a name."""
    taken, paths = set(), []
    for path in inputs:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in taken:
            name, n = f"{stem}_{n}", n + 1
        taken.add(name)
        paths.append(os.path.join(folder, name + extension))
    return paths
