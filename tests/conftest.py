"""Shared fixtures: real files on disk in pytest's tmp folders, real detectron2 catalogs.

Under pytest-xdist (``make test`` runs ``-n auto``) every worker gets its share of the cores:
torch's intra-op threads and, for the processes a test starts, ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS``, unless the caller set them. Oversubscribed OpenMP threads (two workers of
all cores each) run several times slower than one thread each.
"""
import os
import uuid

import numpy as np
import pytest
from PIL import Image


def _share_cores_between_workers():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_cores_between_workers()


# The longest cases first, so that a parallel run starts them at once and the other workers
# share the rest (the default toy world's preparation alone is about a third of the suite).
_LONGEST_FIRST = ("test_prepare_command_builds_the_default_world_and_a_region_competent_toy_clip",)


def pytest_collection_modifyitems(config, items):
    """Longest case first, then the slow-marked ones, then the rest in collection order."""
    def rank(item):
        if getattr(item, "originalname", item.name) in _LONGEST_FIRST:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep generated artefacts out of the user's cache."""
    old = os.environ.get("ZSMASK_CACHE")
    os.environ["ZSMASK_CACHE"] = str(tmp_path_factory.mktemp("zsmask_cache"))
    yield
    if old is None:
        os.environ.pop("ZSMASK_CACHE", None)
    else:
        os.environ["ZSMASK_CACHE"] = old


def write_sem_seg_folder(root, labels, image_ext=".jpg", image_sizes=None):
    """Write one RGB image and one label PNG per ``(H, W)`` uint8 array in ``labels``.

    Returns ``(image_dir, label_dir)``. ``image_sizes`` optionally overrides an image's (H, W).
    """
    img_dir = os.path.join(root, "images")
    gt_dir = os.path.join(root, "labels")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    rng = np.random.RandomState(0)
    for i, lab in enumerate(labels):
        h, w = (image_sizes or {}).get(i, lab.shape)
        Image.fromarray(rng.randint(0, 255, size=(h, w, 3), dtype=np.uint8)).save(
            os.path.join(img_dir, f"{i:04d}{image_ext}")
        )
        Image.fromarray(lab.astype(np.uint8), mode="L").save(os.path.join(gt_dir, f"{i:04d}.png"))
    return img_dir, gt_dir


@pytest.fixture
def unique_name():
    """A dataset-name prefix no other test uses (the catalogs are process-global)."""
    return f"t{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ tiny real models
TINY_CLIP_NAME = "zsmask-test-tiny-vit"
# A real open_clip architecture, small enough that building and running it takes milliseconds.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def random_clip_encoder(name: str, architecture: dict):
    """The real ``CLIPTextImageEncoder`` of the open_clip ``architecture`` (registered as
    ``name``), random-initialised from seed 0, one prompt template."""
    import torch
    from detectron2.config import get_cfg

    from zsmask.config import add_zsmask_config
    from zsmask.modeling.clip import CLIPTextImageEncoder, register_clip_architecture

    register_clip_architecture(name, architecture)
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.CLIP.PRETRAINED = name, ""
    cfg.MODEL.CLIP.PROMPT_TEMPLATE_SET = "single"
    torch.manual_seed(0)
    return CLIPTextImageEncoder(cfg)


