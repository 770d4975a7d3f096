#!/usr/bin/env python
"""Convert PASCAL Context (full 459-class .mat release) into zsmask's 59-class label PNGs.

Input (official releases, under --root, default $DETECTRON2_DATASETS or ./datasets):
  VOCdevkit/VOC2010/JPEGImages/<id>.jpg                  (VOCtrainval_03-May-2010.tar)
  VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt       (the image split; overridable)
  VOCdevkit/VOC2010/trainval/<id>.mat                    (PASCAL-Context trainval.tar.gz:
                                                          'LabelMap', ids 1..459, 0 = unlabeled)
  VOCdevkit/VOC2010/labels.txt                           (same archive: "<id>: <name>" lines)
Output:
  VOCdevkit/VOC2010/annotations_ctx59/{train,val}/<id>.png   (4,996 / 5,104 images with labels)
The 59 most frequent classes (zsmask.data.builtin_meta.PCONTEXT59_CLASSES, matched by name in
labels.txt) become ids 0..58; the other 400 classes and unlabeled pixels become 255.
Images without a .mat file are skipped and counted.
"""
import argparse
import os
import sys

import numpy as np

from zsmask.data.builtin_meta import PCONTEXT59_CLASSES
from zsmask.data.prepare import (
    PASCAL_CONTEXT_HELP,
    PascalContextMat,
    RawDatasetError,
    convert_pascal_context,
    read_pascal_context_labels,
    require_dir,
    run_reporting_errors,
)


def build_lut(names_to_ids: dict) -> np.ndarray:
    missing = [c for c in PCONTEXT59_CLASSES if c not in names_to_ids]
    if missing:
        raise RawDatasetError(f"labels.txt lacks the 59-class names {missing}; is it PASCAL-Context's 459-class list?")
    size = max(names_to_ids.values()) + 1
    lut = np.full(max(size, 256), 255, dtype=np.uint8)
    for contiguous, name in enumerate(PCONTEXT59_CLASSES):
        lut[names_to_ids[name]] = contiguous
    return lut


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--split-dir", help="folder with train.txt / val.txt (default: VOC2010/ImageSets/Main)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)
    voc = os.path.join(args.root, "VOCdevkit", "VOC2010")

    def run():
        require_dir(voc, "VOC 2010", PASCAL_CONTEXT_HELP)
        require_dir(os.path.join(voc, "trainval"), "PASCAL-Context trainval/ (.mat label maps)", PASCAL_CONTEXT_HELP)
        lut = build_lut(read_pascal_context_labels(os.path.join(voc, "labels.txt"), PASCAL_CONTEXT_HELP))
        convert_pascal_context(voc, args.split_dir or os.path.join(voc, "ImageSets", "Main"), ("train", "val"),
                               "annotations_ctx59", PascalContextMat(lut), args.workers)

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
