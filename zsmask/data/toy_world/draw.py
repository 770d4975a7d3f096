"""Procedural drawing of the toy world: textured backgrounds, textured blob objects, exact labels.

Everything is a pure function of a ``numpy.random.RandomState``, so a seed fixes every image.
Images are float RGB in [0, 255] until the final ``uint8`` conversion; label maps hold dataset
ids (see :mod:`.classes`) and are exact (each pixel's label is the class whose texture painted it).
"""
from typing import List, Tuple

import numpy as np

from .classes import COLOURS, TOY_CLASSES, ToyClass

__all__ = ["draw_texture", "blob_mask", "draw_scene", "draw_crop"]

_NOISE_STD = 6.0  # per-pixel sensor noise, 0-255 scale


def _colour(rng: np.random.RandomState, cls: ToyClass) -> np.ndarray:
    """The class colour with a small per-instance brightness and channel jitter, ``(3,)``."""
    base = np.asarray(COLOURS[cls.colour], dtype=np.float64)
    if not cls.is_thing:  # backgrounds are a little paler than objects of the same colour
        base = 0.8 * base + 0.2 * 150.0
    return np.clip(base * rng.uniform(0.88, 1.12) + rng.uniform(-12, 12, size=3), 0, 255)


def _rotated_grid(rng: np.random.RandomState, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)``, each ``(h, w)``, in a randomly rotated and shifted frame."""
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    yy += rng.uniform(0, 100)
    xx += rng.uniform(0, 100)
    return xx * np.cos(theta) + yy * np.sin(theta), -xx * np.sin(theta) + yy * np.cos(theta)


def draw_texture(rng: np.random.RandomState, cls: ToyClass, h: int, w: int) -> np.ndarray:
    """A full ``(h, w, 3)`` float canvas of ``cls``'s colour and pattern.

    Thing patterns alternate the colour with a dark shade of it (0.35x): ``plain`` (uniform),
    ``striped`` (period 7-11 px), ``checkered`` (cells 4-6 px), ``dotted`` (dots of radius ~2.5 px
    on a 7-10 px grid). Stuff patterns modulate the (paler) colour: ``wavy`` (smooth
    sinusoidal bands, period 14-22 px) and ``speckled`` (blocky multiplicative grain).
    """
    colour = _colour(rng, cls)
    u, v = _rotated_grid(rng, h, w)
    if cls.pattern == "plain":
        weight = np.ones((h, w))
    elif cls.pattern == "striped":
        period = rng.uniform(7, 11)
        weight = (np.mod(u, period) < period / 2).astype(np.float64)
    elif cls.pattern == "checkered":
        cell = rng.uniform(4, 6)
        weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2 == 0).astype(np.float64)
    elif cls.pattern == "dotted":
        spacing = rng.uniform(7, 10)
        du = np.mod(u, spacing) - spacing / 2
        dv = np.mod(v, spacing) - spacing / 2
        weight = (du ** 2 + dv ** 2 > (0.3 * spacing) ** 2).astype(np.float64)
    elif cls.pattern == "wavy":
        period, bend = rng.uniform(14, 22), rng.uniform(25, 45)
        weight = 0.75 + 0.25 * np.sin(2 * np.pi * (u / period + 0.35 * np.sin(2 * np.pi * v / bend)))
        return colour * weight[..., None]
    elif cls.pattern == "speckled":
        grain = rng.uniform(0.55, 1.15, size=((h + 1) // 2, (w + 1) // 2))
        weight = np.kron(grain, np.ones((2, 2)))[:h, :w]
        return np.clip(colour * weight[..., None], 0, 255)
    else:
        raise ValueError(f"unknown toy pattern {cls.pattern!r}")
    dark = 0.35 * colour
    return weight[..., None] * colour + (1 - weight[..., None]) * dark


def blob_mask(rng: np.random.RandomState, h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A random blob ``(h, w)`` bool: an ellipse (axis ratio 0.6-1, any rotation) whose
    boundary is perturbed by low-order radial harmonics, so no two objects share a shape."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    theta = rng.uniform(0, np.pi)
    a, b = radius, radius * rng.uniform(0.6, 1.0)
    p = dx * np.cos(theta) + dy * np.sin(theta)
    q = -dx * np.sin(theta) + dy * np.cos(theta)
    r = np.sqrt((p / a) ** 2 + (q / b) ** 2)
    phi = np.arctan2(q, p)
    wobble = 1.0
    for k in (2, 3, 5):
        wobble = wobble + rng.uniform(0, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return r < wobble


def _background(rng, size: int, stuff: List[ToyClass]) -> Tuple[np.ndarray, np.ndarray]:
    """One stuff class, or two separated by a smooth random curve: ``(image, label)``."""
    first = stuff[rng.randint(len(stuff))]
    image = draw_texture(rng, first, size, size)
    label = np.full((size, size), first.id, dtype=np.uint8)
    if rng.rand() < 0.5:
        others = [s for s in stuff if s.id != first.id]
        second = others[rng.randint(len(others))]
        yy, xx = np.mgrid[:size, :size].astype(np.float64)
        horizon = size * rng.uniform(0.3, 0.7) + size * 0.08 * np.sin(
            2 * np.pi * xx / (size * rng.uniform(0.6, 1.5)) + rng.uniform(0, 2 * np.pi)
        )
        if rng.rand() < 0.5:  # vertical split instead of horizontal
            horizon, yy = horizon.T, yy.T
        region = yy > horizon
        image[region] = draw_texture(rng, second, size, size)[region]
        label[region] = second.id
    return image, label


def draw_scene(rng: np.random.RandomState, size: int = 128, max_objects: int = 4):
    """One scene: a stuff background and 1..``max_objects`` blob objects (later ones occlude).

    Returns ``(image, label, objects)``: ``(size, size, 3)`` uint8 RGB, ``(size, size)`` uint8
    dataset ids, and the list of ``(class_id, visible_pixels)`` of the objects drawn.
    """
    things = [c for c in TOY_CLASSES if c.is_thing]
    stuff = [c for c in TOY_CLASSES if not c.is_thing]
    image, label = _background(rng, size, stuff)
    drawn = []
    for _ in range(rng.randint(1, max_objects + 1)):
        cls = things[rng.randint(len(things))]
        radius = size * rng.uniform(0.09, 0.22)
        cy, cx = rng.uniform(0.15, 0.85, size=2) * size
        mask = blob_mask(rng, size, size, cy, cx, radius)
        image[mask] = draw_texture(rng, cls, size, size)[mask]
        label[mask] = cls.id
        drawn.append(cls.id)
    image = np.clip(image + rng.normal(0, _NOISE_STD, size=image.shape), 0, 255).astype(np.uint8)
    objects = [(c, int((label == c).sum())) for c in dict.fromkeys(drawn)]
    return image, label, objects


def draw_crop(rng: np.random.RandomState, cls: ToyClass, size: int = 64) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 crop showing one class, as a detector crop would.

    A thing: one blob of ``cls`` (radius 30-45% of the crop, near the centre) on a random
    background, partly occluded by a small other object with probability 0.3. A stuff class:
    the background texture alone, sometimes with a small object cut off at the border.
    """
    things = [c for c in TOY_CLASSES if c.is_thing]
    stuff = [c for c in TOY_CLASSES if not c.is_thing]
    if cls.is_thing:
        image, _ = _background(rng, size, stuff)
        cy, cx = size / 2 + rng.uniform(-0.1, 0.1, size=2) * size
        mask = blob_mask(rng, size, size, cy, cx, size * rng.uniform(0.3, 0.45))
        image[mask] = draw_texture(rng, cls, size, size)[mask]
    else:
        image = draw_texture(rng, cls, size, size)
    if rng.rand() < 0.3:
        other = things[rng.randint(len(things))]
        corner = rng.choice([0.0, 1.0], size=2) * size
        mask = blob_mask(rng, size, size, corner[0], corner[1], size * rng.uniform(0.15, 0.3))
        image[mask] = draw_texture(rng, other, size, size)[mask]
    return np.clip(image + rng.normal(0, _NOISE_STD, size=image.shape), 0, 255).astype(np.uint8)
