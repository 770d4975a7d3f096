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

and the open-vocabulary sets below (no seen / unseen split; every class of the set is in its
vocabulary; the test sets of the tables of SAN, FC-CLIP, CAT-Seg, MAFT and ov-seg):

====================  =========================================  =======  ======  =======
registered            dataset                                    classes  images  ignore
====================  =========================================  =======  ======  =======
``ade20k_150_test``   ADE20K SceneParsing validation             150      2,000   255
``ade20k_847_test``   full ADE20K (2021_17_01) validation        847      2,000   65535
``pcontext_459_test`` PASCAL Context val, all classes            459      5,104   65535
``pcontext_59_test``  PASCAL Context val, 59 classes             59       5,104   255
``voc_20_test``       PASCAL VOC 2012 val, background ignored    20       1,449   255
``voc_21_test``       PASCAL VOC 2012 val, "background" a class  21       1,449   255
``coco_stuff_171_*``  COCO-Stuff 164K, all 171 classes (train)   171      118,287 255
====================  =========================================  =======  ======  =======

Registration is lazy: folders are only looked at when a dataset is loaded, and a missing
folder raises :class:`~zsmask.data.catalog.DatasetNotFoundError` naming the layout, the
``DETECTRON2_DATASETS`` root and the prepare script.
"""
import os
from typing import Dict

from .builtin_meta import (
    ADE20K_150_CLASSES,
    ADE20K_847_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_STUFF_UNSEEN,
    PCONTEXT59_CLASSES,
    PCONTEXT59_UNSEEN,
    PCONTEXT459_CLASSES,
    VOC21_CLASSES,
    VOC_CLASSES,
    VOC_UNSEEN,
)
from .catalog import SemSegFolder, register_open_vocabulary_set, register_zero_shot_split

__all__ = ["register_all_builtin", "builtin_datasets_root", "BUILTIN_SPLITS", "OPEN_VOCABULARY_SETS"]

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

_ADE150_LAYOUT = """\
  $DETECTRON2_DATASETS/ADEChallengeData2016/images/validation/ADE_val_<n>.jpg
  $DETECTRON2_DATASETS/ADEChallengeData2016/annotations_detectron2/validation/ADE_val_<n>.png   (2,000)"""
_ADE847_LAYOUT = """\
  $DETECTRON2_DATASETS/ADE20K_2021_17_01/images_detectron2/validation/ADE_val_<n>.jpg
  $DETECTRON2_DATASETS/ADE20K_2021_17_01/annotations_detectron2/validation/ADE_val_<n>.png   (2,000, 16-bit)"""
_PCONTEXT459_LAYOUT = """\
  $DETECTRON2_DATASETS/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
  $DETECTRON2_DATASETS/VOCdevkit/VOC2010/annotations_ctx459/val/<id>.png   (5,104, 16-bit)"""
_VOC21_LAYOUT = """\
  $DETECTRON2_DATASETS/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  $DETECTRON2_DATASETS/VOCdevkit/VOC2012/annotations_voc21/val/<id>.png   (1,449)"""

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


# name -> (class names, {variant: (image dir, label dir)}, layout, prepare script, ignore label)
OPEN_VOCABULARY_SETS = {
    "ade20k_150": (
        ADE20K_150_CLASSES,
        {"test": ("ADEChallengeData2016/images/validation", "ADEChallengeData2016/annotations_detectron2/validation")},
        _ADE150_LAYOUT,
        "python datasets/prepare_ade20k_150.py",
        255,
    ),
    "ade20k_847": (
        ADE20K_847_CLASSES,
        {"test": ("ADE20K_2021_17_01/images_detectron2/validation",
                  "ADE20K_2021_17_01/annotations_detectron2/validation")},
        _ADE847_LAYOUT,
        "python datasets/prepare_ade20k_847.py",
        65535,
    ),
    "pcontext_459": (
        PCONTEXT459_CLASSES,
        {"test": ("VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_ctx459/val")},
        _PCONTEXT459_LAYOUT,
        "python datasets/prepare_pascal_context_459.py",
        65535,
    ),
    "pcontext_59": (PCONTEXT59_CLASSES, {"test": BUILTIN_SPLITS["pcontext_zs"][2]["test"]}, _PCONTEXT_LAYOUT,
                    BUILTIN_SPLITS["pcontext_zs"][4], 255),
    "voc_20": (VOC_CLASSES, {"test": BUILTIN_SPLITS["voc_zs"][2]["test"]}, _VOC_LAYOUT, BUILTIN_SPLITS["voc_zs"][4], 255),
    "voc_21": (
        VOC21_CLASSES,
        {"test": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_voc21/val")},
        _VOC21_LAYOUT,
        "python datasets/prepare_voc_sem_seg.py",
        255,
    ),
    # training on every COCO-Stuff class, as the open-vocabulary protocol does
    "coco_stuff_171": (COCO_STUFF_CLASSES, BUILTIN_SPLITS["coco_stuff_zs"][2], _COCO_LAYOUT,
                       BUILTIN_SPLITS["coco_stuff_zs"][4], 255),
}


def builtin_datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, or ``./datasets`` as in detectron2."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _folders(root: str, variants: Dict[str, tuple], layout: str, prepare: str) -> Dict[str, SemSegFolder]:
    return {
        v: SemSegFolder(image_root=os.path.join(root, img), gt_root=os.path.join(root, gt), layout_hint=layout,
                        prepare_hint=prepare)
        for v, (img, gt) in variants.items()
    }


def register_all_builtin(root: str = None, overwrite: bool = False) -> Dict[str, object]:
    """Register every built-in benchmark under ``root`` (default :func:`builtin_datasets_root`);
    returns ``{name: RegisteredSplit or RegisteredSet}``."""
    root = builtin_datasets_root() if root is None else root
    out = {}
    for name, (classes, unseen, variants, layout, prepare) in BUILTIN_SPLITS.items():
        folders = _folders(root, variants, layout, prepare)
        out[name] = register_zero_shot_split(
            name, classes, unseen, train=folders["train"], test=folders["test"], overwrite=overwrite
        )
    for name, (classes, variants, layout, prepare, ignore) in OPEN_VOCABULARY_SETS.items():
        folders = _folders(root, variants, layout, prepare)
        out[name] = register_open_vocabulary_set(name, classes, train=folders.get("train"), test=folders.get("test"),
                                                 ignore_label=ignore, overwrite=overwrite)
    return out
