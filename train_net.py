#!/usr/bin/env python
"""Train or evaluate a zsmask model (detectron2 launcher).

    python train_net.py --config-file configs/coco/split_matching.yaml --num-gpus 8
    python train_net.py --config-file configs/voc/alignzeg.yaml --eval-only MODEL.WEIGHTS model.pth

The datasets, mapper, evaluator, optimizer and LR schedule are zsmask's; the model is built
from ``MODEL.META_ARCHITECTURE`` in detectron2's ``META_ARCH_REGISTRY``.
"""
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import zsmask.data  # noqa: F401  (registers the built-in zero-shot splits)
from zsmask.config import add_zsmask_config
from zsmask.data import ZeroShotSemSegDatasetMapper
from zsmask.data.catalog import EVALUATOR_TYPE, VARIANT_SUFFIX
from zsmask.evaluation import GeneralizedZeroShotSemSegEvaluator
from zsmask.solver import build_lr_scheduler, build_optimizer


def _mapper(cfg, is_train: bool):
    if cfg.INPUT.DATASET_MAPPER_NAME != "zero_shot_semantic":
        raise ValueError(f"unknown INPUT.DATASET_MAPPER_NAME {cfg.INPUT.DATASET_MAPPER_NAME!r}; use 'zero_shot_semantic'")
    return ZeroShotSemSegDatasetMapper(cfg, is_train)


class Trainer(DefaultTrainer):
    """detectron2 trainer with zsmask's data pipeline, evaluator and solver."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", EVALUATOR_TYPE)
        if evaluator_type not in (EVALUATOR_TYPE, "sem_seg"):
            raise ValueError(f"dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; zsmask evaluates semantic segmentation")
        return DatasetEvaluators([GeneralizedZeroShotSemSegEvaluator(dataset_name, output_dir=output_folder)])

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)


def with_zs3_variants(test_names):
    """Append the registered ``*_test_zs3`` variant after each ``*_test`` dataset."""
    out = list(test_names)
    for name in test_names:
        if name.endswith(VARIANT_SUFFIX["test"]):
            zs3 = name[: -len(VARIANT_SUFFIX["test"])] + VARIANT_SUFFIX["zs3"]
            if zs3 in DatasetCatalog.list() and zs3 not in out:
                out.append(zs3)
    return tuple(out)


def setup(args):
    cfg = get_cfg()
    add_zsmask_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.TEST.ZERO_SHOT.EVAL_ZS3:
        cfg.DATASETS.TEST = with_zs3_variants(cfg.DATASETS.TEST)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsmask")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger("zsmask").info("Command Line Args: %s", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
