#!/usr/bin/env python
"""Convert PASCAL VOC 2012 + SBD into zsmask's label PNGs (20 classes, 255 = ignore).

Input (official releases, under --root, default $DETECTRON2_DATASETS or ./datasets):
  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/SegmentationClass/<id>.png         (palette PNG, 0 = background, 255 = border)
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
  benchmark_RELEASE/dataset/cls/<id>.mat                (SBD, struct GTcls.Segmentation)
  benchmark_RELEASE/dataset/{train,val}.txt
Output:
  VOCdevkit/VOC2012/annotations_detectron2/train_aug/<id>.png   10,582 = VOC train + SBD train + SBD val - VOC val
  VOCdevkit/VOC2012/annotations_detectron2/val/<id>.png         1,449
  VOCdevkit/VOC2012/annotations_voc21/val/<id>.png             1,449, background kept
Classes 1..20 become 0..19; background (0) and borders (255) become 255 (ignored), as in the
zero-shot protocol and VOC-20 of the open-vocabulary tables. VOC's own masks are used where
they exist, SBD's elsewhere. The ``annotations_voc21`` copy of the validation set keeps
background as class 0 and the classes as 1..20 (borders 255): VOC-21 of the open-vocabulary
tables (``voc_21_test``). It has a folder of its own because CAT-Seg writes
``annotations_detectron2_bg`` with background last, and existing files are never rewritten.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

from zsmask.data.prepare import RawDatasetError, apply_lut, convert_all, read_id_list, require_dir, run_reporting_errors

VOC_HELP = "Download VOCtrainval_11-May-2012.tar and extract it so that VOCdevkit/VOC2012 is under --root."
SBD_HELP = (
    "Download SBD (benchmark.tgz, 'Semantic Boundaries Dataset') and extract it so that "
    "benchmark_RELEASE/dataset is under --root, or pass --sbd-root; use --without-sbd to build "
    "only VOC's 1,464 training images."
)

LUT = np.full(256, 255, dtype=np.uint8)
LUT[1:21] = np.arange(20, dtype=np.uint8)


LUT_WITH_BACKGROUND = np.full(256, 255, dtype=np.uint8)
LUT_WITH_BACKGROUND[0:21] = np.arange(21, dtype=np.uint8)


def convert_voc_png(path: str, lut: np.ndarray = LUT) -> np.ndarray:
    with Image.open(path) as img:
        return apply_lut(np.asarray(img), lut, path)  # palette PNG: the array holds the ids


def convert_voc_png_with_background(path: str) -> np.ndarray:
    return convert_voc_png(path, LUT_WITH_BACKGROUND)


def convert_sbd_mat(path: str) -> np.ndarray:
    from scipy.io import loadmat

    mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    return apply_lut(np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8), LUT, path)


def _convert(src: str) -> np.ndarray:
    return convert_sbd_mat(src) if src.endswith(".mat") else convert_voc_png(src)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--sbd-root", help="folder holding SBD's dataset/ (default: <root>/benchmark_RELEASE)")
    p.add_argument("--without-sbd", action="store_true", help="train on VOC's 1,464 images only")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)

    def run():
        voc = os.path.join(args.root, "VOCdevkit", "VOC2012")
        require_dir(voc, "VOC 2012", VOC_HELP)
        seg_dir = os.path.join(voc, "SegmentationClass")
        require_dir(seg_dir, "VOC SegmentationClass", VOC_HELP)
        sets = os.path.join(voc, "ImageSets", "Segmentation")
        voc_train = read_id_list(os.path.join(sets, "train.txt"), "VOC train list", VOC_HELP)
        voc_val = read_id_list(os.path.join(sets, "val.txt"), "VOC val list", VOC_HELP)
        sbd_ids = []
        if not args.without_sbd:
            sbd = os.path.join(args.sbd_root or os.path.join(args.root, "benchmark_RELEASE"), "dataset")
            require_dir(os.path.join(sbd, "cls"), "SBD cls/ folder", SBD_HELP)
            sbd_ids = read_id_list(os.path.join(sbd, "train.txt"), "SBD train list", SBD_HELP)
            sbd_ids += read_id_list(os.path.join(sbd, "val.txt"), "SBD val list", SBD_HELP)
        val_set = set(voc_val)
        train_aug = sorted((set(voc_train) | set(sbd_ids)) - val_set)
        voc_has = set(voc_train) | val_set

        def source(i):
            if i in voc_has:
                return os.path.join(seg_dir, i + ".png")
            return os.path.join(sbd, "cls", i + ".mat")

        out = os.path.join(voc, "annotations_detectron2")
        for split, ids in (("train_aug", train_aug), ("val", sorted(voc_val))):
            missing = [source(i) for i in ids if not os.path.exists(source(i))]
            if missing:
                raise RawDatasetError(f"{len(missing)} label files of {split} are missing, e.g. {missing[0]}")
            jobs = [(source(i), os.path.join(out, split, i + ".png")) for i in ids]
            n = convert_all(jobs, _convert, args.workers, desc=split)
            print(f"{split}: {len(ids)} labels in {os.path.join(out, split)} ({n} written now)")
        out_bg = os.path.join(voc, "annotations_voc21", "val")
        jobs = [(source(i), os.path.join(out_bg, i + ".png")) for i in sorted(voc_val)]
        n = convert_all(jobs, convert_voc_png_with_background, args.workers, desc="val (with background)")
        print(f"val with background: {len(voc_val)} labels in {out_bg} ({n} written now)")

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
