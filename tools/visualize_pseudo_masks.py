#!/usr/bin/env python
"""Draw Split Matching's pseudo masks over images, each named by its nearest class, to check and
tune ``MODEL.SPLIT_MATCHING.PSEUDO_MASKS``.

    python tools/visualize_pseudo_masks.py --dataset toy_world_train --limit 4 --output out/ [KEY VALUE ...]
    python tools/visualize_pseudo_masks.py --input photos/ "more/*.jpg" --output out/ --vocabulary "cat,sofa,grass"

The pseudo masks Y_u are K-means clusters of frozen dense CLIP features over the *unannotated*
pixels of a training image, with region embeddings C_u (Split Matching Sec. 3.2). Each mask is
named by the class of ``--vocabulary`` (default: the vocabulary of ``DATASETS.TEST[0]``, which
holds the unseen classes) whose CLIP text embedding is nearest to C_u by cosine: on unseen
objects the nearest names should be unseen classes, which is what Split Matching relies on.

Inputs: ``--dataset NAME`` takes images of a registered dataset (e.g. ``toy_world_train``); the
unannotated pixels are the ignore pixels of its labels after the split's label map (unseen
classes included), exactly what training sees. Each mask is also scored against the ground
truth: the class it overlaps most in the label read with the test variant's vocabulary (all
classes) and that IoU; a last line gives the mean best IoU. ``--input`` takes files, globs or
folders of your own images, where all pixels count as unannotated.

Only CLIP (``MODEL.CLIP``) and the pseudo labeler (``MODEL.ZSMASK.PSEUDO_LABELER``, so a Split
Matching config) are built; no trained weights are needed. The labeler's on-disk cache is off,
so this tool never writes cache entries. Images are resized by the config's test-time
shortest-edge resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) and zero-padded to
``MODEL.MASK_FORMER.SIZE_DIVISIBILITY`` as the model pads its batches: this is deterministic, it
is the training view of the toy configs (128 px, no crop; the random flip only mirrors) and
within the training scale range of the benchmark configs, whose random crops it skips.
``--region-embedding`` picks how C_u is made (``cls``, ``cls_attention``, ``region_tokens``,
``dense``, ``dense_mlp``; default the config's ``MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING``).
With ``REGION_EMBEDDING dense_mlp`` the untrained MLP is bypassed (names come from the dense
embeddings it would receive). Trailing ``KEY VALUE`` pairs override the config. Output: one PNG
per image, ``[image | unannotated pixels (dataset mode) | pseudo masks]``, nearest class name
and cosine written on each mask, unseen classes marked "[unseen]". Unreadable images are
reported and skipped, and the exit status is then 1.
"""
import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer
from PIL import Image

import zsmask.data  # noqa: F401  (registers the built-in splits and toy_world_*)
import zsmask.modeling  # noqa: F401  (registers CLIP architectures and the pseudo labelers)
from zsmask.data import (ImageReadError, LabelFileError, find_images, label_map_for_dataset, read_image, read_sem_seg,
                         unique_output_paths)
from zsmask.data.catalog import VARIANT_SUFFIX
from zsmask.data.image_io import check_same_size
from zsmask.engine import build_config, default_device
from zsmask.engine.cli import vocabulary_arg
from zsmask.modeling.clip import CLIPTextImageEncoder
from zsmask.modeling.pseudo_masks import PseudoMasks, build_pseudo_labeler
from zsmask.visualization import UNSEEN_MARK, titled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "toy", "split_matching.yaml")
PANEL_SIDE = 384  # small images are enlarged so that their long side is about this many pixels


@dataclass
class View:
    """One image as the pseudo labeler sees it: ``image`` ``(H, W, 3)`` uint8 RGB (resized, not
    padded), ``unannotated`` ``(H, W)`` bool, and in dataset mode ``ground_truth`` ``(H, W)``
    int64 indices into :class:`GroundTruth` ``class_names`` (``ignore_label`` where unlabelled)."""

    path: str
    image: np.ndarray
    unannotated: np.ndarray
    ground_truth: Optional[np.ndarray] = None


@dataclass
class GroundTruth:
    """How a dataset's label files are read for scoring: ``label_map`` (dataset id -> index into
    ``class_names``; None: raw ids), the names, which are unseen, and the ignore label."""

    label_map: Optional[np.ndarray]
    class_names: List[str]
    unseen: List[bool]
    ignore_label: int


