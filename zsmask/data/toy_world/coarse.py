"""A second toy dataset whose vocabulary overlaps the toy world's only partly (cross-dataset).

The toy world's test scenes, labelled with another vocabulary: objects by their colour alone
(``"red object"``, ... : 6 classes, names the toy world does not have, each the union of the 4
patterns of that colour) and backgrounds as in the toy world (6 classes, the same names). A
model trained on ``toy_world_train`` meets 6 known names and 6 new ones; registered as the
open-vocabulary test set ``<name>_coarse_test`` (``toy_world_coarse_test``,
``toy_world_smoke_coarse_test``). Its label PNGs are written once into the cache beside the
world they relabel (``toy_world-<hash>-coarse``), atomically.
"""
import os
import shutil
from typing import List, Optional

import numpy as np
from PIL import Image

from ...utils import atomic_write_dir, cache_lock
from ..catalog import RegisteredSet, SemSegFolder, load_sem_seg_folder, register_open_vocabulary_set
from .classes import COLOURS, TOY_CLASSES
from .dataset import DEFAULT_TOY_WORLD, ToyWorldParams, generate_toy_world

__all__ = ["TOY_COARSE_CLASS_NAMES", "coarse_label_lut", "coarse_toy_records", "register_coarse_toy_world"]

TOY_COARSE_CLASS_NAMES = tuple(f"{colour} object" for colour in COLOURS) + tuple(
    c.name for c in TOY_CLASSES if not c.is_thing)


def coarse_label_lut() -> np.ndarray:
    """uint8 ``(256,)``: toy-world id -> id in :data:`TOY_COARSE_CLASS_NAMES`; 255 stays 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    for c in TOY_CLASSES:
        lut[c.id] = TOY_COARSE_CLASS_NAMES.index(f"{c.colour} object" if c.is_thing else c.name)
    return lut


def coarse_toy_records(params: ToyWorldParams = DEFAULT_TOY_WORLD, root: Optional[str] = None) -> List[dict]:
    """Dataset dicts of the relabelled test scenes (the world and the labels made if needed)."""
    world = generate_toy_world(params, root)
    out = world + "-coarse"
    source = os.path.join(world, "val", "labels")
    with cache_lock(out):
        if not (os.path.isdir(out) and sorted(os.listdir(out)) == sorted(os.listdir(source))):
            shutil.rmtree(out, ignore_errors=True)  # incomplete or of another world version
            lut = coarse_label_lut()
            with atomic_write_dir(out) as tmp:
                for name in sorted(os.listdir(source)):
                    with Image.open(os.path.join(source, name)) as img:
                        Image.fromarray(lut[np.asarray(img)], mode="L").save(os.path.join(tmp, name))
    return load_sem_seg_folder(SemSegFolder(os.path.join(world, "val", "images"), out), "coarse toy world")


def register_coarse_toy_world(name: str = "toy_world", params: ToyWorldParams = DEFAULT_TOY_WORLD,
                              root: Optional[str] = None, overwrite: bool = True) -> RegisteredSet:
    """Register ``<name>_coarse_test`` (nothing is generated until it is loaded)."""
    return register_open_vocabulary_set(f"{name}_coarse", TOY_COARSE_CLASS_NAMES,
                                        test=lambda: coarse_toy_records(params, root), overwrite=overwrite)
