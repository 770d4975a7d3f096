"""Drawing label maps with unseen classes marked.

Used by ``demo/visualize_split.py`` (ground truth of any registered variant), the quick start
(prediction beside ground truth on validation images) and ``demo/demo.py`` (predictions on the
user's images with any vocabulary: :func:`draw_prediction`).
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = ["UNSEEN_MARK", "draw_label_map", "draw_legend", "draw_overlay", "draw_prediction", "marked_metadata",
           "prediction_panel", "titled", "vocabulary_colors"]

UNSEEN_MARK = " [unseen]"


def marked_metadata(dataset_name: str) -> Metadata:
    """Metadata for drawing ``dataset_name``'s vocabulary: unseen class names get "[unseen]"."""
    meta = MetadataCatalog.get(dataset_name)
    unseen = set(meta.get("unseen_classes", []))
    names = [n + (UNSEEN_MARK if i in unseen else "") for i, n in enumerate(meta.stuff_classes)]
    return Metadata(stuff_classes=names, stuff_colors=meta.get("stuff_colors"))


def draw_label_map(image: np.ndarray, label: np.ndarray, metadata: Metadata, ignore_label: int = 255,
                   scale: float = 1.0, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with ``label`` (``(H, W)`` vocabulary indices) drawn over it;
    ``ignore_label`` pixels are left undrawn. ``scale`` enlarges the canvas (text stays legible
    on small images); ``alpha`` is the colours' opacity."""
    label = np.where(label == ignore_label, len(metadata.stuff_classes), label)  # never drawn
    visualizer = Visualizer(image, metadata=metadata, scale=scale)
    return visualizer.draw_sem_seg(label, alpha=alpha).get_image()


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` under a white 24-pixel strip holding ``title``."""
    strip = np.full((24, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def prediction_panel(image: np.ndarray, ground_truth: np.ndarray, prediction: np.ndarray, dataset_name: str,
                     scale: float = 3.0, titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """``[image | ground truth | prediction]`` side by side (uint8 RGB), unseen classes marked.

    ``ground_truth`` and ``prediction`` are ``(H, W)`` vocabulary indices of ``dataset_name``;
    the ground truth's ignore label is not drawn.
    """
    metadata = marked_metadata(dataset_name)
    ignore = MetadataCatalog.get(dataset_name).get("ignore_label", 255)
    height, width = int(round(image.shape[0] * scale)), int(round(image.shape[1] * scale))
    plain = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    panels = [plain, draw_label_map(image, ground_truth, metadata, ignore, scale),
              draw_label_map(image, prediction, metadata, ignore, scale)]
    titles = titles or ("image", "ground truth", "prediction")
    panels = [titled(cv2.resize(p, (width, height)), t) for p, t in zip(panels, titles)]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


# ------------------------------------------------------------------ predictions on the user's images
MIN_LEGEND_WIDTH = 200
UNSEEN_TEXT_COLOR = (200, 0, 0)
UNSEEN_OUTLINE_COLOR = (255, 255, 255)


def _palette() -> List[Tuple[int, int, int]]:
    """detectron2's colour map without its greys, black and white (they would hide the white
    outline of unseen regions and read as "nothing") and without repeats: 60 colours."""
    colours = [tuple(int(round(c)) for c in colour) for colour in colormap(rgb=True, maximum=255)]
    return list(dict.fromkeys(c for c in colours if max(c) - min(c) >= 60))


def vocabulary_colors(class_names: Sequence[str]) -> List[Tuple[int, int, int]]:
    """One RGB colour per class, by its position in the vocabulary, from a palette of 60
    well-separated colours (:func:`_palette`, repeating beyond): a fixed vocabulary colours a
    class the same on every image and video frame."""
    palette = _palette()
    return [palette[i % len(palette)] for i in range(len(class_names))]


def _auto_scale(height: int, width: int, short_side: int = 384) -> float:
    """Enlargement that brings a small image's short side to ``short_side`` (labels stay legible)."""
    return max(1.0, short_side / max(1, min(height, width)))


def draw_legend(entries: Sequence[Tuple[str, Tuple[int, int, int], float, bool]], height: int) -> np.ndarray:
    """A white ``(max(height, needed), width, 3)`` uint8 panel listing ``(name, colour, pixel
    fraction, unseen)`` rows: a swatch, the class's share of the image and its name. Unseen
    classes are marked three ways: red text, an "[unseen]" tag and a black-framed swatch."""
    row, top, font, size = 22, 30, cv2.FONT_HERSHEY_SIMPLEX, 0.42
    labels = [name + (UNSEEN_MARK if unseen else "") for name, _, _, unseen in entries]
    num_unseen = sum(1 for entry in entries if entry[3])
    title = f"{len(entries)} classes, {num_unseen} unseen"
    text_width = max([cv2.getTextSize(t, font, size, 1)[0][0] for t in labels + [title]] + [0])
    panel = np.full((max(height, top + row * len(entries) + 8), max(MIN_LEGEND_WIDTH, 90 + text_width), 3), 255,
                    dtype=np.uint8)
    cv2.putText(panel, title, (8, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, ((_, colour, fraction, unseen), label) in enumerate(zip(entries, labels)):
        y = top + i * row
        if unseen:
            cv2.rectangle(panel, (6, y - 2), (26, y + 16), (0, 0, 0), -1)
        cv2.rectangle(panel, (8, y), (24, y + 14), tuple(int(c) for c in colour), -1)
        share = f"{fraction * 100:4.1f}%" if fraction >= 0.001 else "<0.1%"
        cv2.putText(panel, share, (32, y + 12), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        cv2.putText(panel, label, (82, y + 12), font, size, UNSEEN_TEXT_COLOR if unseen else (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def draw_overlay(image: np.ndarray, label_map: np.ndarray, class_names: Sequence[str], unseen: Sequence[bool],
                 scale: Optional[float] = None, alpha: float = 0.5) -> np.ndarray:
    """``(H * scale, W * scale, 3)`` uint8 RGB: detectron2's semantic-segmentation drawing of
    ``label_map`` (``(H, W)`` indices into ``class_names``) over ``image`` (``(H, W, 3)`` uint8
    RGB), class colours from :func:`vocabulary_colors` and names written on the regions; unseen
    classes are named with "[unseen]" and outlined in white. ``scale`` enlarges the canvas
    (default: small images to a short side of 384 px)."""
    label_map = np.asarray(label_map)
    if label_map.shape != image.shape[:2]:
        raise ValueError(f"label map {label_map.shape} and image {image.shape[:2]} differ in size")
    scale = _auto_scale(*image.shape[:2]) if scale is None else scale
    names = [n + (UNSEEN_MARK if u else "") for n, u in zip(class_names, unseen)]
    overlay = draw_label_map(image, label_map, Metadata(stuff_classes=names, stuff_colors=vocabulary_colors(class_names)),
                             ignore_label=-1, scale=scale, alpha=alpha)
    out_h, out_w = overlay.shape[:2]
    for index in np.unique(label_map):
        if unseen[int(index)]:
            region = cv2.resize((label_map == index).astype(np.uint8), (out_w, out_h),
                                interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(overlay, contours, -1, UNSEEN_OUTLINE_COLOR, max(1, int(round(scale))), cv2.LINE_AA)
    return overlay


def draw_prediction(image: np.ndarray, label_map: np.ndarray, class_names: Sequence[str], unseen: Sequence[bool],
                    scale: Optional[float] = None, alpha: float = 0.5) -> np.ndarray:
    """``[image | overlay | legend]`` as uint8 RGB for an ``(H, W, 3)`` uint8 RGB ``image`` and
    its ``(H, W)`` ``label_map`` of indices into ``class_names``: the overlay of
    :func:`draw_overlay` (unseen classes named "[unseen]" and outlined in white) and a legend of
    the classes present, largest first, unseen ones marked. ``scale`` enlarges the canvas
    (default: small images to a short side of 384 px).
    """
    label_map = np.asarray(label_map)
    scale = _auto_scale(*image.shape[:2]) if scale is None else scale
    overlay = draw_overlay(image, label_map, class_names, unseen, scale, alpha)
    out_h, out_w = overlay.shape[:2]
    colours = vocabulary_colors(class_names)
    counts = np.bincount(label_map.ravel(), minlength=len(class_names))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    entries = [(class_names[i], colours[i], counts[i] / label_map.size, bool(unseen[i])) for i in order]
    legend = draw_legend(entries, out_h)
    plain = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    gap = np.full((out_h, 4, 3), 255, dtype=np.uint8)
    canvas = np.concatenate([plain, gap, overlay], axis=1)
    if legend.shape[0] > out_h:
        canvas = np.concatenate([canvas, np.full((legend.shape[0] - out_h,) + canvas.shape[1:], 255, np.uint8)])
    return np.concatenate([canvas, legend], axis=1)

