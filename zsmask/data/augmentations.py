"""Augmentations for semantic-segmentation training (detectron2 ``Augmentation`` API)."""
from typing import List

import cv2
import numpy as np
from detectron2.data import transforms as T

__all__ = ["PhotometricDistortion", "build_sem_seg_augmentations"]


class PhotometricDistortion(T.Augmentation):
    """SSD-style colour distortion (brightness, contrast, saturation, hue), image only.

    Each of the four distortions is applied with probability 0.5, with contrast either first
    or last (also 50/50), as in SSD and the MMSeg / Mask2Former training recipes.
    Labels are untouched (a :class:`detectron2.data.transforms.ColorTransform`).
    """

    def __init__(self, img_format: str = "RGB", brightness_delta: float = 32, contrast=(0.5, 1.5),
                 saturation=(0.5, 1.5), hue_delta: float = 18):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"PhotometricDistortion needs an RGB or BGR image, got {img_format}")
        self._init(locals())

    def get_transform(self, image):
        rng = np.random
        params = dict(
            brightness=rng.uniform(-self.brightness_delta, self.brightness_delta) if rng.rand() < 0.5 else None,
            contrast=rng.uniform(*self.contrast) if rng.rand() < 0.5 else None,
            contrast_first=rng.rand() < 0.5,
            saturation=rng.uniform(*self.saturation) if rng.rand() < 0.5 else None,
            hue=rng.randint(-self.hue_delta, self.hue_delta + 1) if rng.rand() < 0.5 else None,
        )
        return T.ColorTransform(lambda img: self._distort(img, **params))

    def _distort(self, img, brightness, contrast, contrast_first, saturation, hue):
        out = img.astype(np.float32)
        if brightness is not None:
            out = out + brightness
        if contrast is not None and contrast_first:
            out = out * contrast
        out = np.clip(out, 0, 255).astype(np.uint8)
        if saturation is not None or hue is not None:
            code = cv2.COLOR_RGB2HSV if self.img_format == "RGB" else cv2.COLOR_BGR2HSV
            back = cv2.COLOR_HSV2RGB if self.img_format == "RGB" else cv2.COLOR_HSV2BGR
            hsv = cv2.cvtColor(np.ascontiguousarray(out), code).astype(np.int32)
            if saturation is not None:
                hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
            if hue is not None:
                hsv[..., 0] = (hsv[..., 0] + hue) % 180
            out = cv2.cvtColor(hsv.astype(np.uint8), back)
        if contrast is not None and not contrast_first:
            out = np.clip(out.astype(np.float32) * contrast, 0, 255).astype(np.uint8)
        return out


def build_sem_seg_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Resize (shortest edge), category-area-constrained crop, colour distortion and flip for
    training; shortest-edge resize for testing (predictions are resized back by the model)."""
    if not is_train:
        if cfg.INPUT.MIN_SIZE_TEST <= 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs: List[T.Augmentation] = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(PhotometricDistortion(img_format=cfg.INPUT.FORMAT))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augs
