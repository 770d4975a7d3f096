#!/usr/bin/env python
"""Train the inverse-transformation network of SAZS's L_shape (Sec. 3.3, Eq. 2) on the ground-truth
edges of a registered semantic segmentation dataset, and save it for
``MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS``.

    python tools/train_inverse_transform.py --dataset voc_zs_train --output output/inverse_transform_voc.pth
    python tools/train_inverse_transform.py --dataset toy_world_train --output output/inverse_transform_toy.pth \\
        --prepare-toy-world

Each label map (``sem_seg_file_name``; the dataset's ``ignore_label`` is unannotated) gives Sobel
edges (as the boundary head's targets), split into the ``--grid`` of patches the head uses and
max-pooled to ``--patch-size``. The network learns to regress random affine warps of these
patches (see ``zsmask/modeling/auxiliary_heads/inverse_transform.py``). Printed at the end: its
mean parameter error on held-out patches against always answering the identity.
"""
import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import zsmask.data  # noqa: E402,F401  (registers the builtin datasets)
from zsmask.modeling.auxiliary_heads import pretrain_inverse_transform, save_inverse_transform, sobel_edges  # noqa: E402
from zsmask.modeling.auxiliary_heads.inverse_transform import edge_patches  # noqa: E402


def dataset_edge_patches(dataset: str, grid, patch_size: int, max_images: int) -> torch.Tensor:
    """(N, P, P) edge patches of the first ``max_images`` label maps of ``dataset``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    records = DatasetCatalog.get(dataset)
    ignore = MetadataCatalog.get(dataset).get("ignore_label", 255)
    patches = []
    for record in records[:max_images]:
        if "sem_seg_file_name" not in record:
            raise ValueError(f"{dataset!r} has no semantic labels (records need 'sem_seg_file_name')")
        labels = torch.from_numpy(np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64).copy())
        labels[labels == ignore] = -1
        edges, _ = sobel_edges(labels[None])
        patches.append(edge_patches(edges, grid, patch_size))
    if not patches:
        raise ValueError(f"{dataset!r} has no records")
    return torch.cat(patches)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered training split with semantic labels")
    parser.add_argument("--output", required=True, help="where to save the network (.pth)")
    parser.add_argument("--grid", type=int, nargs=2, default=(3, 6), metavar=("ROWS", "COLS"),
                        help="patch grid (MODEL.SAZS.BOUNDARY.PATCH_GRID)")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prepare-toy-world", action="store_true",
                        help="generate the toy world and its CLIP first (for toy_world_* datasets)")
    args = parser.parse_args(argv)
    if args.prepare_toy_world:
        from zsmask.toy import prepare_toy_world
        prepare_toy_world()
    patches = dataset_edge_patches(args.dataset, tuple(args.grid), args.patch_size, args.max_images)
    print(f"{patches.shape[0]} edge patches of {args.dataset} ({args.grid[0]} x {args.grid[1]} per image, "
          f"{args.patch_size} x {args.patch_size})", flush=True)
    net, report = pretrain_inverse_transform(patches, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                             hidden_dim=args.hidden_dim, seed=args.seed,
                                             log_every=max(1, args.steps // 10),
                                             print_fn=lambda text: print(text, flush=True))
    report.update(dataset=args.dataset, grid=list(args.grid), steps=args.steps)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_inverse_transform(net, args.output, report)
    print(json.dumps(report, indent=1))
    print(f"saved to {args.output}; held-out theta error {report['theta_error']:.4f} vs identity "
          f"{report['identity_error']:.4f}")
    return report


if __name__ == "__main__":
    main()
