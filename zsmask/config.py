"""zsmask's additions to detectron2's config: one entry point, :func:`add_zsmask_config`.

Every key zsmask reads is declared here with its default and what it does. Keys of later
parts (model, methods) are added here as those parts land, never in a second function.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_zsmask_config"]


def add_zsmask_config(cfg: CN) -> CN:
    """Add zsmask's keys to a detectron2 config (in place) and return it."""
    # ---------------------------------------------------------------- data / input pipeline
    # CLIP models take RGB; detectron2's default is BGR (Caffe2-era ResNets).
    cfg.INPUT.FORMAT = "RGB"
    # Dataset mapper used by train_net.py: "zero_shot_semantic" reads labels through the
    # registered split's label map (unseen pixels -> ignore in *_train variants).
    cfg.INPUT.DATASET_MAPPER_NAME = "zero_shot_semantic"
    # SSD-style photometric distortion (brightness, contrast, saturation, hue) in training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # RandomCrop_CategoryAreaConstraint: re-draw a crop (up to 10 times) while one category
    # covers more than this fraction of it; 1.0 disables the constraint.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad training images / labels so height and width are multiples of this (-1: no padding).
    cfg.INPUT.SIZE_DIVISIBILITY = -1

    # ---------------------------------------------------------------- solver
    # Optimizer: "ADAMW" (papers' choice) or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning-rate multiplier for backbone parameters (Mask2Former: 0.1).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Weight decay for embedding parameters (query embeddings, positional tables, prompts).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # "WarmupPolyLR": lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER after warm-up.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # Constant lr factor reached at the end of the poly schedule (0 decays to zero).
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0

    # ---------------------------------------------------------------- evaluation
    cfg.TEST.ZERO_SHOT = CN()
    # Also evaluate the ZS3 variant ("<split>_test_zs3", unseen-only vocabulary) of every
    # "*_test" dataset in DATASETS.TEST when it is registered.
    cfg.TEST.ZERO_SHOT.EVAL_ZS3 = False
    return cfg
