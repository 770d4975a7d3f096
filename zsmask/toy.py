"""Preparing the toy world's artefacts ahead of time: the generated dataset and the toy CLIP.

Both are built on first use anyway (loading ``toy_world_*`` generates the images; loading
``MODEL.CLIP.PRETRAINED: "zsmask-toy"`` pretrains the CLIP); :func:`prepare_toy_world` does it
up front with progress lines, and is what ``tools/prepare_toy_world.py`` and the quick start
call. Cached artefacts are verified (SHA-256) and reused; damaged ones are rebuilt.
"""
import time
from typing import Callable, Dict, Optional

from .data.toy_world import DEFAULT_TOY_WORLD, TOY_CLASS_NAMES, TOY_UNSEEN, ToyWorldParams, generate_toy_world
from .modeling.clip.toy_clip import (
    DEFAULT_TOY_CLIP_RECIPE,
    TOY_CLIP_NAME,
    ToyClipRecipe,
    region_zero_shot_report,
    toy_clip_report,
    toy_clip_weights,
)

__all__ = ["prepare_toy_world", "format_toy_clip_report", "format_region_report", "toy_clip_region_report"]

# Where real CLIP stands (docs/toy_world.md): the mean cosine of matched
# image-text pairs of CLIP ViT-B/16 is about 0.3 (the modality gap).
REAL_CLIP_MATCHED_COSINE = 0.3
_VIEW_TITLES = {
    "single_class_crop": "single-class crop (pretraining view)",
    "masked_image": "masked image (full canvas)",
    "masked_crop": "masked crop",
    "context_crop": "crop with context",
    "dense_pooled": "dense (MaskCLIP), mask-pooled",
}


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
    """Zero-shot crop accuracy over all classes, seen and unseen, vs chance; with a region report
    (``report["regions"]``), a second line with each region view's top-1 over all classes."""
    line = (f"toy CLIP zero-shot top-1 on {report['crops']} single-class crops: {report['top1']:.1f}% over all "
            f"{len(report['per_class'])} classes (seen {report['top1_seen']:.1f}%, unseen {report['top1_unseen']:.1f}%; "
            f"chance {report['chance']:.1f}%), pretrained in {report['seconds']:.0f}s")
    if "regions" in report:
        views = report["regions"]["views"]
        line += ("\ntoy CLIP zero-shot top-1 on ground-truth regions of fresh scenes: " + ", ".join(
            f"{_VIEW_TITLES.get(v, v)} {m['top1']:.1f}% (unseen {m['top1_unseen']:.1f}%)" for v, m in views.items())
            + " (table: tools/prepare_toy_world.py --report)")
    return line


def toy_clip_region_report(recipe: ToyClipRecipe = DEFAULT_TOY_CLIP_RECIPE, root: Optional[str] = None,
                           print_fn: Callable[[str], None] = print) -> Dict[str, object]:
    """The region report of the cached toy CLIP of ``recipe`` (pretrained first if absent),
    computed now on fresh scenes, with the crop report of its sidecar under ``"crops"``."""
    from .modeling.clip.loader import load_clip

    weights = toy_clip_weights(recipe, root, print_fn=print_fn)
    model = load_clip(TOY_CLIP_NAME, weights)
    report = region_zero_shot_report(model, recipe.eval_scenes, size=recipe.scene_size,
                                     min_region_area=recipe.min_region_area, context_expand=recipe.context_expand)
    report["crops"] = toy_clip_report(weights)
    return report


def format_region_report(report: Dict[str, object]) -> str:
    """The region table: one row per view, zero-shot top-1 (all 30 classes; seen and unseen
    regions; unseen regions among the unseen classes), same-minus-different cosine of region
    embeddings and the matched image-text cosine; the single-class crops of the crop report
    (``report["crops"]``, when present) as the first row."""
    from tabulate import tabulate

    views = dict(report["views"])
    if "crops" in report:
        views = {"single_class_crop": report["crops"], **views}
    rows = [[_VIEW_TITLES.get(view, view), m["top1"], m["top1_seen"], m["top1_unseen"],
             m.get("top1_unseen_among_unseen"), m.get("same_minus_different"), m.get("matched_cosine")]
            for view, m in views.items()]
    table = tabulate(rows, headers=["view", "top-1 /30", "seen", "unseen", "unseen /6", "same-diff cos",
                                    "matched cos"], floatfmt=("", ".1f", ".1f", ".1f", ".1f", ".3f", ".3f"),
                     tablefmt="github", missingval="-")
    return (f"toy CLIP zero-shot recognition of ground-truth regions of {report['scenes']} fresh scenes "
            f"({report['regions']} regions; chance {100 / len(TOY_CLASS_NAMES):.1f}% over 30 classes, "
            f"{100 / len(TOY_UNSEEN):.1f}% over the 6 unseen):\n{table}\n"
            f"matched cos: mean cosine of a region embedding and its class text (real CLIP ViT-B/16: about "
            f"{REAL_CLIP_MATCHED_COSINE})")
