"""Generate the toy world on disk (cached by content hash) and register it as a zero-shot split.

``toy_world_train`` (seen vocabulary, unseen pixels ignored), ``toy_world_test`` (all 30
classes, GZS3) and ``toy_world_test_zs3`` (unseen only) are registered when :mod:`zsmask.data`
is imported; the images are generated on first load into
``<cache>/toy_world-<hash>/{train,val}/{images,labels}`` where the hash covers the generation
parameters, the class definitions and the generator version. A ``manifest.json`` written last
holds every file's SHA-256 and each scene's caption; a folder whose manifest is missing or
does not match its files (an interrupted copy, a damaged file) is rebuilt with a warning.
"""
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
from PIL import Image

from ...utils import Progress, atomic_write_dir, cache_dir, cache_lock, sha256_file
from ..catalog import RegisteredSplit, SemSegFolder, load_sem_seg_folder, register_zero_shot_split
from .captions import scene_caption
from .classes import TOY_CLASS_NAMES, TOY_SPLITS, TOY_UNSEEN
from .draw import draw_scene

__all__ = [
    "ToyWorldParams",
    "DEFAULT_TOY_WORLD",
    "SMOKE_TOY_WORLD",
    "toy_world_root",
    "generate_toy_world",
    "verify_toy_world",
    "toy_world_records",
    "register_toy_world",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
_SPLIT_INDEX = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ToyWorldParams:
    """What fixes the generated images: counts per split, image size, seed, objects per scene."""

    num_train: int = 2000
    num_val: int = 1000
    size: int = 128
    max_objects: int = 4
    seed: int = 0

    def key(self) -> str:
        """Content hash of everything the images depend on (12 hex digits)."""
        payload = dict(asdict(self), version=GENERATOR_VERSION, classes=TOY_CLASS_NAMES, unseen=TOY_UNSEEN)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


DEFAULT_TOY_WORLD = ToyWorldParams()
# A 60-scene world for checking a setup end to end in seconds (``toy_world_smoke_*``, the quick
# start's ``--smoke``); its numbers mean nothing.
SMOKE_TOY_WORLD = ToyWorldParams(num_train=48, num_val=12)


def toy_world_root(params: ToyWorldParams = DEFAULT_TOY_WORLD, root: Optional[str] = None) -> str:
    """The folder holding the world for ``params`` (it may not exist yet)."""
    return os.path.join(root or cache_dir(), f"toy_world-{params.key()}")


def verify_toy_world(path: str, params: ToyWorldParams = DEFAULT_TOY_WORLD) -> Optional[str]:
    """``None`` if ``path`` holds a complete, undamaged world for ``params``, else what is wrong."""
    manifest_path = os.path.join(path, "manifest.json")
    try:
        with open(manifest_path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest {manifest_path} ({type(e).__name__})"
    if manifest.get("params") != asdict(params) or manifest.get("version") != GENERATOR_VERSION:
        return "manifest of other generation parameters"
    expected = 2 * (params.num_train + params.num_val)
    if len(files) != expected:
        return f"manifest lists {len(files)} files, expected {expected}"
    for rel, digest in files.items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            return f"missing file {full}"
        if sha256_file(full) != digest:
            return f"damaged file {full} (checksum mismatch)"
    return None


def _write_split(out: str, split: str, params: ToyWorldParams, progress: Progress, done: int, files: dict, captions: dict):
    rng = np.random.RandomState([params.seed, _SPLIT_INDEX[split]])
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(out, split, sub))
    for i in range(params.count(split)):
        image, label, _ = draw_scene(rng, params.size, params.max_objects)
        stem = f"{i:05d}"
        image_rel = f"{split}/images/{stem}.jpg"
        label_rel = f"{split}/labels/{stem}.png"
        Image.fromarray(image).save(os.path.join(out, image_rel), quality=95)
        Image.fromarray(label, mode="L").save(os.path.join(out, label_rel))
        for rel in (image_rel, label_rel):
            files[rel] = sha256_file(os.path.join(out, rel))
        ids, counts = np.unique(label, return_counts=True)
        captions[f"{split}/{stem}"] = scene_caption([int(c) for c in ids[np.argsort(-counts, kind="stable")]])
        done += 1
        progress.update(done)
    return done


def generate_toy_world(
    params: ToyWorldParams = DEFAULT_TOY_WORLD,
    root: Optional[str] = None,
    print_fn: Optional[Callable[[str], None]] = None,
) -> str:
    """Make sure the world for ``params`` exists and is intact; return its folder.

    Reuses a verified cache folder; otherwise (absent, or damaged: missing manifest, missing
    file, checksum mismatch) draws every scene (seeded: the same params give byte-identical
    labels), writing into a temporary folder renamed into place when complete. Progress lines
    go to ``print_fn`` (default: the ``zsmask`` logger).
    """
    out = toy_world_root(params, root)
    with cache_lock(out):
        if os.path.isdir(out):
            problem = verify_toy_world(out, params)
            if problem is None:
                return out
            logger.warning(f"toy world cache {out} is damaged ({problem}); rebuilding it")
            shutil.rmtree(out, ignore_errors=True)
        _generate(out, params, print_fn)
    return out


def _generate(out: str, params: ToyWorldParams, print_fn) -> None:
    total = params.num_train + params.num_val
    progress = Progress(f"generating the toy world ({total} scenes)", total, print_fn=print_fn)
    with atomic_write_dir(out) as tmp:
        files, captions, done = {}, {}, 0
        for split in ("train", "val"):
            done = _write_split(tmp, split, params, progress, done, files, captions)
        manifest = dict(version=GENERATOR_VERSION, params=asdict(params), classes=list(TOY_CLASS_NAMES),
                        unseen=list(TOY_UNSEEN), files=files, captions=captions)
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=0)


def toy_world_records(split: str, params: ToyWorldParams = DEFAULT_TOY_WORLD, root: Optional[str] = None) -> List[dict]:
    """Dataset dicts of ``split`` ("train" or "val"), generating the world first if needed."""
    if split not in _SPLIT_INDEX:
        raise ValueError(f"toy world split must be one of {sorted(_SPLIT_INDEX)}, got {split!r}")
    path = generate_toy_world(params, root)
    folder = SemSegFolder(os.path.join(path, split, "images"), os.path.join(path, split, "labels"))
    return load_sem_seg_folder(folder, f"toy world ({split})")


def register_toy_world(
    name: str = "toy_world", params: ToyWorldParams = DEFAULT_TOY_WORLD, root: Optional[str] = None,
    overwrite: bool = True, unseen: Optional[Sequence[str]] = None,
) -> RegisteredSplit:
    """Register ``<name>_train`` / ``<name>_test`` / ``<name>_test_zs3`` with ``unseen`` held out
    (default: ``TOY_SPLITS[name]`` for a built-in split name, else ``TOY_UNSEEN``); nothing is
    generated until one of them is loaded. Every split reads the same generated scenes."""
    if unseen is None:
        unseen = TOY_SPLITS.get(name, TOY_UNSEEN)
    return register_zero_shot_split(
        name,
        TOY_CLASS_NAMES,
        tuple(unseen),
        train=lambda: toy_world_records("train", params, root),
        test=lambda: toy_world_records("val", params, root),
        overwrite=overwrite,
    )