# ------------------------------------------------------------------------------ model parts
def tool_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """:func:`build_config` + ``opts``, the device defaulting to CUDA when available (unless
    ``MODEL.DEVICE`` is in ``opts``), frozen."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file} (expected a Split Matching config such as "
                                "configs/toy/split_matching.yaml)")
    cfg = build_config(config_file, opts)
    if "MODEL.DEVICE" not in list(opts)[::2]:
        cfg.MODEL.DEVICE = default_device()
    if torch.device(cfg.MODEL.DEVICE).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE {cfg.MODEL.DEVICE!r} was asked for but this torch sees no CUDA device; "
                           "pass MODEL.DEVICE cpu")
    cfg.freeze()
    return cfg


def build_parts(cfg: CfgNode) -> Tuple[CLIPTextImageEncoder, torch.nn.Module]:
    """The frozen CLIP and the pseudo labeler of ``cfg`` (its on-disk cache off), both in eval
    mode on ``MODEL.DEVICE``. Raises ValueError when the config has no pseudo labeler."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CACHE_DIR = ""  # never write cache entries from here
    if not cfg.MODEL.ZSMASK.PSEUDO_LABELER:
        raise ValueError("this config has no pseudo labeler (MODEL.ZSMASK.PSEUDO_LABELER is empty): use a Split "
                         "Matching config such as configs/toy/split_matching.yaml, or add "
                         "MODEL.ZSMASK.PSEUDO_LABELER clip_kmeans")
    device = torch.device(cfg.MODEL.DEVICE)
    clip = CLIPTextImageEncoder(cfg).to(device).eval()
    labeler = build_pseudo_labeler(cfg, clip.embed_dim).to(device).eval()
    return clip, labeler


def view_transform(cfg: CfgNode, image: np.ndarray) -> T.Transform:
    """The deterministic resize of an ``(H, W, 3)`` image (see the module docstring)."""
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        return T.NoOpTransform()
    return T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice").get_transform(image)


def padded_batch(view: View, size_divisibility: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3, H', W')`` float 0-255 image zero-padded to ``size_divisibility`` and ``(1, H', W')``
    bool unannotated pixels (padding False), as the model builds them in training."""
    image = torch.as_tensor(np.ascontiguousarray(view.image.transpose(2, 0, 1))).float()
    unannotated = torch.as_tensor(view.unannotated).bool()
    if size_divisibility > 1:
        pad_h, pad_w = (-image.shape[1]) % size_divisibility, (-image.shape[2]) % size_divisibility
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0)
        unannotated = F.pad(unannotated, (0, pad_w, 0, pad_h), value=False)
    return image[None].to(device), unannotated[None].to(device)


@torch.no_grad()
def compute_pseudo_masks(clip, labeler, view: View, size_divisibility: int) -> PseudoMasks:
    """The labeler's pseudo masks of one view, cropped to it: ``masks`` ``(U, H, W)`` bool on the
    CPU, ``embeddings`` ``(U, D)`` L2-normalised C_u, before the labeler's MLP if it has one."""
    images, unannotated = padded_batch(view, size_divisibility, clip.device)
    generator = getattr(labeler, "generator", None)
    if getattr(labeler, "embedding_mlp", None) is not None and generator is not None:
        pseudo = generator(clip, images, unannotated)[0]
    else:
        pseudo = labeler(clip, images, unannotated)[0]
    height, width = view.unannotated.shape
    return PseudoMasks(pseudo.masks[:, :height, :width].cpu(), pseudo.embeddings.float().cpu())


