"""demo/visualize_split.py: the ground truth of a registered variant, unseen classes marked."""
import os
import runpy

import numpy as np
from PIL import Image

from zsmask.data.toy_world import ToyWorldParams, register_toy_world, toy_world_root
from zsmask.visualization import UNSEEN_MARK, marked_metadata

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_visualize_split_demo(tmp_path, capsys, unique_name):
    params = ToyWorldParams(num_train=1, num_val=2, size=48)
    split = register_toy_world(unique_name, params, root=str(tmp_path / "c"))
    names = marked_metadata(split.test).stuff_classes
    assert names[2] == "red checkered object" + UNSEEN_MARK and names[0] == "red plain object"
    demo = runpy.run_path(os.path.join(ROOT, "demo", "visualize_split.py"))
    out = tmp_path / "out"
    assert demo["main"](["--dataset", split.test, "--output", str(out), "--limit", "0"]) == 0
    assert sorted(os.listdir(out)) == ["00000.png", "00001.png"]
    drawn = np.asarray(Image.open(out / "00000.png"))
    assert drawn.shape == (48, 48, 3)
    image = np.asarray(Image.open(os.path.join(toy_world_root(params, str(tmp_path / "c")), "val", "images", "00000.jpg")))
    assert np.abs(drawn.astype(int) - image.astype(int)).mean() > 5  # the labels are drawn over the image
    assert demo["main"](["--dataset", "no_such_set", "--output", str(out)]) == 2
    assert split.test in capsys.readouterr().err
