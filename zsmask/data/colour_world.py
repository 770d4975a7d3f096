"""A tiny generated zero-shot split whose classes are colours ("red", "cyan", ...).

It exists so the whole data path (files on disk -> ``register_zero_shot_split`` -> mapper ->
loader -> evaluator) runs end to end on any machine in seconds, with no download. Images are
noisy JPEGs of coloured ellipses on a coloured background; label PNGs are exact, with a
1-pixel ignore border around each object (as VOC). Generation is seeded and cached under
:func:`zsmask.utils.cache_dir` with a content hash of its parameters.
"""
import hashlib
import json
import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from ..utils import atomic_write_dir, cache_dir
from .catalog import RegisteredSplit, SemSegFolder, register_zero_shot_split

__all__ = ["COLOUR_CLASSES", "COLOUR_UNSEEN", "COLOUR_RGB", "generate_colour_world", "register_colour_world"]

COLOUR_RGB: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 220, 50),
    "magenta": (210, 50, 200),
    "cyan": (50, 215, 225),
    "orange": (240, 140, 30),
    "gray": (128, 128, 128),
}
COLOUR_CLASSES = tuple(COLOUR_RGB)
COLOUR_UNSEEN = ("cyan", "orange")
_GENERATOR_VERSION = 1


def _draw(rng: np.random.RandomState, size: int, noise: float):
    label = np.full((size, size), rng.randint(len(COLOUR_CLASSES)), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.randint(1, 4)):
        cls = rng.randint(len(COLOUR_CLASSES))
        cy, cx = rng.uniform(0.2, 0.8, size=2) * size
        ry, rx = rng.uniform(0.1, 0.3, size=2) * size
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        r = u ** 2 + v ** 2
        border = (r >= 1.0) & (r < 1.0 + 4.0 / max(rx, ry))
        label[r < 1.0] = cls
        label[border] = 255
    colours = np.array([COLOUR_RGB[c] for c in COLOUR_CLASSES] + [(0, 0, 0)], dtype=np.float64)
    ids = np.where(label == 255, len(COLOUR_CLASSES), label)
    image = colours[ids] + rng.normal(0, noise, size=(size, size, 3))
    # border pixels take the colour of a neighbour so the image shows no black outline
    image[label == 255] = colours[np.roll(ids, 3, axis=1)[label == 255]]
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate_colour_world(num_train: int = 24, num_test: int = 16, size: int = 96, noise: float = 30.0,
                          seed: int = 0, root: str = None) -> str:
    """Write ``{train,test}/{images,labels}`` under a content-hashed folder; return its path."""
    params = dict(v=_GENERATOR_VERSION, n=(num_train, num_test), size=size, noise=noise, seed=seed)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    out = os.path.join(root or cache_dir(), f"colour_world-{key}")
    if os.path.isdir(out):
        return out
    with atomic_write_dir(out) as tmp:
        rng = np.random.RandomState(seed)
        for split, n in (("train", num_train), ("test", num_test)):
            os.makedirs(os.path.join(tmp, split, "images"))
            os.makedirs(os.path.join(tmp, split, "labels"))
            for i in range(n):
                image, label = _draw(rng, size, noise)
                Image.fromarray(image).save(os.path.join(tmp, split, "images", f"{i:05d}.jpg"), quality=90)
                Image.fromarray(label, mode="L").save(os.path.join(tmp, split, "labels", f"{i:05d}.png"))
        with open(os.path.join(tmp, "params.json"), "w") as f:
            json.dump(params, f)
    return out


def register_colour_world(name: str = "colour_world", **kwargs) -> RegisteredSplit:
    """Generate (or reuse) the colour world and register its train / test / ZS3 variants."""
    root = generate_colour_world(**kwargs)

    def folder(split: str) -> SemSegFolder:
        return SemSegFolder(os.path.join(root, split, "images"), os.path.join(root, split, "labels"))

    return register_zero_shot_split(
        name, COLOUR_CLASSES, COLOUR_UNSEEN, train=folder("train"), test=folder("test"), overwrite=True
    )
