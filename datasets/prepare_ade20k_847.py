#!/usr/bin/env python
"""Convert the full ADE20K release into zsmask's 847-class label PNGs (16-bit, 65535 = ignore).

Input (official release ADE20K_2021_17_01.zip, under --root, default $DETECTRON2_DATASETS or
./datasets):
  ADE20K_2021_17_01/images/ADE/{training,validation}/<scene>/.../ADE_*.jpg
  ADE20K_2021_17_01/images/ADE/{training,validation}/<scene>/.../ADE_*_seg.png
      object class of a pixel = R / 10 * 256 + G (B holds the instance)
Output (one flat folder per split, by file name):
  ADE20K_2021_17_01/images_detectron2/{training,validation}/ADE_*.jpg          (25,574 / 2,000)
  ADE20K_2021_17_01/annotations_detectron2/{training,validation}/ADE_*.png     16-bit
The 847 classes (zsmask.data.builtin_meta.ADE20K_847_CLASSES, object ids ADE20K_847_FULL_IDS)
become ids 0..846; every other object class and unlabelled pixels become 65535. As in the
protocol of the published open-vocabulary numbers, an image whose shorter side exceeds 512 is
resized so that it is 512 (image bilinear, labels nearest) and written again as JPEG (PIL's
default quality 75). ``ade20k_847_test`` reads the validation set.
"""
import argparse
import functools
import os
import sys

import numpy as np
from PIL import Image

from zsmask.data.builtin_meta import ADE20K_847_FULL_IDS
from zsmask.data.prepare import (
    TMP_MARK,
    RawDatasetError,
    apply_lut,
    convert_all,
    remove_leftovers,
    require_dir,
    run_reporting_errors,
)

HELP = ("Download the full ADE20K release (ADE20K_2021_17_01.zip, from the ADE20K site after registering) "
        "and extract it under --root, giving ADE20K_2021_17_01/images/ADE/{training,validation}.")
SHORT_SIDE = 512
IGNORE = 65535


@functools.lru_cache(maxsize=None)
def full_id_lut() -> np.ndarray:
    """uint16 look-up table from a full-release object id (R / 10 * 256 + G < 65536) to 0..846
    (built once per process, not sent with every job)."""
    lut = np.full(65536, IGNORE, dtype=np.uint16)
    lut[np.asarray(ADE20K_847_FULL_IDS)] = np.arange(len(ADE20K_847_FULL_IDS), dtype=np.uint16)
    return lut


def decode_object_ids(seg_png: str) -> np.ndarray:
    """``(H, W)`` int64 object class ids of an ADE20K ``*_seg.png``."""
    with Image.open(seg_png) as img:
        if img.mode != "RGB":
            raise ValueError(f"{seg_png}: expected an RGB *_seg.png (class in R and G), got mode {img.mode}")
        seg = np.asarray(img)
    return (seg[:, :, 0] // 10).astype(np.int64) * 256 + seg[:, :, 1].astype(np.int64)


def resized_size(height: int, width: int):
    """The ``(height, width)`` after the protocol's resize, or ``None`` when the image keeps its size."""
    if width >= height > SHORT_SIDE:
        return SHORT_SIDE, round(width / float(height) * SHORT_SIDE)
    if height >= width > SHORT_SIDE:
        return round(height / float(width) * SHORT_SIDE), SHORT_SIDE
    return None


class ImageAndLabelConverter:
    """``jpg path -> uint16 label``; writes the (resized) image into ``image_dir`` first, so a
    label on disk always has its image."""

    def __init__(self, image_dir: str):
        self.image_dir = image_dir

    def __call__(self, jpg: str) -> np.ndarray:
        import cv2

        seg_png = jpg[: -len(".jpg")] + "_seg.png"
        label = decode_object_ids(seg_png)
        with Image.open(jpg) as img:
            image = np.asarray(img)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{jpg} is {image.shape[0]}x{image.shape[1]} but {seg_png} is "
                             f"{label.shape[0]}x{label.shape[1]}")
        size = resized_size(*label.shape)
        if size is not None:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        os.makedirs(self.image_dir, exist_ok=True)
        out = os.path.join(self.image_dir, os.path.basename(jpg))
        tmp = f"{out}{TMP_MARK}{os.getpid()}"
        Image.fromarray(image).save(tmp, format="JPEG")  # PIL's default quality, 75
        os.replace(tmp, out)
        return apply_lut(label.astype(np.int64), full_id_lut(), seg_png)


def find_images(split_dir: str):
    """The ``.jpg`` files under ``split_dir`` (any depth) that have a ``*_seg.png``, by name."""
    found = {}
    for folder, _, files in os.walk(split_dir):
        for name in files:
            if name.endswith(".jpg") and os.path.isfile(
                    os.path.join(folder, name[:-4] + "_seg.png")):
                if name in found:
                    raise RawDatasetError(f"{name} occurs twice: {found[name]} and {os.path.join(folder, name)}")
                found[name] = os.path.join(folder, name)
    return [found[n] for n in sorted(found)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--splits", nargs="+", default=["validation"], choices=["training", "validation"],
                   help="default: validation (the open-vocabulary test set)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)
    ade = os.path.join(args.root, "ADE20K_2021_17_01")

    def run():
        require_dir(ade, "the full ADE20K release (ADE20K_2021_17_01)", HELP)
        for split in args.splits:
            split_dir = os.path.join(ade, "images", "ADE", split)
            require_dir(split_dir, f"ADE20K images/ADE/{split}", HELP)
            images = find_images(split_dir)
            if not images:
                raise RawDatasetError(f"no *.jpg with a *_seg.png under {split_dir}\n{HELP}")
            out = os.path.join(ade, "annotations_detectron2", split)
            image_dir = os.path.join(ade, "images_detectron2", split)
            remove_leftovers([image_dir])
            convert = ImageAndLabelConverter(image_dir)
            jobs = [(jpg, os.path.join(out, os.path.basename(jpg)[:-4] + ".png")) for jpg in images]
            n = convert_all(jobs, convert, args.workers, desc=split)
            print(f"{split}: {len(images)} images and labels in {out} ({n} written now)")

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
