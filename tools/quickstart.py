#!/usr/bin/env python
"""The quick start: train and evaluate a zero-shot segmenter on the toy world, on CPU, in minutes.

    python tools/quickstart.py [--config-file configs/toy/alignzeg.yaml] [--output-dir output/quickstart] [KEY VALUE ...]

1. prepares the toy world (generated scenes + the self-pretrained toy CLIP; cached, so only
   the first run pays for it), with progress lines;
2. trains the toy config's ZeroShotMaskFormer on ``toy_world_train``, whose labels hold the
   24 seen classes only (unseen pixels are ignored), with detectron2's ETA lines;
3. evaluates on ``toy_world_test`` (all 30 classes, GZS3) and ``toy_world_test_zs3`` (the 6
   unseen classes), prints the GZS3 table, and writes ``[image | ground truth | prediction]``
   panels of a few validation images (unseen classes marked "[unseen]") to
   ``<output-dir>/visualizations``.

Trailing ``KEY VALUE`` pairs override the config (e.g. ``SOLVER.MAX_ITER 100``). Metrics go to
``<output-dir>/quickstart_results.json``. The device is CUDA when available, else CPU
(``--device`` overrides). ``--smoke`` checks the whole path in about a minute (a 60-scene
world, a CLIP pretrained for 30 steps, 10 iterations): its numbers mean nothing.
"""
import argparse
import json
import logging
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from PIL import Image
from tabulate import tabulate

import zsmask.data  # noqa: F401  (registers toy_world_*)
import zsmask.modeling  # noqa: F401  (registers the meta-architecture and its parts)
from zsmask.data import ZeroShotSemSegDatasetMapper, label_map_for_dataset, read_image, read_sem_seg
from zsmask.data.toy_world import DEFAULT_TOY_WORLD, SMOKE_TOY_WORLD
from zsmask.modeling.clip.toy_clip import DEFAULT_TOY_CLIP_RECIPE, ToyClipRecipe
from zsmask.engine import Trainer, build_config
from zsmask.toy import prepare_toy_world
from zsmask.utils import Progress
from zsmask.visualization import prediction_panel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The best toy model whose fresh `make quickstart` fits 15 minutes on 2 cores (docs/quickstart.md).
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "toy", "alignzeg.yaml")
SMOKE_WORLD = SMOKE_TOY_WORLD
SMOKE_CLIP = ToyClipRecipe(steps=30, batch_size=64, pool_size=960, eval_crops_per_class=4, scene_pool=64,
                          eval_scenes=10)
SMOKE_OPTS = ["SOLVER.MAX_ITER", "10", "SOLVER.IMS_PER_BATCH", "4",
              "DATASETS.TRAIN", "('toy_world_smoke_train',)", "DATASETS.TEST", "('toy_world_smoke_test',)"]


def _say(text: str) -> None:
    print(text, flush=True)


