"""Shared fixtures: real files on disk in pytest's tmp folders, real detectron2 catalogs."""
import os
import uuid

import numpy as np
import pytest
from PIL import Image


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
