"""Drawing label maps of a zero-shot dataset variant, with unseen classes marked.

Used by ``demo/visualize_split.py`` (ground truth of any registered variant) and by the
quick start (prediction beside ground truth on validation images).
"""
from typing import Optional, Sequence

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer

__all__ = ["UNSEEN_MARK", "marked_metadata", "draw_label_map", "prediction_panel"]

UNSEEN_MARK = " [unseen]"


def marked_metadata(dataset_name: str) -> Metadata:
    """Metadata for drawing ``dataset_name``'s vocabulary: unseen class names get "[unseen]"."""
    meta = MetadataCatalog.get(dataset_name)
    unseen = set(meta.get("unseen_classes", []))
    names = [n + (UNSEEN_MARK if i in unseen else "") for i, n in enumerate(meta.stuff_classes)]
    return Metadata(stuff_classes=names, stuff_colors=meta.get("stuff_colors"))


def draw_label_map(image: np.ndarray, label: np.ndarray, metadata: Metadata, ignore_label: int = 255,
                   scale: float = 1.0) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with ``label`` (``(H, W)`` vocabulary indices) drawn over it;
    ``ignore_label`` pixels are left undrawn. ``scale`` enlarges the canvas (text stays legible
    on small images)."""
    label = np.where(label == ignore_label, len(metadata.stuff_classes), label)  # never drawn
    visualizer = Visualizer(image, metadata=metadata, scale=scale)
    return visualizer.draw_sem_seg(label, alpha=0.5).get_image()


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
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
    panels = [_titled(cv2.resize(p, (width, height)), t) for p, t in zip(panels, titles)]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