@torch.no_grad()
def nearest_classes(clip, embeddings: torch.Tensor, class_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Index into ``class_names`` and cosine of the nearest text embedding for each ``(U, D)``
    region embedding: two ``(U,)`` arrays."""
    if embeddings.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    text = clip.encode_vocabulary(list(class_names)).float().cpu()  # (C, D), L2-normalised
    cosine = F.normalize(embeddings.float(), dim=-1) @ text.T
    best = cosine.max(dim=1)
    return best.indices.numpy(), best.values.numpy()


def best_overlaps(masks: np.ndarray, ground_truth: np.ndarray, ignore_label: int) -> Tuple[np.ndarray, np.ndarray]:
    """For each ``(U, H, W)`` mask, the ground-truth class (``(H, W)`` indices) with the highest
    IoU and that IoU, over the labelled pixels (``ignore_label`` pixels count for neither): two
    ``(U,)`` arrays; class -1 and IoU 0 for a mask that touches no labelled pixel."""
    masks = np.asarray(masks, dtype=bool)
    valid = ground_truth != ignore_label
    classes = np.unique(ground_truth[valid])
    if masks.shape[0] == 0 or classes.size == 0:
        return np.full(masks.shape[0], -1, dtype=np.int64), np.zeros(masks.shape[0])
    regions = ground_truth[None] == classes[:, None, None]  # (K, H, W)
    inside = (masks & valid[None]).reshape(masks.shape[0], -1).astype(np.float64)
    flat = regions.reshape(regions.shape[0], -1).astype(np.float64)
    intersection = inside @ flat.T  # (U, K)
    union = inside.sum(1, keepdims=True) + flat.sum(1)[None] - intersection
    iou = intersection / np.maximum(union, 1)
    best = iou.argmax(axis=1)
    ious = iou[np.arange(masks.shape[0]), best]
    return np.where(ious > 0, classes[best], -1), ious


# ------------------------------------------------------------------------------ inputs
def ground_truth_source(dataset_name: str) -> GroundTruth:
    """Labels of ``dataset_name`` read with the vocabulary of its split's test variant (all
    classes, unseen ones marked) when registered, else raw ids named from its own metadata."""
    meta = MetadataCatalog.get(dataset_name)
    split = meta.get("zero_shot_split")
    if split is None and dataset_name.endswith(VARIANT_SUFFIX["train"]):
        split = dataset_name[: -len(VARIANT_SUFFIX["train"])]
    test = split + VARIANT_SUFFIX["test"] if split else None
    ignore = meta.get("ignore_label", 255)
    if test is not None and test in DatasetCatalog.list():
        test_meta = MetadataCatalog.get(test)
        unseen = set(test_meta.get("unseen_classes", []))
        names = list(test_meta.stuff_classes)
        return GroundTruth(label_map_for_dataset(test), names, [i in unseen for i in range(len(names))],
                           test_meta.get("ignore_label", ignore))
    ids = meta.get("class_dataset_ids") or list(range(len(meta.stuff_classes)))
    count = max(meta.get("num_dataset_classes", len(ids)), max(ids, default=-1) + 1)
    names = [f"class id {i}" for i in range(count)]
    for index, dataset_id in enumerate(ids):
        names[dataset_id] = meta.stuff_classes[index]
    unseen_ids = {ids[i] for i in meta.get("unseen_classes", [])}
    return GroundTruth(None, names, [i in unseen_ids for i in range(count)], ignore)


def load_dataset_view(cfg: CfgNode, record: dict, dataset_name: str, truth: GroundTruth) -> View:
    """A dataset record as training sees it: image and label resized together; the unannotated
    pixels are the ignore pixels of the label under ``dataset_name``'s label map; the ground
    truth is the same label file read as ``truth`` says. Raises ImageReadError / LabelFileError."""
    meta = MetadataCatalog.get(dataset_name)
    ignore = meta.get("ignore_label", 255)
    path = record["file_name"]
    image = read_image(path, "RGB")
    if "sem_seg_file_name" not in record:
        raise LabelFileError(f"record {path} of {dataset_name} has no 'sem_seg_file_name'")
    label = read_sem_seg(record["sem_seg_file_name"], label_map_for_dataset(dataset_name), ignore)
    check_same_size(image.shape[:2], label.shape, path, record["sem_seg_file_name"])
    truth_label = read_sem_seg(record["sem_seg_file_name"], truth.label_map, truth.ignore_label)
    transform = view_transform(cfg, image)

    def resize_label(values: np.ndarray) -> np.ndarray:
        # as the mapper: detectron2 resizes uint8 labels with PIL, wider ones with torch (nearest)
        return transform.apply_segmentation(values.astype(np.uint8 if values.max(initial=0) <= 255 else np.float64)
                                            ).astype(np.int64)

    return View(path, transform.apply_image(image), resize_label(label) == ignore, resize_label(truth_label))


def load_image_view(cfg: CfgNode, path: str) -> View:
    """One of the user's images, resized; every pixel is unannotated. Raises ImageReadError."""
    image = read_image(path, "RGB")
    image = view_transform(cfg, image).apply_image(image)
    return View(path, image, np.ones(image.shape[:2], dtype=bool))


