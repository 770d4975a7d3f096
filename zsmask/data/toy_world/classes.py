"""The toy world's classes: colour x texture pattern, for objects ("things") and backgrounds ("stuff").

A class is *defined* by two attributes only, a colour and a pattern, because those are what a
tiny CLIP learns from scratch on 2 CPU cores within minutes (a 4-layer ViT learnt colour x
pattern to 97% in 50 steps of batch 128; rotated shapes were not learnt in 30 minutes of
probing, so shape, size, rotation and occlusion vary freely and never define a class).

* Things: 6 colours x 4 patterns (plain, striped, checkered, dotted) = 24 classes, dataset ids
  0..23, named ``"<colour> <pattern> object"``.
* Stuff: 3 colours x 2 patterns (wavy, speckled) = 6 classes, ids 24..29, named
  ``"<colour> <pattern> background"``.

The unseen classes (6 of 30: 5 things, 1 stuff) are each a *new combination of attributes
that appear in seen classes*: every unseen class's colour and pattern each occur in at least
one seen class of the same kind (checked at import by :func:`_check_compositional_split`).

A second split of the same world, ``TOY_UNSEEN_B`` (registered as ``toy_world_b``), holds out 6
other classes under the same rule, none of them unseen in the first split: a method's gain found
on ``toy_world`` is confirmed on a split it was not developed on.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = [
    "COLOURS",
    "THING_PATTERNS",
    "STUFF_PATTERNS",
    "STUFF_COLOURS",
    "ToyClass",
    "TOY_CLASSES",
    "TOY_CLASS_NAMES",
    "TOY_UNSEEN",
    "TOY_UNSEEN_B",
    "TOY_SPLITS",
    "class_id",
]

# Base RGB of each colour (jittered per instance when drawn).
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "orange": (240, 140, 30),
    "yellow": (232, 215, 50),
    "green": (45, 165, 70),
    "blue": (45, 85, 215),
    "purple": (140, 60, 190),
}
THING_PATTERNS = ("plain", "striped", "checkered", "dotted")
STUFF_COLOURS = ("green", "blue", "yellow")
STUFF_PATTERNS = ("wavy", "speckled")


@dataclass(frozen=True)
class ToyClass:
    """One class: its dataset id, name, colour, pattern and whether it is a thing."""

    id: int
    name: str
    colour: str
    pattern: str
    is_thing: bool


def _build_classes() -> Tuple[ToyClass, ...]:
    classes = []
    for colour in COLOURS:
        for pattern in THING_PATTERNS:
            classes.append(ToyClass(len(classes), f"{colour} {pattern} object", colour, pattern, True))
    for colour in STUFF_COLOURS:
        for pattern in STUFF_PATTERNS:
            classes.append(ToyClass(len(classes), f"{colour} {pattern} background", colour, pattern, False))
    return tuple(classes)


TOY_CLASSES: Tuple[ToyClass, ...] = _build_classes()
TOY_CLASS_NAMES: Tuple[str, ...] = tuple(c.name for c in TOY_CLASSES)
TOY_UNSEEN: Tuple[str, ...] = (
    "red checkered object",
    "orange dotted object",
    "green striped object",
    "blue plain object",
    "purple checkered object",
    "blue speckled background",
)
# The second split: one class per thing colour but blue, other patterns than the first split's,
# and the other stuff pattern and a different colour.
TOY_UNSEEN_B: Tuple[str, ...] = (
    "red plain object",
    "orange checkered object",
    "yellow striped object",
    "green dotted object",
    "purple striped object",
    "green wavy background",
)
# Registered name -> unseen classes.
TOY_SPLITS: Dict[str, Tuple[str, ...]] = {"toy_world": TOY_UNSEEN, "toy_world_b": TOY_UNSEEN_B}
_BY_NAME = {c.name: c for c in TOY_CLASSES}


def class_id(name: str) -> int:
    """Dataset id of a toy class name."""
    if name not in _BY_NAME:
        raise KeyError(f"{name!r} is not a toy-world class; valid names: {list(TOY_CLASS_NAMES)}")
    return _BY_NAME[name].id


def _check_compositional_split(unseen: Tuple[str, ...]) -> None:
    """Every unseen class recombines a colour and a pattern that seen classes of its kind show."""
    seen = [c for c in TOY_CLASSES if c.name not in unseen]
    for name in unseen:
        c = _BY_NAME[name]
        same_kind = [s for s in seen if s.is_thing == c.is_thing]
        if not any(s.colour == c.colour for s in same_kind) or not any(s.pattern == c.pattern for s in same_kind):
            raise AssertionError(f"unseen toy class {name!r} is not a recombination of seen attributes")
    if not any(not _BY_NAME[n].is_thing for n in unseen):
        raise AssertionError("the toy split needs at least one unseen stuff class")


for _unseen in TOY_SPLITS.values():
    _check_compositional_split(_unseen)
if set(TOY_UNSEEN) & set(TOY_UNSEEN_B):
    raise AssertionError("the two toy splits must hold out different classes")
