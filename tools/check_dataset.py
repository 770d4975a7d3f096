#!/usr/bin/env python
"""Check a registered dataset before training on it: every image and label, read in full.

    python tools/check_dataset.py --dataset coco_stuff_zs_train --workers 8
    python tools/check_dataset.py --dataset toy_world_train --output output/check_toy

Reports unreadable images and labels, label / image size mismatches, label ids that are neither
a class nor the ignore label, images without any annotated pixel, and the pixels of every class
(seen / unseen, ignored, held-out unseen classes in a ``*_train`` variant). ``--output`` writes
``report.json`` and ``class_pixels.png`` (a histogram, unseen classes in red). Exit status: 0
when nothing is wrong, 1 when a problem was found, 2 for a bad argument. Datasets of your own
are checked once registered: ``--register module.path`` imports a module that registers them.
"""
import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import tqdm  # noqa: E402

import zsmask.data  # noqa: E402,F401  (registers the built-in datasets)
from zsmask.data.check import check_dataset  # noqa: E402
from zsmask.utils import atomic_write_text  # noqa: E402


def plot_class_pixels(report, path: str) -> None:
    """A bar per class (log scale), unseen classes in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(report.class_names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * count + 2), 4.0))
    colours = ["#c0392b" if u else "#2c7fb8" for u in report.unseen]
    ax.bar(range(count), [max(int(c), 0) for c in report.class_pixels], color=colours)
    ax.set_yscale("symlog")
    ax.set_ylabel("pixels")
    ax.set_title(f"{report.dataset}: pixels per class ({report.images} images; unseen in red)")
    ax.set_xticks(range(count))
    ax.set_xticklabels(report.class_names, rotation=90, fontsize=6 if count > 40 else 8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. coco_stuff_zs_train")
    parser.add_argument("--workers", type=int, default=1, help="processes reading files (default 1)")
    parser.add_argument("--output", help="folder for report.json and class_pixels.png")
    parser.add_argument("--limit", type=int, help="check only the first N records")
    parser.add_argument("--register", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers your datasets); repeatable")
    parser.add_argument("--show", type=int, default=10, help="problems shown per kind (default 10; all in report.json)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    for module in args.register:
        importlib.import_module(module)
    bar = tqdm.tqdm(desc=f"checking {args.dataset}", unit="image", file=sys.stderr, mininterval=1.0)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh() if done == total else bar.update(0)

    start = time.perf_counter()
    try:
        report = check_dataset(args.dataset, workers=args.workers, limit=args.limit, progress=progress)
    except (KeyError, ValueError) as e:
        bar.close()
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    bar.close()
    seconds = time.perf_counter() - start
    print(report.summary(limit=args.show))
    print(f"  {report.images} images in {seconds:.1f} s ({report.images / max(seconds, 1e-9):.1f} images/s with "
          f"{args.workers} worker{'s' if args.workers > 1 else ''})")
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        atomic_write_text(os.path.join(args.output, "report.json"), json.dumps(report.to_json(), indent=1))
        plot_class_pixels(report, os.path.join(args.output, "class_pixels.png"))
        print(f"  report: {os.path.join(args.output, 'report.json')}, histogram: "
              f"{os.path.join(args.output, 'class_pixels.png')}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