# ------------------------------------------------------------------------------ drawing
def mask_labels(names: Sequence[str], unseen: Sequence[bool], nearest: np.ndarray, cosine: np.ndarray) -> List[str]:
    """``"<name>[ [unseen]] <cosine>"`` for each pseudo mask."""
    return [f"{names[i]}{UNSEEN_MARK if unseen[i] else ''} {c:.2f}" for i, c in zip(nearest, cosine)]


def draw_panel(view: View, masks: np.ndarray, labels: Sequence[str], unseen: Optional[Sequence[bool]] = None,
               scale: Optional[float] = None, show_unannotated: bool = True) -> np.ndarray:
    """``[image | unannotated pixels | pseudo masks]`` (uint8 RGB, each under a title strip, 4 px
    apart): ``(24 + round(H * scale), k * round(W * scale) + 4 * (k - 1), 3)`` with k = 3, or 2
    without the unannotated panel. Annotated pixels are greyed out in the second panel; each
    mask gets its own colour and ``"<j>: <labels[j]>"`` on its largest part (j as in the printed
    lines), masks whose ``unseen`` entry is True a white outline. ``scale`` defaults to enlarging small
    images to a long side of 384 px."""
    height, width = view.image.shape[:2]
    scale = scale or max(1.0, PANEL_SIDE / max(height, width))
    size = (int(round(width * scale)), int(round(height * scale)))
    panels = [cv2.resize(view.image, size, interpolation=cv2.INTER_NEAREST)]
    titles = [os.path.basename(view.path)]
    if show_unannotated:
        grey = (view.image.astype(np.float32) * 0.25 + 150).astype(np.uint8)
        shown = np.where(view.unannotated[..., None], view.image, grey)
        panels.append(cv2.resize(shown, size, interpolation=cv2.INTER_NEAREST))
        titles.append(f"unannotated pixels ({view.unannotated.mean():.0%})")
    visualizer = Visualizer(view.image, scale=scale)
    colours = colormap(rgb=True, maximum=1)
    for j, (mask, label) in enumerate(zip(masks, labels)):
        edge = (1.0, 1.0, 1.0) if unseen is not None and unseen[j] else None
        visualizer.draw_binary_mask(np.asarray(mask, dtype=np.uint8), color=colours[j % len(colours)],
                                    edge_color=edge, text=f"{j + 1}: {label}", alpha=0.55)
    panels.append(cv2.resize(visualizer.get_output().get_image(), size))
    titles.append(f"{len(labels)} pseudo masks: nearest class, cosine")
    framed = [titled(p, t) for p, t in zip(panels, titles)]
    gap = np.full((framed[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = [framed[0]]
    for panel in framed[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


# ------------------------------------------------------------------------------ main
def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _vocabulary(cfg: CfgNode, given: Optional[Sequence[str]]) -> Tuple[List[str], List[bool]]:
    """``--vocabulary`` names (or ``DATASETS.TEST[0]``'s) and which are unseen in the split of
    ``DATASETS.TEST[0]`` (matched by name). Raises ValueError when neither is available."""
    test = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    unseen_names = set()
    if test is not None and test in DatasetCatalog.list():
        meta = MetadataCatalog.get(test)
        unseen_names = {meta.stuff_classes[i] for i in meta.get("unseen_classes", [])}
    if given is not None:
        names = list(given)
    elif test is None or test not in DatasetCatalog.list():
        what = "DATASETS.TEST is empty" if test is None else f"DATASETS.TEST[0] {test!r} is not registered"
        raise ValueError(f"no vocabulary to name the masks: {what}; pass --vocabulary 'name1,name2,...' or "
                         "DATASETS.TEST \"('<registered>_test',)\"")
    else:
        names = list(MetadataCatalog.get(test).stuff_classes)
    return names, [n in unseen_names for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="a Split Matching config (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a registered dataset, e.g. toy_world_train: pseudo masks cover its "
                                          "label's ignore pixels, as in training")
    source.add_argument("--input", nargs="+", help="image files, globs or folders; all their pixels are unannotated "
                                                    "(it takes the words up to the next option: put KEY VALUE last)")
    parser.add_argument("--output", required=True, help="output folder for the PNG panels")
    parser.add_argument("--limit", type=int, default=8, help="--dataset: number of images (0: all; default 8)")
    parser.add_argument("--vocabulary", type=vocabulary_arg,
                        help="class names to name the masks by, comma-separated or a text file with one per line "
                             "(default: the classes of DATASETS.TEST[0], unseen ones included)")
    parser.add_argument("--scale", type=float, help="enlargement of the panels (default: small images to 384 px)")
    parser.add_argument("--region-embedding", choices=("cls", "cls_attention", "region_tokens", "dense", "dense_mlp"),
                        help="how C_u is made (default: the config's MODEL.SPLIT_MATCHING.PSEUDO_MASKS."
                             "REGION_EMBEDDING); cls_attention and region_tokens: all masks of an image from one "
                             "CLIP forward")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)  # open_clip's INFO chatter on the root logger

    if args.dataset is not None and args.dataset not in DatasetCatalog.list():
        zs = sorted(n for n in DatasetCatalog.list() if MetadataCatalog.get(n).get("zero_shot_split"))
        _error(f"unknown dataset {args.dataset!r}; zero-shot datasets: {', '.join(zs)}")
        return 2
    if args.region_embedding:
        args.opts = ["MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING", args.region_embedding] + list(args.opts)
    try:
        cfg = tool_config(args.config_file, args.opts)
        names, unseen = _vocabulary(cfg, args.vocabulary)
        clip, labeler = build_parts(cfg)
        clip.encode_vocabulary(names)  # fail early on a malformed vocabulary
    except (OSError, ValueError, RuntimeError) as error:
        _error(str(error))
        return 2
    divisibility = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
    os.makedirs(args.output, exist_ok=True)

    failed: List[str] = []
    if args.dataset is not None:
        truth = ground_truth_source(args.dataset)
        records = DatasetCatalog.get(args.dataset)[: args.limit or None]
        items = [(r["file_name"], lambda r=r: load_dataset_view(cfg, r, args.dataset, truth)) for r in records]
    else:
        truth = None
        files, problems = find_images(args.input)
        for problem in problems:
            _error(problem)
        failed += problems
        items = [(p, lambda p=p: load_image_view(cfg, p)) for p in files]

    outputs = dict(zip([path for path, _ in items], unique_output_paths([path for path, _ in items], args.output)))
    best_ious: List[float] = []
    agree = 0
    for path, load in items:
        try:
            view = load()
        except (ImageReadError, LabelFileError) as error:
            _error(f"{error}; skipped")
            failed.append(path)
            continue
        pseudo = compute_pseudo_masks(clip, labeler, view, divisibility)
        masks = pseudo.masks.numpy()
        nearest, cosine = nearest_classes(clip, pseudo.embeddings, names)
        labels = mask_labels(names, unseen, nearest, cosine)
        panel = draw_panel(view, masks, labels, [unseen[i] for i in nearest], args.scale,
                           show_unannotated=truth is not None)
        Image.fromarray(panel).save(outputs[path])
        print(f"{path}: {len(labels)} pseudo masks: {', '.join(labels) if labels else '-'}", flush=True)
        if truth is None:
            continue
        classes, ious = best_overlaps(masks, view.ground_truth, truth.ignore_label)
        for j, (label, c, iou) in enumerate(zip(labels, classes, ious)):
            gt = "nothing" if c < 0 else truth.class_names[c] + (UNSEEN_MARK if truth.unseen[c] else "")
            print(f"  mask {j + 1} ({masks[j].mean():.1%} of the image): nearest {label}; overlaps {gt}, IoU {iou:.2f}")
            best_ious.append(float(iou))
            agree += int(c >= 0 and names[nearest[j]] == truth.class_names[c])
    if truth is not None:
        if best_ious:
            print(f"mean best IoU: {np.mean(best_ious):.3f} over {len(best_ious)} pseudo masks; nearest class = "
                  f"most-overlapped class for {agree} of them")
        else:
            print("mean best IoU: n/a (no pseudo masks)")
    print(f"panels: {args.output}")
    if failed:
        _error(f"{len(failed)} input(s) failed and were skipped: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
