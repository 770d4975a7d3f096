#!/usr/bin/env python
"""Draw the ground truth of a registered zero-shot dataset variant, unseen classes marked.

    python demo/visualize_split.py --dataset voc_zs_test --output out/ [--limit 8]

Use it to check a split you registered: each image is saved with its label overlay; the
legend lists the classes present, unseen ones suffixed with "[unseen]". The label map of
the variant is applied, so ``*_train`` shows unseen pixels as ignored (not drawn).
"""
import argparse
import os
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import zsmask.data  # noqa: F401  (registers the built-in splits)
from zsmask.data import label_map_for_dataset, read_image, read_sem_seg
from zsmask.visualization import draw_label_map, marked_metadata


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered name, e.g. voc_zs_test")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=8, help="number of images (0: all)")
    args = p.parse_args(argv)
    if args.dataset not in DatasetCatalog.list():
        zs = sorted(n for n in DatasetCatalog.list() if MetadataCatalog.get(n).get("zero_shot_split"))
        print(f"error: unknown dataset {args.dataset!r}; zero-shot datasets: {', '.join(zs)}", file=sys.stderr)
        return 2
    meta = MetadataCatalog.get(args.dataset)
    draw_meta = marked_metadata(args.dataset)
    lut = label_map_for_dataset(args.dataset)
    os.makedirs(args.output, exist_ok=True)
    records = DatasetCatalog.get(args.dataset)
    for rec in records[: args.limit or None]:
        image = read_image(rec["file_name"], "RGB")
        label = read_sem_seg(rec["sem_seg_file_name"], lut, meta.ignore_label)
        drawn = draw_label_map(image, label, draw_meta, meta.ignore_label)
        path = os.path.join(args.output, os.path.splitext(os.path.basename(rec["file_name"]))[0] + ".png")
        Image.fromarray(drawn).save(path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
