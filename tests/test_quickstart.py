"""The README's main job: a generated split through the whole data path and the evaluator."""
import json
import os
import runpy

import numpy as np
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsmask.data.colour_world import COLOUR_CLASSES, generate_colour_world

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_colour_world_is_deterministic_and_cached(tmp_path):
    a = generate_colour_world(num_train=2, num_test=1, size=32, root=str(tmp_path / "a"))
    b = generate_colour_world(num_train=2, num_test=1, size=32, root=str(tmp_path / "b"))
    la = np.asarray(Image.open(os.path.join(a, "train", "labels", "00001.png")))
    lb = np.asarray(Image.open(os.path.join(b, "train", "labels", "00001.png")))
    assert np.array_equal(la, lb)
    assert set(np.unique(la).tolist()) <= set(range(len(COLOUR_CLASSES))) | {255}
    mtime = os.path.getmtime(os.path.join(a, "params.json"))
    assert generate_colour_world(num_train=2, num_test=1, size=32, root=str(tmp_path / "a")) == a
    assert os.path.getmtime(os.path.join(a, "params.json")) == mtime  # reused, not regenerated


def test_quickstart_main_job(tmp_path, capsys):
    quickstart = runpy.run_path(os.path.join(ROOT, "tools", "quickstart.py"))
    assert quickstart["main"](["--output-dir", str(tmp_path)]) == 0
    assert MetadataCatalog.get("quickstart_train").stuff_classes == ["red", "green", "blue", "yellow", "magenta", "gray"]
    assert len(DatasetCatalog.get("quickstart_test")) == 16
    with open(tmp_path / "zero_shot_sem_seg_quickstart_test.json") as f:
        gzs3 = json.load(f)
    # the name-derived classifier finds the unseen colours it was never "trained" on
    assert gzs3["mIoU_unseen"] > 80 and gzs3["mIoU_seen"] > 80
    assert gzs3["hIoU"] == 2 * gzs3["mIoU_seen"] * gzs3["mIoU_unseen"] / (gzs3["mIoU_seen"] + gzs3["mIoU_unseen"])
    with open(tmp_path / "zero_shot_sem_seg_quickstart_test_zs3.json") as f:
        assert set(json.load(f)) >= {"mIoU", "mIoU_unseen", "IoU-cyan", "IoU-orange"}
    assert "GZS3 hIoU" in capsys.readouterr().out


def test_visualize_split_demo(tmp_path, capsys):
    from zsmask.data.colour_world import register_colour_world

    register_colour_world("vis_world", num_train=1, num_test=2, size=48)
    demo = runpy.run_path(os.path.join(ROOT, "demo", "visualize_split.py"))
    assert demo["main"](["--dataset", "vis_world_test", "--output", str(tmp_path), "--limit", "0"]) == 0
    written = sorted(os.listdir(tmp_path))
    assert written == ["00000.png", "00001.png"]
    assert Image.open(tmp_path / "00000.png").size == (48, 48)
    assert demo["main"](["--dataset", "no_such_set", "--output", str(tmp_path)]) == 2
    assert "vis_world_test" in capsys.readouterr().err
