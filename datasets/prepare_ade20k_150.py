#!/usr/bin/env python
"""Convert ADE20K SceneParsing (150 classes) into zsmask's label PNGs (255 = ignore).

Input (official release ADEChallengeData2016.zip, under --root, default $DETECTRON2_DATASETS
or ./datasets):
  ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
  ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   (0 = other, 1..150)
Output:
  ADEChallengeData2016/annotations_detectron2/{training,validation}/ADE_*.png   (20,210 / 2,000)
Label value v in 1..150 becomes v - 1 (zsmask.data.builtin_meta.ADE20K_150_CLASSES); 0
("other objects", not evaluated) becomes 255. ``ade20k_150_test`` reads the validation set.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

from zsmask.data.prepare import RawDatasetError, apply_lut, convert_all, require_dir, run_reporting_errors

HELP = "Download ADEChallengeData2016.zip (the SceneParsing release) and extract it under --root."

LUT = np.full(151, 255, dtype=np.uint8)  # 0..150 only: a larger id is reported, not silently ignored
LUT[1:] = np.arange(150, dtype=np.uint8)


def convert_ade_png(path: str) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode not in ("L", "P"):
            raise ValueError(f"{path}: expected a single-channel label PNG of ids 0..150, got mode {img.mode}")
        return apply_lut(np.asarray(img), LUT, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p.add_argument("--splits", nargs="+", default=["training", "validation"], choices=["training", "validation"])
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    args = p.parse_args(argv)
    ade = os.path.join(args.root, "ADEChallengeData2016")

    def run():
        require_dir(ade, "ADE20K SceneParsing (ADEChallengeData2016)", HELP)
        for split in args.splits:
            src = os.path.join(ade, "annotations", split)
            require_dir(src, f"ADE20K annotations/{split}", HELP)
            stems = sorted(n[:-4] for n in os.listdir(src) if n.endswith(".png"))
            if not stems:
                raise RawDatasetError(f"no label PNGs in {src}\n{HELP}")
            missing = [s for s in stems if not os.path.isfile(os.path.join(ade, "images", split, s + ".jpg"))]
            if missing:
                raise RawDatasetError(f"{len(missing)} images of annotations/{split} are missing, e.g. "
                                      f"{os.path.join(ade, 'images', split, missing[0] + '.jpg')}\n{HELP}")
            out = os.path.join(ade, "annotations_detectron2", split)
            jobs = [(os.path.join(src, s + ".png"), os.path.join(out, s + ".png")) for s in stems]
            n = convert_all(jobs, convert_ade_png, args.workers, desc=split)
            print(f"{split}: {len(stems)} labels in {out} ({n} written now)")

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