def gzs3_table(results: dict) -> str:
    """Summary rows of every evaluated dataset: mIoU(S), mIoU(U), hIoU, mIoU, pAcc."""
    def value(m, key):
        return m[key] if key in m and np.isfinite(m[key]) else None

    rows = []
    for name, metrics in results.items():
        m = metrics["sem_seg"]
        rows.append([name] + [value(m, k) for k in ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU", "pAcc")])
    return tabulate(rows, headers=["dataset", "mIoU(S)", "mIoU(U)", "hIoU", "mIoU", "pAcc"], floatfmt=".2f",
                    missingval="-")


def unseen_table(results: dict, dataset_name: str) -> str:
    """Per-class IoU of the unseen classes on ``dataset_name`` (GZS3)."""
    meta = MetadataCatalog.get(dataset_name)
    metrics = results[dataset_name]["sem_seg"]
    rows = [[meta.stuff_classes[i], metrics.get(f"IoU-{meta.stuff_classes[i]}", float("nan"))]
            for i in meta.unseen_classes]
    return tabulate(rows, headers=["unseen class", "IoU"], floatfmt=".2f")


@torch.no_grad()
def write_visualizations(cfg, model, dataset_name: str, output_dir: str, count: int):
    """Save ``[image | ground truth | prediction]`` panels of the first ``count`` images."""
    os.makedirs(output_dir, exist_ok=True)
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=False)
    meta = MetadataCatalog.get(dataset_name)
    lut = label_map_for_dataset(dataset_name)
    was_training = model.training
    model.eval()
    paths = []
    for record in DatasetCatalog.get(dataset_name)[:count]:
        prediction = model([mapper(dict(record))])[0]["sem_seg"].argmax(dim=0).cpu().numpy()
        image = read_image(record["file_name"], "RGB")
        ground_truth = read_sem_seg(record["sem_seg_file_name"], lut, meta.ignore_label)
        path = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
        Image.fromarray(prediction_panel(image, ground_truth, prediction, dataset_name)).save(path)
        paths.append(path)
    model.train(was_training)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="a configs/toy/*.yaml file")
    parser.add_argument("--output-dir", default="output/quickstart")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-vis", type=int, default=4, help="validation images to draw")
    parser.add_argument("--smoke", action="store_true", help="a one-minute check of the whole path (meaningless numbers)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    start = time.monotonic()
    setup_logger(name="detectron2", abbrev_name="d2")
    setup_logger(name="zsmask")
    logging.getLogger().setLevel(logging.WARNING)  # open_clip's INFO chatter on the root logger

    _say("[1/3] preparing the toy world (generated once, then reused from the cache)")
    world, clip_recipe, opts = DEFAULT_TOY_WORLD, DEFAULT_TOY_CLIP_RECIPE, []
    if args.smoke:
        world, clip_recipe, opts = SMOKE_WORLD, SMOKE_CLIP, list(SMOKE_OPTS)
    prepared = prepare_toy_world(world, clip_recipe, print_fn=_say)
    if args.smoke:
        opts += ["MODEL.CLIP.PRETRAINED", prepared["clip_weights"]]

    opts += ["MODEL.DEVICE", args.device, "OUTPUT_DIR", args.output_dir] + args.opts
    cfg = build_config(args.config_file, opts)
    cfg.freeze()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(cfg.dump())  # the model's config beside its weights (demo/app.py, Predictor)
    train_set = cfg.DATASETS.TRAIN[0]
    _say(f"[2/3] training {os.path.relpath(args.config_file, ROOT)} on {train_set} "
         f"(seen classes only: {len(MetadataCatalog.get(train_set).stuff_classes)}) for {cfg.SOLVER.MAX_ITER} "
         f"iterations of batch {cfg.SOLVER.IMS_PER_BATCH} on {args.device}; ETA lines every 20 iterations")
    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    train_start = time.monotonic()
    results = trainer.train()
    train_seconds = time.monotonic() - train_start
    if not results:
        _say("error: the run produced no evaluation results (is DATASETS.TEST empty?)")
        return 1

    test_set = cfg.DATASETS.TEST[0]
    _say(f"[3/3] zero-shot evaluation: GZS3 on {test_set} (all classes), ZS3 on the unseen classes")
    vis_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    panels = write_visualizations(cfg, trainer.model, test_set, vis_dir, args.num_vis)
    summary = {
        "config": os.path.relpath(args.config_file, ROOT),
        "toy_clip_zero_shot_top1": prepared["clip_report"]["top1"],
        "train_seconds": train_seconds,
        "total_seconds": time.monotonic() - start,
        "results": {k: v["sem_seg"] for k, v in results.items()},
        "visualizations": panels,
    }
    with open(os.path.join(cfg.OUTPUT_DIR, "quickstart_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    _say("\n" + unseen_table(results, test_set))
    _say("\nzsmask quick start: GZS3 table (inductive: unseen class names and pixels never used in training)")
    _say(gzs3_table(results))
    _say(f"\nvisualisations ([image | ground truth | prediction], unseen classes marked): {vis_dir}")
    _say(f"time: training {Progress.format_seconds(train_seconds)}, "
         f"total {Progress.format_seconds(summary['total_seconds'])}")
    finite = all(np.isfinite(results[test_set]["sem_seg"][k]) for k in ("mIoU_seen", "mIoU_unseen", "hIoU"))
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
