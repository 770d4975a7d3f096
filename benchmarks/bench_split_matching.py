#!/usr/bin/env python
"""Split Matching cost at COCO-like settings (512 x 512 input, CLIP ViT-B/16 -> 32 x 32 dense
features, random weights, which do not change the cost), in one process:

1. Pseudo-mask generation per image *excluding the CLIP forward*: K-means seeding (Eq. 1),
   K-means, fusion and mask building from given dense features, for batches of 1 and 8. The
   CLIP forwards (dense features, and the masked-image [CLS] embeddings C_u) are timed apart.
2. One training step (forward + backward) of the same model, configs/coco/split_matching.yaml
   with a ResNet-50, trained with split matching (pseudo masks with C_u from [CLS] tokens and
   from dense features, MFE) and with the Hungarian baseline (its matcher and losses, no pseudo
   labeler, no MFE; same 150 queries): seconds and the ratio to the baseline.

Images are synthetic: 4 seen-class rectangles on a background class, with a quarter of the
image unannotated (ignore). Times are medians of ``--runs`` after one warm-up.

    .venv/bin/python benchmarks/bench_split_matching.py [--runs 3] [--batch 2] [--device cpu]
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=FutureWarning)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Instances  # noqa: E402

import zsmask.data  # noqa: E402,F401  (registers the COCO-Stuff split's metadata)
import zsmask.modeling  # noqa: E402,F401
from zsmask.config import add_zsmask_config  # noqa: E402
from zsmask.modeling.clip import CLIPTextImageEncoder  # noqa: E402
from zsmask.modeling.pseudo_masks import PseudoMaskGenerator  # noqa: E402
from zsmask.modeling.clip.region_views import cell_fractions  # noqa: E402

SIZE = 512


def _median_seconds(fn, runs: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_inputs(batch: int, num_classes: int = 156, size: int = SIZE, dataset_name: str = "coco_stuff_zs_train"):
    """Training inputs as the zero-shot mapper gives them (on the CPU, as a data loader does):
    ``size`` x ``size`` random images with 4 seen-class rectangles on a background class, the
    bottom-right quarter unannotated (255)."""
    g = torch.Generator().manual_seed(0)
    square = max(size // 4, 1)
    inputs = []
    for _ in range(batch):
        label = torch.full((size, size), int(torch.randint(num_classes, (1,), generator=g)))
        for _ in range(4):
            y, x = torch.randint(0, size - square, (2,), generator=g).tolist()
            label[y:y + square, x:x + square] = int(torch.randint(num_classes, (1,), generator=g))
        label[size // 2:, size // 2:] = 255
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        classes = label.unique()
        classes = classes[classes != 255]
        instances = Instances((size, size))
        instances.gt_classes = classes
        instances.gt_masks = label[None] == classes[:, None, None]
        inputs.append({"image": image, "sem_seg": label, "instances": instances, "unannotated": label == 255,
                       "dataset_name": dataset_name, "height": size, "width": size})
    return inputs


def model_cfg(method: str, device: str):
    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(os.path.join(ROOT, "configs", "coco", "split_matching.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "50",
                         "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.PROMPT_TEMPLATE_SET", "single"])
    if method == "hungarian":
        cfg.merge_from_list(["MODEL.ZSMASK.MATCHER", "hungarian", "MODEL.ZSMASK.LOSSES", "['labels', 'masks']",
                             "MODEL.ZSMASK.CLASS_SCORE", "softmax", "MODEL.ZSMASK.LOGIT_BIAS_INIT", "0.0",
                             "MODEL.ZSMASK.PSEUDO_LABELER", "", "MODEL.ZSMASK.AUXILIARY_HEADS", "[]"])
    elif method == "split_matching_dense":
        cfg.merge_from_list(["MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING", "dense"])
    return cfg


def bench_pseudo_masks(runs: int, device: torch.device):
    cfg = model_cfg("split_matching", str(device))
    torch.manual_seed(0)
    clip = CLIPTextImageEncoder(cfg).to(device).eval()
    generator = PseudoMaskGenerator(cfg)
    rows = []
    for batch in (1, 8):
        inputs = synthetic_inputs(batch)
        images = torch.stack([x["image"] for x in inputs]).float().to(device)
        unannotated = torch.stack([x["unannotated"] for x in inputs]).to(device)
        with torch.no_grad():
            dense = clip.encode_image_dense(images)["patch_embeddings"].float()
        stride = clip.dense_stride
        cell_valid = cell_fractions(unannotated, dense.shape[-2:], stride) > generator.cell_unannotated_fraction

        def post_clip():
            cells = generator.cluster(dense, cell_valid)
            return [generator._image_masks(cells[i], unannotated[i], stride) for i in range(batch)]

        with torch.no_grad():
            masks = post_clip()
            seconds = _median_seconds(post_clip, runs, device)
            dense_forward = cls_forward = float("nan")
            if batch == 1:  # the CLIP forwards scale linearly: timed for one image
                dense_forward = _median_seconds(lambda: clip.encode_image_dense(images), runs, device)
                cls_forward = _median_seconds(lambda: generator._embeddings(clip, images[0], dense[0], masks[0]),
                                              runs, device)
        count = sum(m.shape[0] for m in masks) / batch
        rows.append((batch, tuple(dense.shape[-2:]), count, seconds / batch, dense_forward, cls_forward))
    print("\nPseudo-mask generation (ViT-B/16, 512 x 512, a quarter of each image unannotated)")
    print("| batch | CLIP grid | masks / image | K-means + fusion + masks, ms / image (excl. CLIP) "
          "| CLIP dense forward, ms / image | C_u [CLS] forwards, ms / image |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch, grid, count, post, dense_t, cls_t in rows:
        clip_columns = "- | -" if batch > 1 else f"{1000 * dense_t:.0f} | {1000 * cls_t:.0f}"
        print(f"| {batch} | {grid[0]} x {grid[1]} | {count:.1f} | {1000 * post:.1f} | {clip_columns} |")


def bench_training_step(runs: int, batch: int, device: torch.device):
    inputs = synthetic_inputs(batch)
    results = {}
    for method in ("hungarian", "split_matching", "split_matching_dense"):
        torch.manual_seed(0)
        model = build_model(model_cfg(method, str(device))).train()

        def step():
            model.zero_grad(set_to_none=True)
            losses = model(inputs)
            sum(losses.values()).backward()

        results[method] = _median_seconds(step, runs, device)
        del model
    base = results["hungarian"]
    print(f"\nTraining step (forward + backward), ResNet-50 model of configs/coco/split_matching.yaml, "
          f"batch {batch} at 512 x 512, {device}")
    print("| matcher / losses | C_u | s / step | ratio to Hungarian |")
    print("|---|---|---:|---:|")
    print(f"| hungarian (CE, BCE + dice) | - | {base:.2f} | 1.00 |")
    for method, cu in (("split_matching", "[CLS] of masked images"), ("split_matching_dense", "dense features")):
        print(f"| split matching (+ pseudo masks, MFE) | {cu} | {results[method]:.2f} | {results[method] / base:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="images per training step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-step", action="store_true", help="only the pseudo-mask part")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    bench_pseudo_masks(args.runs, device)
    if not args.skip_step:
        bench_training_step(args.runs, args.batch, device)


if __name__ == "__main__":
    main()
