"""The toy CLIP: a small open_clip model that zsmask pretrains itself on toy-world captions.

No CLIP weights can be downloaded on machines without hub access, and a newcomer's first run
should not need any. The toy CLIP is a real ``open_clip.CLIP`` built from a small custom
architecture (:data:`TOY_CLIP_ARCHITECTURE`, registered as ``"zsmask-toy-clip"``), so every
zsmask code path that uses CLIP (text classifier, dense features, CLIP backbone) runs on it
unchanged. It is pretrained contrastively on generated single-class crops paired with
captions that cover **all** toy classes, unseen ones included, as real CLIP has seen "sheep"
before a segmenter is trained without sheep masks; segmentation training later sees only
seen-class labels.

``MODEL.CLIP.PRETRAINED: "zsmask-toy"`` of ``MODEL.CLIP.MODEL_NAME: "zsmask-toy-clip"``
resolves (through :func:`~zsmask.modeling.clip.loader.register_pretrained_source`) to the
cached checkpoint file ``<cache>/toy_clip-<hash>.pt``, pretraining it first if absent or
damaged; the file is then loaded by the same loader as any user checkpoint. The sidecar
``toy_clip-<hash>.json`` holds the file's SHA-256, the recipe and the zero-shot report.

Loss: the symmetric InfoNCE of CLIP (Radford et al., 2021, Fig. 3 pseudo-code) with
class-aware targets (UniCL, Yang et al., 2022, Eq. 3): a batch of 128 crops of 30 classes holds
many pairs with the same class name, and those are positives, not negatives.
"""
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ...data.toy_world import CAPTION_TEMPLATES, TOY_CLASS_NAMES, TOY_CLASSES, TOY_UNSEEN, draw_crop, draw_scene
from ...data.toy_world.dataset import GENERATOR_VERSION
from ...utils import Progress, cache_dir, cache_lock, sha256_file
from .clip_model import CLIPTextImageEncoder, clip_pixel_stats
from .loader import load_clip, register_clip_architecture, register_pretrained_source
from .region_views import REGION_VIEWS, mask_pooled_embeddings, region_views
from .visual_towers import tower_stride, vit_dense_embeddings, vit_forward_tokens, vit_pool

__all__ = [
    "TOY_CLIP_NAME",
    "TOY_CLIP_TAG",
    "TOY_CLIP_ARCHITECTURE",
    "ToyClipRecipe",
    "DEFAULT_TOY_CLIP_RECIPE",
    "pretrain_toy_clip",
    "crop_zero_shot_accuracy",
    "embedding_metrics",
    "region_zero_shot_report",
    "toy_clip_weights",
    "toy_clip_report",
]

logger = logging.getLogger(__name__)

TOY_CLIP_NAME = "zsmask-toy-clip"
TOY_CLIP_TAG = "zsmask-toy"
# A 4-layer ViT (patch 8, width 128) image tower and a 3-layer text tower, joint space of 64.
TOY_CLIP_ARCHITECTURE = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
_EVAL_TEMPLATES = ("a photo of a {}.",)  # the toy configs' PROMPT_TEMPLATE_SET "single"
# Seed streams of generated scenes, apart from the toy world's splits (``[seed, 0]`` train,
# ``[seed, 1]`` val): pretraining scenes and the region report's fresh scenes.
_PRETRAIN_SCENE_STREAM = 1000
_REPORT_STREAM = 2000


