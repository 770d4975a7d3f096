#!/usr/bin/env python
"""Convert COCO-Stuff 164K label maps into zsmask's label PNGs (171 classes, 255 = ignore).

Input (official release, under --root, default $DETECTRON2_DATASETS or ./datasets):
  coco/{train2017,val2017}/<id>.jpg                         (COCO 2017 images)
  coco/stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png
        (stuffthingmaps_trainval2017.zip: pixel = COCO category id - 1, 255 = unlabeled)
Output:
  coco/stuffthingmaps_detectron2/{train2017,val2017}/<id>.png   118,287 / 5,000
The 171 used categories (80 things, 91 stuff) become contiguous ids 0..170 in COCO id order;
the 11 unused thing ids and "unlabeled" become 255.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

from zsmask.data.builtin_meta import COCO_STUFF_CATEGORY_IDS
from zsmask.data.prepare import RawDatasetError, apply_lut, convert_all, require_dir, run_reporting_errors

HELP = (
    "Download stuffthingmaps_trainval2017.zip (COCO-Stuff) and extract it into coco/ under --root, "
    "next to COCO's train2017/ and val2017/ image folders."
)

LUT = np.full(256, 255, dtype=np.uint8)
for contiguous, cat_id in enumerate(COCO_STUFF_CATEGORY_IDS):
    LUT[cat_id - 1] = contiguous


def convert(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return apply_lut(np.asarray(img), LUT, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)
    coco = os.path.join(args.root, "coco")

    def run():
        for split in ("train2017", "val2017"):
            src_dir = os.path.join(coco, "stuffthingmaps_trainval2017", split)
            require_dir(src_dir, f"COCO-Stuff label maps ({split})", HELP)
            names = sorted(n for n in os.listdir(src_dir) if n.endswith(".png"))
            if not names:
                raise RawDatasetError(f"no .png label maps in {src_dir}\n{HELP}")
            out_dir = os.path.join(coco, "stuffthingmaps_detectron2", split)
            jobs = [(os.path.join(src_dir, n), os.path.join(out_dir, n)) for n in names]
            n = convert_all(jobs, convert, args.workers, desc=split)
            print(f"{split}: {len(names)} labels in {out_dir} ({n} written now)")

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