def tiny_model_cfg(tmp_path, train_dataset="", test_dataset="", resnet18=False, **overrides):
    """A detectron2 config of the real ZeroShotMaskFormer at toy size: the tiny CLIP above
    (random init, registered from a JSON file through MODEL.CLIP.ARCHITECTURE_FILE) as text
    encoder and as frozen backbone (trainable feature pyramid), a 1-layer deformable encoder and
    a 3-layer decoder with 8 queries. ``resnet18=True`` uses detectron2's ResNet-18 instead."""
    import json

    from detectron2.config import get_cfg

    from zsmask.config import add_zsmask_config

    arch_file = os.path.join(str(tmp_path), f"{TINY_CLIP_NAME}.json")
    with open(arch_file, "w") as f:
        json.dump(TINY_CLIP_CONFIG, f)
    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "Base-ZeroShotMaskFormer.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if resnet18:
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.RESNETS.NORM = "BN"
    else:
        cfg.MODEL.BACKBONE.NAME = "CLIPVisualBackbone"
        cfg.MODEL.PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
        cfg.MODEL.PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]
    cfg.MODEL.CLIP.MODEL_NAME = TINY_CLIP_NAME
    cfg.MODEL.CLIP.ARCHITECTURE_FILE = arch_file
    cfg.MODEL.CLIP.PRETRAINED = ""
    cfg.MODEL.CLIP.PROMPT_TEMPLATE_SET = "single"
    head = cfg.MODEL.SEM_SEG_HEAD
    head.CONVS_DIM, head.MASK_DIM, head.TRANSFORMER_ENC_LAYERS = 32, 32, 1
    head.DEFORMABLE_NHEADS, head.DEFORMABLE_NPOINTS, head.DEFORMABLE_DIM_FEEDFORWARD = 4, 2, 64
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.NUM_OBJECT_QUERIES, mf.NHEADS, mf.DIM_FEEDFORWARD, mf.DEC_LAYERS = 32, 8, 4, 64, 3
    mf.TRAIN_NUM_POINTS = 256
    cfg.DATASETS.TRAIN = (train_dataset,) if train_dataset else ()
    cfg.DATASETS.TEST = (test_dataset,) if test_dataset else ()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def train_on_smoke_world(tmp_path, config: str, name: str, *opts: str) -> list:
    """``train_net.py`` (in this process) with ``configs/toy/<config>`` on the quick start's small
    smoke world registered as ``name`` and its CLIP: a few iterations of batch 4, then GZS3 and
    ZS3 evaluation, outputs in ``tmp_path``. Asserts finite GZS3 metrics in [0, 100], a ZS3
    result and the final checkpoint; returns the logged rows of ``metrics.json``."""
    import json
    import runpy

    import numpy as np

    from zsmask.data.toy_world import register_toy_world
    from zsmask.toy import prepare_toy_world

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    quickstart = runpy.run_path(os.path.join(root, "tools", "quickstart.py"))
    world, recipe = quickstart["SMOKE_WORLD"], quickstart["SMOKE_CLIP"]
    register_toy_world(name, world)
    prepared = prepare_toy_world(world, recipe, print_fn=lambda *_: None)
    train_net = runpy.run_path(os.path.join(root, "train_net.py"))
    results = train_net["cli"]([
        "--config-file", os.path.join(root, "configs", "toy", config),
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "MODEL.CLIP.PRETRAINED", prepared["clip_weights"],
        "SOLVER.IMS_PER_BATCH", "4", "DATASETS.TRAIN", f"('{name}_train',)", "DATASETS.TEST", f"('{name}_test',)",
        *opts])
    gzs3 = results[f"{name}_test"]["sem_seg"]
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU"):
        assert np.isfinite(gzs3[key]) and 0 <= gzs3[key] <= 100
    assert f"{name}_test_zs3" in results
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
    with open(os.path.join(str(tmp_path), "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_tiny_model_files(root, name: str, classes=("cat", "dog", "grass", "sheep"), unseen=("sheep",)):
    """A tiny trained-model bundle on disk, as users have after training: the zero-shot split
    ``name`` (``classes``, ``unseen`` ones held out) registered on a small folder, ``config.yaml``
    (the :func:`tiny_model_cfg` model trained on ``<name>_train``, tested on ``<name>_test``,
    test images resized to 64) and ``model.pth`` (its seeded initial weights, saved by zsmask's
    checkpointer as training does: without the frozen CLIP). Returns ``(config_path, weights_path)``."""
    import torch
    from detectron2.modeling import build_model

    import zsmask.modeling  # noqa: F401
    from zsmask.data import SemSegFolder, register_zero_shot_split
    from zsmask.engine import SlimCheckpointer

    root = str(root)
    labels = [np.array([[0, 1], [2, 3]], dtype=np.uint8).repeat(16, 0).repeat(16, 1)] * 2
    folder = SemSegFolder(*write_sem_seg_folder(os.path.join(root, "data"), labels))
    register_zero_shot_split(name, list(classes), unseen_classes=list(unseen), train=folder, test=folder,
                             overwrite=True)  # a module fixture can be set up twice in one xdist worker
    cfg = tiny_model_cfg(root, train_dataset=f"{name}_train", test_dataset=f"{name}_test")
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    config_path = os.path.join(root, "config.yaml")
    with open(config_path, "w") as f:
        f.write(cfg.dump())
    torch.manual_seed(0)
    model = build_model(cfg)
    SlimCheckpointer(model, save_dir=root).save("model")
    return config_path, os.path.join(root, "model.pth")
