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
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ...data.toy_world import CAPTION_TEMPLATES, TOY_CLASS_NAMES, TOY_CLASSES, TOY_UNSEEN, draw_crop
from ...data.toy_world.dataset import GENERATOR_VERSION
from ...utils import Progress, cache_dir, cache_lock, sha256_file
from .loader import load_clip, register_clip_architecture, register_pretrained_source

__all__ = [
    "TOY_CLIP_NAME",
    "TOY_CLIP_TAG",
    "TOY_CLIP_ARCHITECTURE",
    "ToyClipRecipe",
    "DEFAULT_TOY_CLIP_RECIPE",
    "pretrain_toy_clip",
    "crop_zero_shot_accuracy",
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


@dataclass(frozen=True)
class ToyClipRecipe:
    """Pretraining hyper-parameters (all of them enter the cache key)."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    pool_size: int = 9600  # crops drawn once, then sampled with random 90-degree rotations
    crop_size: int = 64
    seed: int = 0
    eval_crops_per_class: int = 20

    def key(self) -> str:
        payload = dict(asdict(self), architecture=TOY_CLIP_ARCHITECTURE, world=GENERATOR_VERSION,
                       classes=TOY_CLASS_NAMES, captions=CAPTION_TEMPLATES)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_TOY_CLIP_RECIPE = ToyClipRecipe()


def _normalise(model: nn.Module, images_uint8: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> CLIP-normalised float ``(N, 3, H, W)``."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(cfg.get("std") or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1) * 255.0
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return (x - mean) / std


def _draw_crops(rng: np.random.RandomState, class_ids: Sequence[int], size: int) -> np.ndarray:
    return np.stack([draw_crop(rng, TOY_CLASSES[c], size) for c in class_ids])


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
    (name -> accuracy) and ``chance``; accuracies in percent.
    """
    was_training = model.training
    model.eval()
    tokenizer = open_clip.get_tokenizer(TOY_CLIP_NAME)
    prompts = [t.format(n) for n in TOY_CLASS_NAMES for t in templates]
    text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).view(len(TOY_CLASS_NAMES), len(templates), -1)
    text = F.normalize(text.mean(dim=1), dim=-1)
    labels = np.repeat(np.arange(len(TOY_CLASSES)), crops_per_class)
    images = _normalise(model, _draw_crops(np.random.RandomState(seed), labels, crop_size))
    predictions = torch.cat([
        (F.normalize(model.encode_image(chunk), dim=-1) @ text.T).argmax(dim=1) for chunk in images.split(256)
    ]).numpy()
    correct = predictions == labels
    unseen = np.isin(labels, [TOY_CLASS_NAMES.index(n) for n in TOY_UNSEEN])
    model.train(was_training)
    return {
        "top1": 100.0 * correct.mean(),
        "top1_seen": 100.0 * correct[~unseen].mean(),
        "top1_unseen": 100.0 * correct[unseen].mean(),
        "per_class": {n: 100.0 * correct[labels == i].mean() for i, n in enumerate(TOY_CLASS_NAMES)},
        "chance": 100.0 / len(TOY_CLASS_NAMES),
        "crops": int(len(labels)),
    }


def _class_aware_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor):
    """Symmetric InfoNCE over ``(B, D)`` normalised embeddings where every image-caption pair
    of the same class is a positive (targets uniform over them)."""
    logits = scale * image @ text.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    image_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def pretrain_toy_clip(
    recipe: ToyClipRecipe = DEFAULT_TOY_CLIP_RECIPE,
    print_fn: Optional[Callable[[str], None]] = None,
) -> Tuple[nn.Module, Dict[str, object]]:
    """Pretrain a fresh toy CLIP; return ``(model, report)``.

    Draws ``pool_size`` crops (class uniform over all 30 classes), then runs ``steps`` AdamW
    steps (one-cycle schedule) of batch ``batch_size`` on random crops (random 90-degree
    rotation) paired with a random caption template of their class. ``report`` holds the
    final zero-shot crop accuracy (:func:`crop_zero_shot_accuracy`), the last loss and the time.
    """
    start = time.monotonic()
    torch.manual_seed(recipe.seed)
    rng = np.random.RandomState(recipe.seed)
    model = load_clip(TOY_CLIP_NAME, "")
    model.train()
    tokenizer = open_clip.get_tokenizer(TOY_CLIP_NAME)

    labels = rng.randint(len(TOY_CLASSES), size=recipe.pool_size)
    drawing = Progress("toy CLIP: drawing pretraining crops", recipe.pool_size, print_fn=print_fn)
    pool = np.empty((recipe.pool_size, recipe.crop_size, recipe.crop_size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        pool[i] = draw_crop(rng, TOY_CLASSES[c], recipe.crop_size)
        drawing.update(i + 1)
    captions = tokenizer([t.format(n) for n in TOY_CLASS_NAMES for t in CAPTION_TEMPLATES])
    captions = captions.view(len(TOY_CLASSES), len(CAPTION_TEMPLATES), -1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=recipe.warmup_fraction
    )
    progress = Progress("toy CLIP pretraining", recipe.steps, print_fn=print_fn)
    loss = torch.tensor(float("nan"))
    for step in range(recipe.steps):
        index = rng.randint(recipe.pool_size, size=recipe.batch_size)
        images = torch.rot90(_normalise(model, pool[index]), k=int(rng.randint(4)), dims=(2, 3))
        batch_labels = torch.from_numpy(labels[index])
        tokens = captions[batch_labels, torch.from_numpy(rng.randint(len(CAPTION_TEMPLATES), size=recipe.batch_size))]
        image_features, text_features, scale = model(images, tokens)
        loss = _class_aware_clip_loss(image_features, text_features, scale, batch_labels)
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