@dataclass(frozen=True)
class ToyClipRecipe:
    """Pretraining hyper-parameters (all of them enter the cache key)."""

    steps: int = 320
    batch_size: int = 96
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    pool_size: int = 9600  # crops drawn once, then sampled with random 90-degree rotations
    crop_size: int = 64
    seed: int = 0
    eval_crops_per_class: int = 20
    # Region views of generated scenes (see :mod:`.region_views`), per step: the masked full
    # canvas, the masked crop and the crop with context of that many random scene regions, and
    # the dense (MaskCLIP) patch embeddings of ``dense_scenes`` scenes classified against the
    # class texts (soft targets: class fractions per patch).
    scene_pool: int = 1500
    scene_size: int = 128
    masked_images: int = 8
    masked_crops: int = 24
    context_crops: int = 0
    dense_scenes: int = 4
    dense_weight: float = 1.0
    min_region_area: int = 64
    context_expand: float = 1.5
    eval_scenes: int = 200

    def key(self) -> str:
        payload = dict(asdict(self), architecture=TOY_CLIP_ARCHITECTURE, world=GENERATOR_VERSION,
                       classes=TOY_CLASS_NAMES, captions=CAPTION_TEMPLATES)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_TOY_CLIP_RECIPE = ToyClipRecipe()


