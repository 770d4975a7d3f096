#!/usr/bin/env python
"""Convert PASCAL Context (459-class .mat release) into zsmask's 459-class label PNGs
(16-bit, 65535 = ignore).

Input (official releases, under --root, default $DETECTRON2_DATASETS or ./datasets):
  VOCdevkit/VOC2010/JPEGImages/<id>.jpg                  (VOCtrainval_03-May-2010.tar)
  VOCdevkit/VOC2010/ImageSets/Main/val.txt               (the image split; overridable)
  VOCdevkit/VOC2010/trainval/<id>.mat                    (PASCAL-Context trainval.tar.gz:
                                                          'LabelMap', ids 1..459, 0 = unlabeled)
  VOCdevkit/VOC2010/labels.txt                           (same archive: "<id>: <name>" lines)
Output:
  VOCdevkit/VOC2010/annotations_ctx459/val/<id>.png      5,104 images with labels, 16-bit
LabelMap value v in 1..459 becomes v - 1 (zsmask.data.builtin_meta.PCONTEXT459_CLASSES, checked
against labels.txt); unlabeled pixels (0) become 65535. ``pcontext_459_test`` reads it.
"""
import argparse
import os
import sys

import numpy as np

from zsmask.data.builtin_meta import PCONTEXT459_CLASSES
from zsmask.data.prepare import (
    PASCAL_CONTEXT_HELP,
    PascalContextMat,
    RawDatasetError,
    convert_pascal_context,
    read_pascal_context_labels,
    require_dir,
    run_reporting_errors,
)

IGNORE = 65535

# 0..459 only: a larger id in a LabelMap is reported, not silently ignored
LUT = np.full(len(PCONTEXT459_CLASSES) + 1, IGNORE, dtype=np.uint16)
LUT[1:] = np.arange(len(PCONTEXT459_CLASSES), dtype=np.uint16)


def check_labels_txt(names_to_ids: dict) -> None:
    """labels.txt must hold ids 1..459; names spelt otherwise than zsmask's list (which follows
    the published open-vocabulary code, e.g. "airconditioner") are reported, not refused: the
    conversion uses the ids."""
    ids = sorted(names_to_ids.values())
    if ids != list(range(1, len(PCONTEXT459_CLASSES) + 1)):
        raise RawDatasetError(
            f"labels.txt holds {len(ids)} ids ({ids[0] if ids else '-'}..{ids[-1] if ids else '-'}), not PASCAL "
            f"Context's 1..{len(PCONTEXT459_CLASSES)}; is it the labels.txt of PASCAL-Context's trainval.tar.gz?")
    by_id = {i: name for name, i in names_to_ids.items()}
    spelt = [(i + 1, by_id[i + 1], name) for i, name in enumerate(PCONTEXT459_CLASSES) if by_id[i + 1] != name]
    if spelt:
        shown = "; ".join(f"{i}: {theirs!r} here, {ours!r} in zsmask" for i, theirs, ours in spelt[:5])
        print(f"note: {len(spelt)} names of labels.txt are spelt otherwise than zsmask's registered list "
              f"({shown}{'; ...' if len(spelt) > 5 else ''}); ids are what the conversion uses")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--split-dir", help="folder with val.txt (default: VOC2010/ImageSets/Main)")
    p.add_argument("--splits", nargs="+", default=["val"], choices=["train", "val"],
                   help="default: val (the open-vocabulary test set)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)
    voc = os.path.join(args.root, "VOCdevkit", "VOC2010")

    def run():
        require_dir(voc, "VOC 2010", PASCAL_CONTEXT_HELP)
        require_dir(os.path.join(voc, "trainval"), "PASCAL-Context trainval/ (.mat label maps)", PASCAL_CONTEXT_HELP)
        check_labels_txt(read_pascal_context_labels(os.path.join(voc, "labels.txt"), PASCAL_CONTEXT_HELP))
        convert_pascal_context(voc, args.split_dir or os.path.join(voc, "ImageSets", "Main"), args.splits,
                               "annotations_ctx459", PascalContextMat(LUT), args.workers)

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
