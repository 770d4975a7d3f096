#!/usr/bin/env python
"""Quick-start job: a generated zero-shot split evaluated end to end on CPU in seconds.

Until the model core and the toy world (CLIP pretrained on generated captions) land, the
best end-to-end thing is this: a small colour world is written to disk, registered with
``register_zero_shot_split`` (train: seen vocabulary; test: GZS3; test_zs3: ZS3), loaded by
the zero-shot dataset mapper through detectron2's loaders, and a training-free classifier
that knows each class only by its *name* (a colour word -> RGB prototype, nearest prototype
per pixel, 5x5 mean filter) is scored by the GZS3 evaluator. Unseen classes are found
because the classifier is built from the test vocabulary's names, exactly the mechanism a
CLIP text classifier provides.

    python tools/quickstart.py [--output-dir DIR]
"""
import argparse
import json
import logging
import os
import sys

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.logger import setup_logger
from torch import nn
from torch.nn import functional as F

from zsmask.config import add_zsmask_config
from zsmask.data import ZeroShotSemSegDatasetMapper
from zsmask.data.colour_world import COLOUR_RGB, register_colour_world
from zsmask.evaluation import GeneralizedZeroShotSemSegEvaluator


class ColourNameClassifier(nn.Module):
    """Per-pixel zero-shot classifier built from class names only.

    Scores ``(C, H, W)`` are negative distances between the (5x5 mean-filtered) pixel colour
    and the RGB prototype named by each class of the current vocabulary.
    """

    def __init__(self, class_names):
        super().__init__()
        unknown = [c for c in class_names if c not in COLOUR_RGB]
        if unknown:
            raise ValueError(f"no colour prototype for class names {unknown}")
        self.register_buffer("prototypes", torch.tensor([COLOUR_RGB[c] for c in class_names], dtype=torch.float32))

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            img = x["image"].float()[None]  # (1, 3, H, W), RGB
            img = F.avg_pool2d(img, 5, stride=1, padding=2, count_include_pad=False)
            dist = torch.cdist(img.flatten(2).transpose(1, 2), self.prototypes[None])  # (1, HW, C)
            scores = -dist.transpose(1, 2).reshape(1, -1, *img.shape[-2:])
            scores = F.interpolate(scores, size=(x["height"], x["width"]), mode="bilinear", align_corners=False)
            outputs.append({"sem_seg": scores[0]})
        return outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/quickstart", help="where metrics JSON files go")
    args = parser.parse_args(argv)
    setup_logger(name="zsmask")
    setup_logger(name="detectron2", abbrev_name="d2")
    log = logging.getLogger("zsmask")

    split = register_colour_world("quickstart")
    cfg = add_zsmask_config(get_cfg())
    cfg.INPUT.MIN_SIZE_TEST = 0  # evaluate at the generated resolution
    cfg.DATALOADER.NUM_WORKERS = 0

    train_meta = MetadataCatalog.get(split.train)
    train_mapper = ZeroShotSemSegDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", ignore_label=train_meta.ignore_label
    )
    ignored = sum(int((train_mapper(d)["sem_seg"] == 255).sum()) for d in DatasetCatalog.get(split.train))
    log.info(
        f"train variant '{split.train}': vocabulary {train_meta.stuff_classes} "
        f"({ignored} pixels ignored, unseen classes included)"
    )

    results = {}
    for name in (split.test, split.zs3):
        meta = MetadataCatalog.get(name)
        model = ColourNameClassifier(meta.stuff_classes).eval()
        loader = build_detection_test_loader(cfg, name, mapper=ZeroShotSemSegDatasetMapper(cfg, is_train=False))
        evaluator = GeneralizedZeroShotSemSegEvaluator(name, distributed=False, output_dir=args.output_dir)
        results[name] = inference_on_dataset(model, loader, evaluator)["sem_seg"]

    gzs3 = results[split.test]
    zs3 = results[split.zs3]
    summary = {
        "GZS3 mIoU(S)": gzs3["mIoU_seen"], "GZS3 mIoU(U)": gzs3["mIoU_unseen"],
        "GZS3 hIoU": gzs3["hIoU"], "GZS3 pAcc": gzs3["pAcc"], "ZS3 mIoU": zs3["mIoU"],
    }
    print("\nzsmask quick start (colour world, training-free name classifier):")
    print(json.dumps({k: round(v, 2) for k, v in summary.items()}, indent=1))
    ok = all(np.isfinite(v) for v in summary.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
