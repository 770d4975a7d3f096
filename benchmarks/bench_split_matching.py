#!/usr/bin/env python
"""Split Matching cost at COCO-like settings (512 x 512 input, CLIP ViT-B/16 -> 32 x 32 dense
features, random weights, which do not change the cost), and the quality of its region
embeddings C_u on the toy world, in one process:

1. Pseudo-mask generation per image *excluding the CLIP forward*: K-means seeding (Eq. 1),
   K-means, fusion and mask building from given dense features, for batches of 1 and 8. The
   CLIP dense forward (which K-means needs anyway) and the making of C_u from it are timed
   apart, for each ``REGION_EMBEDDING``: ``cls`` (one CLIP forward per masked image),
   ``cls_attention`` ([CLS] copies in the last blocks of the dense forward itself; timed: the
   dense forward keeping those blocks' inputs, and the copies' decoding), ``region_tokens``
   (one packed forward of the masks' own cells) and ``dense`` (mask pooling of the dense
   features).
2. One training step (forward + backward) of the same model, configs/coco/split_matching.yaml
   with a ResNet-50, trained with split matching (pseudo masks with C_u by each option, MFE)
   and with the Hungarian baseline (its matcher and losses, no pseudo labeler, no MFE; same
   150 queries): seconds and the ratio to the baseline; one more row leaves out the MFE
   (``cls_attention`` C_u), to show its share.
3. Toy world (the pretrained, region-competent toy CLIP; ``--skip-toy`` to leave out): the
   zero-shot top-1 of C_u over all 30 classes, and over the 6 unseen ones (ZS3), on fresh
   scenes, for every option (``cls_attention`` for each number of biased blocks), on the
   ground-truth regions of unseen classes and on the pseudo masks of the unseen pixels (the
   training setting; a pseudo mask's class is the one covering most of it). A diagnostic row
   runs the [CLS] copies on each masked image instead (one forward per mask): it separates
   what the copies lose through the patch tokens' view of the whole image from the copies
   themselves.

Images of parts 1 and 2 are synthetic: 4 seen-class rectangles on a background class, with a
quarter of the image unannotated (ignore). Times are medians of ``--runs`` after one warm-up.

    .venv/bin/python benchmarks/bench_split_matching.py [--runs 3] [--batch 2] [--device cpu] [--toy-scenes 200]
        [--skip-toy] [--skip-pseudo-masks] [--skip-step] [--steps split_matching_cls_attention ...]
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
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
from zsmask.data.toy_world import TOY_CLASS_NAMES, TOY_UNSEEN, draw_scene  # noqa: E402
from zsmask.modeling.clip import CLIPTextImageEncoder  # noqa: E402
from zsmask.modeling.clip.region_views import cell_fractions, mask_pooled_embeddings  # noqa: E402
from zsmask.modeling.clip.toy_clip import embedding_metrics  # noqa: E402
from zsmask.modeling.pseudo_masks import PseudoMaskGenerator  # noqa: E402

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
    elif method.startswith("split_matching_"):  # split_matching_<REGION_EMBEDDING>[_no_mfe]
        option = method[len("split_matching_"):]
        if option.endswith(NO_MFE):
            option = option[:-len(NO_MFE)]
            cfg.merge_from_list(["MODEL.ZSMASK.AUXILIARY_HEADS", "[]"])
        cfg.merge_from_list(["MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING", option])
    return cfg


NO_MFE = "_no_mfe"


REGION_EMBEDDINGS = (("cls", "[CLS] of masked images"), ("cls_attention", "[CLS] copies, region-biased attention"),
                     ("region_tokens", "CLIP on each mask's own cells, packed"), ("dense", "dense features"))


def bench_pseudo_masks(runs: int, device: torch.device):
    cfg = model_cfg("split_matching", str(device))
    torch.manual_seed(0)
    clip = CLIPTextImageEncoder(cfg).to(device).eval()
    generator = PseudoMaskGenerator(cfg)
    layers = cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS
    rows, clip_times = [], {}
    for batch in (1, 8):
        inputs = synthetic_inputs(batch)
        images = torch.stack([x["image"] for x in inputs]).float().to(device)
        unannotated = torch.stack([x["unannotated"] for x in inputs]).to(device)
        with torch.no_grad():
            out = clip.encode_image_dense(images, region_layers=layers)
        dense = out["patch_embeddings"].float()
        stride = clip.dense_stride
        cell_valid = cell_fractions(unannotated, dense.shape[-2:], stride) > generator.cell_unannotated_fraction

        def post_clip():
            cells = generator.cluster(dense, cell_valid)
            return [generator._image_masks(cells[i], unannotated[i], stride) for i in range(batch)]

        with torch.no_grad():
            masks = post_clip()
            seconds = _median_seconds(post_clip, runs, device)
            if batch == 1:  # the CLIP parts scale linearly: timed for one image
                clip_times = {
                    "dense forward": _median_seconds(lambda: clip.encode_image_dense(images), runs, device),
                    "dense forward keeping block inputs": _median_seconds(
                        lambda: clip.encode_image_dense(images, region_layers=layers), runs, device),
                    "cls": _median_seconds(lambda: generator._masked_cls_embeddings(clip, images, masks), runs, device),
                    "cls_attention": _median_seconds(lambda: clip.encode_mask_regions(out["block_inputs"], masks),
                                                     runs, device),
                    "region_tokens": _median_seconds(lambda: clip.encode_region_tokens(images, masks), runs, device),
                    "dense": _median_seconds(lambda: mask_pooled_embeddings(dense[0], masks[0], stride), runs, device),
                }
                clip_count = masks[0].shape[0]
        count = sum(m.shape[0] for m in masks) / batch
        rows.append((batch, tuple(dense.shape[-2:]), count, seconds / batch))
    print("\nPseudo-mask generation (ViT-B/16, 512 x 512, a quarter of each image unannotated)")
    print("| batch | CLIP grid | masks / image | K-means + fusion + masks, ms / image (excl. CLIP) |")
    print("|---:|---|---:|---:|")
    for batch, grid, count, post in rows:
        print(f"| {batch} | {grid[0]} x {grid[1]} | {count:.1f} | {1000 * post:.1f} |")
    print(f"\nCLIP per image (one image, {clip_count} pseudo masks; cls_attention in the last {layers} blocks)")
    print("| part | ms / image | what it is |")
    print("|---|---:|---|")
    print(f"| dense forward | {1000 * clip_times['dense forward']:.0f} | K-means' features, every option |")
    print(f"| dense forward keeping block inputs | {1000 * clip_times['dense forward keeping block inputs']:.0f} "
          "| the same forward for cls_attention |")
    for option, what in REGION_EMBEDDINGS:
        print(f"| C_u: {option} | {1000 * clip_times[option]:.1f} | {what}, after the dense forward |")


def step_methods():
    """The training steps timed: the Hungarian baseline, split matching with each C_u, and
    split matching with ``cls_attention`` C_u and no MFE (the MFE's share of the step)."""
    return (("hungarian",) + tuple(f"split_matching_{option}" for option, _ in REGION_EMBEDDINGS)
            + (f"split_matching_cls_attention{NO_MFE}",))


def bench_training_step(runs: int, batch: int, device: torch.device, methods=None):
    inputs = synthetic_inputs(batch)
    results = {}
    methods = ["hungarian"] + [m for m in (methods or step_methods()) if m != "hungarian"]
    for method in methods:
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
    what_of = dict(REGION_EMBEDDINGS)
    for method in methods[1:]:
        seconds = results[method]
        option = method[len("split_matching_"):]
        parts = "+ pseudo masks, no MFE" if option.endswith(NO_MFE) else "+ pseudo masks, MFE"
        option = option[:-len(NO_MFE)] if option.endswith(NO_MFE) else option
        print(f"| split matching ({parts}) | {option}: {what_of[option]} | {seconds:.2f} | {seconds / base:.2f} |")


TOY_SCENE_STREAM = 3000  # fresh scenes: a seed stream no toy-world split or toy-CLIP draw uses


def bench_toy_region_top1(scenes: int, device: torch.device):
    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(os.path.join(ROOT, "configs", "toy", "split_matching.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", str(device)])
    clip = CLIPTextImageEncoder(cfg).to(device).eval()
    text = clip.encode_vocabulary(TOY_CLASS_NAMES).float().cpu()
    unseen_ids = [TOY_CLASS_NAMES.index(n) for n in TOY_UNSEEN]
    rng = np.random.RandomState([12345, TOY_SCENE_STREAM])
    drawn = [draw_scene(rng, 128)[:2] for _ in range(scenes)]
    images = torch.stack([torch.from_numpy(image).permute(2, 0, 1).float() for image, _ in drawn]).to(device)
    labels = torch.stack([torch.from_numpy(label.astype(np.int64)) for _, label in drawn]).to(device)
    unannotated = torch.isin(labels, torch.tensor(unseen_ids, device=device))  # what training leaves unlabelled
    settings = PseudoMaskGenerator.from_config(cfg)
    with torch.no_grad():
        pseudo = [PseudoMaskGenerator(**settings)(clip, images[i:i + 16], unannotated[i:i + 16])
                  for i in range(0, scenes, 16)]
    pseudo_masks = [p.masks for chunk in pseudo for p in chunk]
    region_masks, region_labels, pseudo_labels = [], [], []
    for label, masks in zip(labels, pseudo_masks):
        classes = [c for c in unseen_ids if int((label == c).sum()) >= 64]
        region_masks.append(torch.stack([label == c for c in classes]) if classes else label.new_zeros((0,) + label.shape).bool())
        region_labels.extend(classes)
        for mask in masks:  # the class covering most of the pseudo mask
            pseudo_labels.append(int(label[mask].bincount(minlength=len(TOY_CLASS_NAMES)).argmax()))
    depth = len(clip.model.visual.transformer.resblocks)
    options = [("cls", {}), ("region_tokens", {}), ("dense", {})] + [(f"cls_attention, last {k} blocks", {"region_embedding": "cls_attention",
                                                                                   "region_attention_layers": k})
                                              for k in range(1, depth + 1)]
    print(f"\nC_u zero-shot top-1 on the toy world ({scenes} fresh scenes, toy CLIP with {depth} blocks; "
          f"configs/toy: cls_attention in the last {cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS})")
    print(f"| C_u | GT unseen regions ({len(region_labels)}): top-1 of 30 | ZS3 top-1 of 6 "
          f"| pseudo masks ({len(pseudo_labels)}): top-1 of 30 | ZS3 top-1 of 6 |")
    print("|---|---:|---:|---:|---:|")
    for name, override in options:
        generator = PseudoMaskGenerator(**{**settings, "region_embedding": name.split(",")[0], **override})
        cells = []
        for masks in (region_masks, pseudo_masks):
            with torch.no_grad():
                embeddings = torch.cat([torch.cat(generator.region_embeddings(clip, images[i:i + 16], masks[i:i + 16]))
                                        for i in range(0, scenes, 16)]).cpu()
            cells.append(embeddings)
        _print_top1_row(name, cells, region_labels, pseudo_labels, text)
    cells = [torch.cat([_copies_on_masked_image(clip, images[i], m, depth) for i, m in enumerate(masks)])
             for masks in (region_masks, pseudo_masks)]
    _print_top1_row(f"diagnostic: cls_attention, last {depth} blocks, on each masked image", cells, region_labels,
                    pseudo_labels, text)


def _print_top1_row(name, embeddings, region_labels, pseudo_labels, text):
    gt = embedding_metrics(embeddings[0], np.asarray(region_labels), text)
    pm = embedding_metrics(embeddings[1], np.asarray(pseudo_labels), text)
    print(f"| {name} | {gt['top1']:.1f} | {gt['top1_unseen_among_unseen']:.1f} | {pm['top1']:.1f} "
          f"| {pm['top1_unseen_among_unseen']:.1f} |")


@torch.no_grad()
def _copies_on_masked_image(clip, image, masks, layers):
    """[CLS] copies, each in the forward of its own masked image (outside at the mean pixel): (U, D)."""
    rows = [image.new_zeros((0, clip.embed_dim))]
    for mask in masks:
        masked = torch.where(mask, image, clip.pixel_mean.view(3, 1, 1).to(image))
        block_inputs = clip.encode_image_dense(masked[None], region_layers=layers)["block_inputs"]
        rows.append(clip.encode_mask_regions(block_inputs, [mask[None]])[0].cpu())
    return torch.cat(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="images per training step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-step", action="store_true", help="leave out the training step")
    parser.add_argument("--skip-toy", action="store_true", help="leave out the toy world's C_u top-1")
    parser.add_argument("--toy-scenes", type=int, default=200, help="fresh toy scenes for the top-1 (default 200)")
    parser.add_argument("--steps", nargs="+", choices=step_methods(), metavar="METHOD",
                        help=f"training steps to time, besides hungarian (default all: {' '.join(step_methods()[1:])})")
    parser.add_argument("--skip-pseudo-masks", action="store_true",
                        help="leave out the pseudo-mask and per-image CLIP tables")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    if not args.skip_toy:
        bench_toy_region_top1(args.toy_scenes, device)
    if not args.skip_pseudo_masks:
        bench_pseudo_masks(args.runs, device)
    if not args.skip_step:
        bench_training_step(args.runs, args.batch, device, args.steps)


if __name__ == "__main__":
    main()
