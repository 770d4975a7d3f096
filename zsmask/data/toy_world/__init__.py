"""The toy world: a small generated zero-shot world that needs no download.

Objects and backgrounds whose class is colour x texture pattern (:mod:`.classes`), drawn
procedurally with exact label maps (:mod:`.draw`), described by captions (:mod:`.captions`),
generated into a content-hashed cache folder and registered as the zero-shot split
``toy_world`` (:mod:`.dataset`), and the same test scenes under a partly different vocabulary
as the cross-dataset set ``toy_world_coarse_test`` (:mod:`.coarse`). The toy CLIP that knows these classes by name is pretrained
on the same drawings (:mod:`zsmask.modeling.clip.toy_clip`).
"""
from .captions import CAPTION_TEMPLATES, crop_caption, scene_caption
from .classes import COLOURS, TOY_CLASS_NAMES, TOY_CLASSES, TOY_SPLITS, TOY_UNSEEN, TOY_UNSEEN_B, ToyClass, class_id
from .dataset import (
    DEFAULT_TOY_WORLD,
    SMOKE_TOY_WORLD,
    ToyWorldParams,
    generate_toy_world,
    register_toy_world,
    toy_world_records,
    toy_world_root,
    verify_toy_world,
)
from .coarse import TOY_COARSE_CLASS_NAMES, coarse_label_lut, coarse_toy_records, register_coarse_toy_world
from .draw import blob_mask, draw_crop, draw_scene, draw_texture
