"""Preparing the toy world's artefacts ahead of time: the generated dataset and the toy CLIP.

Both are built on first use anyway (loading ``toy_world_*`` generates the images; loading
``MODEL.CLIP.PRETRAINED: "zsmask-toy"`` pretrains the CLIP); :func:`prepare_toy_world` does it
up front with progress lines, and is what ``tools/prepare_toy_world.py`` and the quick start
call. Cached artefacts are verified (SHA-256) and reused; damaged ones are rebuilt.
"""
import time
from typing import Callable, Dict, Optional

from .data.toy_world import DEFAULT_TOY_WORLD, TOY_CLASS_NAMES, TOY_UNSEEN, ToyWorldParams, generate_toy_world
from .modeling.clip.toy_clip import DEFAULT_TOY_CLIP_RECIPE, ToyClipRecipe, toy_clip_report, toy_clip_weights

__all__ = ["prepare_toy_world", "format_toy_clip_report"]


def prepare_toy_world(
    world: ToyWorldParams = DEFAULT_TOY_WORLD,
    clip_recipe: ToyClipRecipe = DEFAULT_TOY_CLIP_RECIPE,
    root: Optional[str] = None,
    print_fn: Callable[[str], None] = print,
) -> Dict[str, object]:
    """Generate (or verify) the world and pretrain (or verify) the toy CLIP.

    Returns ``{"world": folder, "clip_weights": file, "clip_report": dict, "seconds": float}``.
    """
    start = time.monotonic()
    print_fn(f"toy world: {world.num_train} train / {world.num_val} val scenes of {world.size}x{world.size}, "
             f"{len(TOY_CLASS_NAMES)} classes ({len(TOY_CLASS_NAMES) - len(TOY_UNSEEN)} seen, {len(TOY_UNSEEN)} unseen)")
    folder = generate_toy_world(world, root, print_fn=print_fn)
    print_fn(f"toy world ready: {folder}")
    weights = toy_clip_weights(clip_recipe, root, print_fn=print_fn)
    report = toy_clip_report(weights)
    print_fn(f"toy CLIP checkpoint: {weights}")
    print_fn(format_toy_clip_report(report))
    return {"world": folder, "clip_weights": weights, "clip_report": report, "seconds": time.monotonic() - start}


def format_toy_clip_report(report: Dict[str, object]) -> str:
    """One line: zero-shot crop accuracy over all classes, seen and unseen, vs chance."""
    return (f"toy CLIP zero-shot top-1 on {report['crops']} single-class crops: {report['top1']:.1f}% over all "
            f"{len(report['per_class'])} classes (seen {report['top1_seen']:.1f}%, unseen {report['top1_unseen']:.1f}%; "
            f"chance {report['chance']:.1f}%), pretrained in {report['seconds']:.0f}s")
