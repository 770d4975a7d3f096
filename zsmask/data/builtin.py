"""The standard zero-shot benchmarks, registered under ``$DETECTRON2_DATASETS``.

Importing :mod:`zsmask.data` registers, for each benchmark ``B`` below, ``B_train`` (seen
vocabulary), ``B_test`` (full vocabulary, GZS3) and ``B_test_zs3`` (unseen vocabulary):

================  ===============================  ===================  ==========
B                 dataset                          train / test images  unseen
================  ===============================  ===================  ==========
``voc_zs``        PASCAL VOC 2012 (aug), 20 cls    10,582 / 1,449       5
``coco_stuff_zs`` COCO-Stuff 164K, 171 cls         118,287 / 5,000      15
``pcontext_zs``   PASCAL Context, 59 cls           4,996 / 5,104        10
================  ===============================  ===================  ==========

Registration is lazy: folders are only looked at when a dataset is loaded, and a missing
folder raises :class:`~zsmask.data.catalog.DatasetNotFoundError` naming the layout, the
``DETECTRON2_DATASETS`` root and the prepare script.
"""
import os
from typing import Dict

from .builtin_meta import (
    COCO_STUFF_CLASSES,
    COCO_STUFF_UNSEEN,
    PCONTEXT59_CLASSES,
    PCONTEXT59_UNSEEN,
    VOC_CLASSES,
    VOC_UNSEEN,
)
from .catalog import RegisteredSplit, SemSegFolder, register_zero_shot_split

__all__ = ["register_all_builtin", "builtin_datasets_root", "BUILTIN_SPLITS"]

_VOC_LAYOUT = """\
  $DETECTRON2_DATASETS/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  $DETECTRON2_DATASETS/VOCdevkit/VOC2012/annotations_detectron2/train_aug/<id>.png   (10,582)
  $DETECTRON2_DATASETS/VOCdevkit/VOC2012/annotations_detectron2/val/<id>.png         (1,449)"""
_COCO_LAYOUT = """\
  $DETECTRON2_DATASETS/coco/{train2017,val2017}/<id>.jpg
  $DETECTRON2_DATASETS/coco/stuffthingmaps_detectron2/train2017/<id>.png   (118,287)
  $DETECTRON2_DATASETS/coco/stuffthingmaps_detectron2/val2017/<id>.png     (5,000)"""
_PCONTEXT_LAYOUT = """\
  $DETECTRON2_DATASETS/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
  $DETECTRON2_DATASETS/VOCdevkit/VOC2010/annotations_ctx59/train/<id>.png   (4,996)
  $DETECTRON2_DATASETS/VOCdevkit/VOC2010/annotations_ctx59/val/<id>.png     (5,104)"""

# name -> (class names, unseen names, {variant: (image dir, label dir)}, layout, prepare script)
BUILTIN_SPLITS = {
    "voc_zs": (
        VOC_CLASSES,
        VOC_UNSEEN,
        {
            "train": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_detectron2/train_aug"),
            "test": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_detectron2/val"),
        },
        _VOC_LAYOUT,
        "python datasets/prepare_voc_sem_seg.py",
    ),
    "coco_stuff_zs": (
        COCO_STUFF_CLASSES,
        COCO_STUFF_UNSEEN,
        {
            "train": ("coco/train2017", "coco/stuffthingmaps_detectron2/train2017"),
            "test": ("coco/val2017", "coco/stuffthingmaps_detectron2/val2017"),
        },
        _COCO_LAYOUT,
        "python datasets/prepare_coco_stuff_164k_sem_seg.py",
    ),
    "pcontext_zs": (
        PCONTEXT59_CLASSES,
        PCONTEXT59_UNSEEN,
        {
            "train": ("VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_ctx59/train"),
            "test": ("VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_ctx59/val"),
        },
        _PCONTEXT_LAYOUT,
        "python datasets/prepare_pascal_context_59.py",
    ),
}


def builtin_datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, or ``./datasets`` as in detectron2."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_all_builtin(root: str = None, overwrite: bool = False) -> Dict[str, RegisteredSplit]:
    """Register every built-in benchmark under ``root`` (default :func:`builtin_datasets_root`)."""
    root = builtin_datasets_root() if root is None else root
    out = {}
    for name, (classes, unseen, variants, layout, prepare) in BUILTIN_SPLITS.items():
        folders = {
            v: SemSegFolder(
                image_root=os.path.join(root, img),
                gt_root=os.path.join(root, gt),
                layout_hint=layout,
                prepare_hint=prepare,
            )
            for v, (img, gt) in variants.items()
        }
        out[name] = register_zero_shot_split(
            name, classes, unseen, train=folders["train"], test=folders["test"], overwrite=overwrite
        )
    return out