def _normalise(model: nn.Module, images_uint8: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> CLIP-normalised float ``(N, 3, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return _normalise_float(model, x)


def _normalise_float(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """0-255 float ``(N, 3, H, W)`` -> CLIP-normalised."""
    mean, std = clip_pixel_stats(model)
    return (images - mean) / std


def _draw_crops(rng: np.random.RandomState, class_ids: Sequence[int], size: int) -> np.ndarray:
    return np.stack([draw_crop(rng, TOY_CLASSES[c], size) for c in class_ids])


def _class_texts(model: nn.Module, templates: Sequence[str] = _EVAL_TEMPLATES) -> torch.Tensor:
    """Prompt-ensemble text embeddings ``(30, D)`` of all toy classes, L2-normalised."""
    tokenizer = open_clip.get_tokenizer(TOY_CLIP_NAME)
    prompts = [t.format(n) for n in TOY_CLASS_NAMES for t in templates]
    text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).view(len(TOY_CLASS_NAMES), len(templates), -1)
    return F.normalize(text.mean(dim=1), dim=-1)


_UNSEEN_IDS = np.array([TOY_CLASS_NAMES.index(n) for n in TOY_UNSEEN])


def embedding_metrics(embeddings: torch.Tensor, labels: np.ndarray, text: torch.Tensor,
                      per_class: bool = False) -> Dict[str, object]:
    """Zero-shot quality of region embeddings ``(N, D)`` (L2-normalised) of classes ``labels``
    ``(N,)`` against class texts ``(C, D)``, in percent / cosine:

    ``top1`` (argmax over all C classes), ``top1_seen`` / ``top1_unseen`` (the same over regions
    of seen / unseen classes), ``top1_unseen_among_unseen`` (unseen regions, argmax over the
    unseen classes only: ZS3), ``same_minus_different`` (mean cosine between embeddings of the
    same class minus that between different classes, pairs i != j), ``matched_cosine`` (mean
    cosine of an embedding and its class text) and ``count``; with ``per_class`` also
    ``per_class`` (class name -> top-1 over its regions, NaN for a class without regions).
    """
    labels = np.asarray(labels)
    scores = embeddings.float() @ text.float().T
    correct = (scores.argmax(dim=1).numpy() == labels)
    unseen = np.isin(labels, _UNSEEN_IDS)
    among = scores[:, _UNSEEN_IDS].argmax(dim=1).numpy()
    pairwise = embeddings.float() @ embeddings.float().T
    same = torch.from_numpy(labels[:, None] == labels[None, :])
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)

    def mean_pct(x):
        return float(100.0 * x.mean()) if x.size else float("nan")

    def mean_of(x):
        return float(x.mean()) if x.numel() else float("nan")

    metrics = {
        "top1": mean_pct(correct),
        "top1_seen": mean_pct(correct[~unseen]),
        "top1_unseen": mean_pct(correct[unseen]),
        "top1_unseen_among_unseen": mean_pct(_UNSEEN_IDS[among[unseen]] == labels[unseen]),
        "same_minus_different": mean_of(pairwise[same & off_diagonal]) - mean_of(pairwise[~same]),
        "matched_cosine": mean_of(scores[torch.arange(len(labels)), torch.from_numpy(labels)]),
        "count": int(len(labels)),
    }
    if per_class:
        metrics["per_class"] = {n: mean_pct(correct[labels == i]) for i, n in enumerate(TOY_CLASS_NAMES)}
    return metrics


@torch.no_grad()
def crop_zero_shot_accuracy(
    model: nn.Module,
    crops_per_class: int = 20,
    seed: int = 12345,
    templates: Sequence[str] = _EVAL_TEMPLATES,
    crop_size: int = 64,
) -> Dict[str, object]:
    """Zero-shot top-1 accuracy of ``model`` on fresh single-class crops of every toy class.

    Each crop (drawn with ``seed``, disjoint from pretraining draws) is classified against the
    prompt-ensemble text embeddings of all 30 class names. Returns ``top1`` (over all crops),
    ``top1_seen`` / ``top1_unseen`` (over crops of seen / unseen classes), ``per_class``
    (name -> accuracy), ``chance`` and the other :func:`embedding_metrics`; accuracies in percent.
    """
    was_training = model.training
    model.eval()
    text = _class_texts(model, templates)
    labels = np.repeat(np.arange(len(TOY_CLASSES)), crops_per_class)
    images = _normalise(model, _draw_crops(np.random.RandomState(seed), labels, crop_size))
    embeddings = torch.cat([F.normalize(model.encode_image(chunk), dim=-1) for chunk in images.split(256)])
    model.train(was_training)
    report = embedding_metrics(embeddings, labels, text, per_class=True)
    report.update(chance=100.0 / len(TOY_CLASS_NAMES), crops=int(len(labels)))
    return report


def _scene_regions(label: np.ndarray, min_area: int) -> List[int]:
    """Class ids of the regions of one label map with at least ``min_area`` pixels."""
    ids, counts = np.unique(label, return_counts=True)
    return [int(c) for c, n in zip(ids, counts) if n >= min_area]


@torch.no_grad()
def region_zero_shot_report(
    model: nn.Module,
    scenes: int = 200,
    seed: int = 12345,
    size: int = 128,
    min_region_area: int = 64,
    context_expand: float = 1.5,
    templates: Sequence[str] = _EVAL_TEMPLATES,
) -> Dict[str, object]:
    """Zero-shot recognition of ground-truth regions of fresh scenes, per region view.

    ``scenes`` scenes of ``size`` are drawn from a seed stream no pretraining or toy-world split
    uses; every region (one class's pixels) of at least ``min_region_area`` pixels is shown to
    CLIP as each of :data:`~.region_views.REGION_VIEWS` through
    :class:`~zsmask.modeling.clip.CLIPTextImageEncoder` (the methods' own code path: [CLS] of
    ``encode_image_dense`` for the image views, its MaskCLIP patch embeddings for
    ``dense_pooled``), and scored with :func:`embedding_metrics` against the texts of all 30
    classes. Returns ``{"views": {view: metrics}, "scenes": int, "regions": int}``.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    encoder = CLIPTextImageEncoder(clip_model=model, tokenizer=open_clip.get_tokenizer(TOY_CLIP_NAME),
                                   templates=templates, model_name=TOY_CLIP_NAME)
    try:
        text = encoder.encode_vocabulary(TOY_CLASS_NAMES)
        fill = encoder.pixel_mean.view(3)
        out_size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list))
                       else model.visual.image_size)
        rng = np.random.RandomState([seed, _REPORT_STREAM])
        embeddings = {view: [] for view in REGION_VIEWS}
        labels = []
        for _ in range(scenes):
            image_uint8, label, _ = draw_scene(rng, size)
            classes = _scene_regions(label, min_region_area)
            if not classes:
                continue
            label_t = torch.from_numpy(label)
            masks = [label_t == c for c in classes]
            image = torch.from_numpy(image_uint8).permute(2, 0, 1).float()
            views = region_views(image, masks, fill, out_size, context_expand=context_expand)
            for view in ("masked_image", "masked_crop", "context_crop"):
                embeddings[view].append(encoder.encode_image_dense(views[view])["cls_embedding"])
            dense = encoder.encode_image_dense(image[None])["patch_embeddings"][0]
            embeddings["dense_pooled"].append(mask_pooled_embeddings(dense, torch.stack(masks), encoder.dense_stride))
            labels.extend(classes)
        labels = np.asarray(labels)
        report = {view: embedding_metrics(torch.cat(chunks), labels, text) for view, chunks in embeddings.items()}
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return {"views": report, "scenes": scenes, "regions": int(len(labels))}


def _class_aware_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor):
    """Symmetric InfoNCE of ``(B, D)`` normalised image embeddings against the ``(C, D)``
    normalised caption embeddings of the C classes (one caption each), image i's caption being
    ``labels[i]``: image-to-text is the cross-entropy over the C captions; text-to-image, for
    each caption whose class is in the batch, the cross-entropy over the B images with targets
    uniform over the images of its class (UniCL, Eq. 3, with same-class captions merged)."""
    logits = scale * image @ text.T  # (B, C)
    image_to_text = F.cross_entropy(logits, labels)
    positives = F.one_hot(labels, text.shape[0]).T.float()  # (C, B)
    present = positives.sum(dim=1) > 0
    targets = positives[present] / positives[present].sum(dim=1, keepdim=True)
    text_to_image = -(targets * F.log_softmax(logits.T[present], dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


class _ScenePool:
    """Pretraining scenes drawn once: images ``(N, 3, H, W)`` uint8, labels ``(N, H, W)`` and
    every region of at least ``min_area`` pixels as ``regions[r] = (scene, class id)``."""

    def __init__(self, rng: np.random.RandomState, count: int, size: int, min_area: int, progress: Progress):
        self.images = torch.empty((count, 3, size, size), dtype=torch.uint8)
        self.labels = torch.empty((count, size, size), dtype=torch.uint8)
        regions = []
        for i in range(count):
            image, label, _ = draw_scene(rng, size)
            self.images[i] = torch.from_numpy(image).permute(2, 0, 1)
            self.labels[i] = torch.from_numpy(label)
            regions.extend((i, c) for c in _scene_regions(label, min_area))
            progress.update(i + 1)
        self.regions = np.asarray(regions, dtype=np.int64).reshape(-1, 2)

    def views(self, index: np.ndarray, fill: torch.Tensor, out_size: int, context_expand: float,
              counts: Dict[str, int]) -> Dict[str, torch.Tensor]:
        """For each view of :data:`~.region_views.REGION_VIEWS` but ``dense_pooled``, that view of
        the first ``counts[view]`` regions of ``regions[index]``: ``(n, 3, S, S)`` crops or
        ``(n, 3, H, W)`` canvases, 0-255 float."""
        out = {view: [] for view in counts}
        for k, (scene, cls) in enumerate(self.regions[index]):
            wanted = [view for view, n in counts.items() if k < n]
            if not wanted:
                break
            views = region_views(self.images[scene].float(), [self.labels[scene] == int(cls)], fill, out_size,
                                 context_expand=context_expand, views=wanted)
            for view in wanted:
                out[view].append(views[view][0])
        return {view: torch.stack(chunks) for view, chunks in out.items() if chunks}

    def patch_targets(self, scenes: np.ndarray, stride: int) -> torch.Tensor:
        """Class fractions of every ``stride`` x ``stride`` patch: ``(B, 30, H/s, W/s)``."""
        one_hot = F.one_hot(self.labels[scenes].long(), len(TOY_CLASSES)).permute(0, 3, 1, 2).float()
        return F.avg_pool2d(one_hot, stride)


def _pooled_embedding(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's pooled image embedding of normalised images of any size (positional embedding
    resized, as ``CLIPTextImageEncoder.encode_image_dense`` does)."""
    tokens, _ = vit_forward_tokens(visual, x)
    return vit_pool(visual, tokens)


def pretrain_toy_clip(
    recipe: ToyClipRecipe = DEFAULT_TOY_CLIP_RECIPE,
    print_fn: Optional[Callable[[str], None]] = None,
) -> Tuple[nn.Module, Dict[str, object]]:
    """Pretrain a fresh toy CLIP; return ``(model, report)``.

    Draws ``pool_size`` single-class crops and ``scene_pool`` scenes (class uniform over all 30
    classes, unseen ones included), then runs ``steps`` AdamW steps (one-cycle schedule). Each
    step's loss is the class-aware InfoNCE (:func:`_class_aware_clip_loss`) over ``batch_size``
    random crops (random 90-degree rotation) and the region views of random scene regions
    (``masked_images`` masked full canvases, ``masked_crops`` masked crops, ``context_crops``
    crops with context), each against one random caption template per class; plus
    ``dense_weight`` times the cross-entropy of the MaskCLIP dense patch embeddings of
    ``dense_scenes`` scenes against the same captions, with each patch's class fractions as soft
    targets. ``report`` holds the crop accuracy (:func:`crop_zero_shot_accuracy`), the region
    report under ``"regions"`` (:func:`region_zero_shot_report`), the last loss and the time.
    """
    start = time.monotonic()
    torch.manual_seed(recipe.seed)
    rng = np.random.RandomState(recipe.seed)
    model = load_clip(TOY_CLIP_NAME, "")
    model.train()
    tokenizer = open_clip.get_tokenizer(TOY_CLIP_NAME)
    visual = model.visual
    stride = tower_stride(visual)
    fill = clip_pixel_stats(model)[0].view(3)

    labels = rng.randint(len(TOY_CLASSES), size=recipe.pool_size)
    drawing = Progress("toy CLIP: drawing pretraining crops", recipe.pool_size, print_fn=print_fn)
    pool = np.empty((recipe.pool_size, recipe.crop_size, recipe.crop_size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        pool[i] = draw_crop(rng, TOY_CLASSES[c], recipe.crop_size)
        drawing.update(i + 1)
    scenes = None
    if recipe.scene_pool:
        scenes = _ScenePool(np.random.RandomState([recipe.seed, _PRETRAIN_SCENE_STREAM]), recipe.scene_pool,
                            recipe.scene_size, recipe.min_region_area,
                            Progress("toy CLIP: drawing pretraining scenes", recipe.scene_pool, print_fn=print_fn))
    captions = tokenizer([t.format(n) for n in TOY_CLASS_NAMES for t in CAPTION_TEMPLATES])
    captions = captions.view(len(TOY_CLASSES), len(CAPTION_TEMPLATES), -1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=recipe.warmup_fraction
    )
    region_counts = {"masked_image": recipe.masked_images, "masked_crop": recipe.masked_crops,
                     "context_crop": recipe.context_crops}
    progress = Progress("toy CLIP pretraining", recipe.steps, print_fn=print_fn)
    loss = torch.tensor(float("nan"))
    for step in range(recipe.steps):
        index = rng.randint(recipe.pool_size, size=recipe.batch_size)
        small = [torch.rot90(_normalise(model, pool[index]), k=int(rng.randint(4)), dims=(2, 3))]
        view_labels = [torch.from_numpy(labels[index])]
        views = {}
        if scenes is not None and max(region_counts.values()):
            picked = rng.randint(len(scenes.regions), size=max(region_counts.values()))
            views = scenes.views(picked, fill, recipe.crop_size, recipe.context_expand, region_counts)
            region_labels = torch.from_numpy(scenes.regions[picked, 1])
            for view in ("masked_crop", "context_crop"):
                if view in views:
                    small.append(_normalise_float(model, views[view]))
                    view_labels.append(region_labels[:len(views[view])])
        image_features = [model.encode_image(torch.cat(small))]
        if "masked_image" in views:
            image_features.append(_pooled_embedding(visual, _normalise_float(model, views["masked_image"])))
            view_labels.append(region_labels[:len(views["masked_image"])])
        image_features = F.normalize(torch.cat(image_features), dim=-1)
        view_labels = torch.cat(view_labels)
        templates = torch.from_numpy(rng.randint(len(CAPTION_TEMPLATES), size=len(TOY_CLASSES)))
        text_features = F.normalize(model.encode_text(captions[torch.arange(len(TOY_CLASSES)), templates]), dim=-1)
        scale = model.logit_scale.exp()
        loss = _class_aware_clip_loss(image_features, text_features, scale, view_labels)
        if scenes is not None and recipe.dense_scenes:
            picked = rng.randint(recipe.scene_pool, size=recipe.dense_scenes)
            dense, _ = vit_dense_embeddings(visual, _normalise_float(model, scenes.images[picked].float()))
            logits = scale * torch.einsum("bdhw,cd->bchw", F.normalize(dense, dim=1), text_features)
            targets = scenes.patch_targets(picked, stride)
            loss = loss + recipe.dense_weight * -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"toy CLIP pretraining diverged at step {step} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100.0))
        progress.update(step + 1, f"loss {loss.item():.3f}")
    model.eval()
    report = crop_zero_shot_accuracy(model, recipe.eval_crops_per_class, crop_size=recipe.crop_size)
    report["regions"] = region_zero_shot_report(model, recipe.eval_scenes, size=recipe.scene_size,
                                                min_region_area=recipe.min_region_area,
                                                context_expand=recipe.context_expand)
    report.update(final_loss=float(loss.item()), seconds=time.monotonic() - start, steps=recipe.steps)
    return model, report


def _paths(recipe: ToyClipRecipe, root: Optional[str]) -> Tuple[str, str]:
    base = os.path.join(root or cache_dir(), f"toy_clip-{recipe.key()}")
    return base + ".pt", base + ".json"


def _cached_problem(weights: str, sidecar: str) -> Optional[str]:
    if not os.path.isfile(weights):
        return "no checkpoint"
    try:
        with open(sidecar, "r", encoding="utf-8") as f:
            expected = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable sidecar {sidecar} ({type(e).__name__})"
    if sha256_file(weights) != expected:
        return f"damaged checkpoint {weights} (checksum mismatch)"
    return None


def toy_clip_weights(
    recipe: ToyClipRecipe = DEFAULT_TOY_CLIP_RECIPE,
    root: Optional[str] = None,
    print_fn: Optional[Callable[[str], None]] = None,
) -> str:
    """Path of the cached toy CLIP checkpoint, pretraining it first if absent or damaged."""
    weights, sidecar = _paths(recipe, root)
    with cache_lock(weights):
        problem = _cached_problem(weights, sidecar)
        if problem is None:
            return weights
        if problem != "no checkpoint":
            logger.warning(f"toy CLIP cache is damaged ({problem}); pretraining it again")
        (print_fn or logger.info)(
            f"pretraining the toy CLIP ({recipe.steps} steps of batch {recipe.batch_size}; cached afterwards)"
        )
        model, report = pretrain_toy_clip(recipe, print_fn)
        tmp = f"{weights}.tmp-{os.getpid()}"
        torch.save(model.state_dict(), tmp)
        digest = sha256_file(tmp)
        os.replace(tmp, weights)
        record = dict(sha256=digest, model_name=TOY_CLIP_NAME, architecture=TOY_CLIP_ARCHITECTURE,
                      recipe=asdict(recipe), report=report)
        with open(sidecar + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(sidecar + ".tmp", sidecar)
        (print_fn or logger.info)(
            f"toy CLIP ready: zero-shot crop accuracy {report['top1']:.1f}% over all "
            f"{len(TOY_CLASS_NAMES)} classes (unseen {report['top1_unseen']:.1f}%), "
            f"{report['seconds']:.0f}s -> {weights}"
        )
    return weights


def toy_clip_report(weights: str) -> Dict[str, object]:
    """The pretraining report stored beside a checkpoint from :func:`toy_clip_weights`."""
    with open(os.path.splitext(weights)[0] + ".json", "r", encoding="utf-8") as f:
        return json.load(f)["report"]


register_clip_architecture(TOY_CLIP_NAME, TOY_CLIP_ARCHITECTURE)
register_pretrained_source(TOY_CLIP_NAME, TOY_CLIP_TAG, toy_clip_weights)
