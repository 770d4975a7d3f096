"""Building a zsmask config from a config file and command-line style overrides."""
from typing import Sequence

from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from ..config import add_zsmask_config
from ..data.catalog import VARIANT_SUFFIX
from ..evaluation.zero_shot_evaluator import check_absent_classes
from .checkpoint import read_clip_from_weights
from .sliding_window import check_window

__all__ = ["with_zs3_variants", "build_config"]


def with_zs3_variants(test_names: Sequence[str]) -> tuple:
    """Append the registered ``*_test_zs3`` variant after each ``*_test`` dataset."""
    out = list(test_names)
    for name in test_names:
        if name.endswith(VARIANT_SUFFIX["test"]):
            zs3 = name[: -len(VARIANT_SUFFIX["test"])] + VARIANT_SUFFIX["zs3"]
            if zs3 in DatasetCatalog.list() and zs3 not in out:
                out.append(zs3)
    return tuple(out)


def build_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """detectron2 defaults + :func:`add_zsmask_config` + ``config_file`` (with ``_BASE_``) +
    ``opts`` (``["KEY", "value", ...]``); with ``TEST.ZERO_SHOT.EVAL_ZS3`` the ZS3 variants
    join ``DATASETS.TEST``; ``MODEL.WEIGHTS`` that carry their CLIP also become
    ``MODEL.CLIP.PRETRAINED`` (:func:`~zsmask.engine.checkpoint.read_clip_from_weights`). A bad
    ``TEST.ZERO_SHOT.ABSENT_CLASSES`` or ``TEST.SLIDING_WINDOW`` fails here, before any training. Not frozen."""
    cfg = get_cfg()
    add_zsmask_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    read_clip_from_weights(cfg)
    check_absent_classes(cfg.TEST.ZERO_SHOT.ABSENT_CLASSES)
    if cfg.TEST.SLIDING_WINDOW.ENABLED:
        check_window(cfg.TEST.SLIDING_WINDOW.SIZE, cfg.TEST.SLIDING_WINDOW.STRIDE)
        if cfg.TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS:
            raise ValueError("TEST.SLIDING_WINDOW.ENABLED and TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS cannot be on "
                             "together: proposals are per window and are not stitched; turn one off")
    if cfg.TEST.ZERO_SHOT.EVAL_ZS3:
        cfg.DATASETS.TEST = with_zs3_variants(cfg.DATASETS.TEST)
    return cfg
