"""Captions of toy-world content, for pretraining the toy CLIP and for describing scenes.

A caption names classes exactly as the vocabulary does (``"red striped object"``), so the
prompts a segmentation model builds from ``MetadataCatalog`` class names are in the language
the toy CLIP was pretrained on, as real CLIP has seen "sheep" in web captions.
"""
from typing import Sequence

import numpy as np

from .classes import TOY_CLASSES

__all__ = ["CAPTION_TEMPLATES", "crop_caption", "scene_caption"]

# Pretraining prompt variety: the "single" and ViLD-style forms the segmentation configs use,
# plus bare and descriptive forms.
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "{}",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "a photo of a {} in the scene",
    "a picture of the {}.",
    "a close-up photo of a {}.",
)


def crop_caption(rng: np.random.RandomState, class_id: int) -> str:
    """A random template filled with the class name of a single-class crop."""
    return CAPTION_TEMPLATES[rng.randint(len(CAPTION_TEMPLATES))].format(TOY_CLASSES[class_id].name)


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def scene_caption(class_ids: Sequence[int]) -> str:
    """Describe a scene from the classes present in its label map, in the given order:
    ``"a red striped object and an orange plain object on a green wavy background"``."""
    things = [TOY_CLASSES[i].name for i in class_ids if TOY_CLASSES[i].is_thing]
    stuff = [TOY_CLASSES[i].name for i in class_ids if not TOY_CLASSES[i].is_thing]
    parts = " and ".join(_with_article(n) for n in things)
    ground = " and ".join(_with_article(n) for n in stuff)
    if parts and ground:
        return f"{parts} on {ground}"
    return parts or ground
