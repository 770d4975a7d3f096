#!/usr/bin/env python
"""How fast ``tools/check_dataset.py`` reads a COCO-Stuff-like dataset, per worker count, and
what that means for COCO-Stuff's 118,287 training images.

A fabricated split of COCO-sized pairs (640 x 480 JPEG at quality 90, PNG labels with 171
possible ids, about a dozen regions each) is written to a temporary folder and registered;
:func:`zsmask.data.check.check_dataset` then reads every image in full and every label, once
per ``--workers`` value, after one untimed pass that warms the page cache (a check of a real
dataset reads from disk the first time: add the disk's own time to these numbers). The
reference is the cost of decoding the same files alone (PIL ``Image.open(...).load()`` of
image and label), measured in the same process: the check's ratio to it is its overhead.

    .venv/bin/python benchmarks/bench_check_dataset.py [--images 300] [--workers 1 2]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsmask.data import SemSegFolder, register_zero_shot_split  # noqa: E402
from zsmask.data.check import check_dataset  # noqa: E402

COCO_STUFF_TRAIN_IMAGES = 118287


def fabricate(root: str, count: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    images, labels = os.path.join(root, "images"), os.path.join(root, "labels")
    os.makedirs(images), os.makedirs(labels)
    for i in range(count):
        label = np.full((480, 640), rng.randint(0, 171), np.uint8)
        for _ in range(12):
            y, x, h, w = rng.randint(0, 400), rng.randint(0, 560), rng.randint(20, 200), rng.randint(20, 260)
            label[y:y + h, x:x + w] = rng.randint(0, 171)
        label[rng.rand(480, 640) < 0.02] = 255
        image = (rng.rand(480, 640, 3) * 60 + label[:, :, None] % 97 * 2).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(images, f"{i:06d}.jpg"), quality=90)
        Image.fromarray(label).save(os.path.join(labels, f"{i:06d}.png"))
    return images, labels


def decode_only(images: str, labels: str) -> float:
    start = time.perf_counter()
    for name in sorted(os.listdir(images)):
        with Image.open(os.path.join(images, name)) as img:
            img.load()
        with Image.open(os.path.join(labels, name[:-4] + ".png")) as lab:
            lab.load()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    classes = [f"class {i}" for i in range(171)]
    with tempfile.TemporaryDirectory() as root:
        images, labels = fabricate(root, args.images)
        split = register_zero_shot_split("bench_check", classes, unseen_classes=classes[:15],
                                         train=SemSegFolder(images, labels), test=SemSegFolder(images, labels))
        check_dataset(split.train, workers=1)  # warms the page cache
        reference = decode_only(images, labels)
        rows = [("decode only (PIL, reference)", 1, reference)]
        for workers in args.workers:
            start = time.perf_counter()
            report = check_dataset(split.train, workers=workers)
            rows.append((f"check_dataset {split.train}", workers, time.perf_counter() - start))
            assert report.ok and report.images == args.images
    print(f"{args.images} pairs of 640x480 JPEG + PNG label, {os.cpu_count()} cores\n")
    print(f"| what | workers | s | images/s | images/s per worker | vs decode only | COCO-Stuff train (118,287) |")
    print("|---|---|---|---|---|---|---|")
    for what, workers, seconds in rows:
        rate = args.images / seconds
        print(f"| {what} | {workers} | {seconds:.2f} | {rate:.1f} | {rate / workers:.1f} | "
              f"{seconds / reference:.2f}x | {COCO_STUFF_TRAIN_IMAGES / rate / 60:.0f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
