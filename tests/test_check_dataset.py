"""tools/check_dataset.py finds each fault planted in a fabricated dataset, and passes the toy world."""
import json
import os
import runpy

import numpy as np
import pytest
from PIL import Image

from zsmask.data import SemSegFolder, register_zero_shot_split
from zsmask.data.check import check_dataset

from conftest import write_sem_seg_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, UNSEEN = ["sky", "grass", "road", "cow"], ["cow"]


@pytest.fixture(scope="module")
def check_main():
    return runpy.run_path(os.path.join(ROOT, "tools", "check_dataset.py"))["main"]


@pytest.fixture
def faulty(tmp_path, unique_name):
    """12 images; 0001 truncated, 0003's label unreadable, 0005's label 40x48 for a 48x48 image,
    0007's label holds id 9 (4 classes), 0009's label is all ignore."""
    labels = []
    for i in range(12):
        lab = np.zeros((48, 48), np.uint8)
        lab[24:] = 1
        lab[:, :8] = 3 if i % 2 else 2
        labels.append(lab)
    labels[7][0:4, 0:4] = 9
    labels[9][:] = 255
    img, lab = write_sem_seg_folder(str(tmp_path / "data"), labels, image_sizes={5: (40, 48)})
    with open(os.path.join(img, "0001.jpg"), "r+b") as f:
        f.truncate(300)
    with open(os.path.join(lab, "0003.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    register_zero_shot_split(unique_name, CLASSES, UNSEEN, train=SemSegFolder(img, lab), test=SemSegFolder(img, lab))
    return unique_name, img, lab


def test_every_planted_fault_is_found_and_the_exit_status_is_1(faulty, check_main, tmp_path, capsys):
    name, img, lab = faulty
    status = check_main(["--dataset", f"{name}_test", "--workers", "2", "--output", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert status == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    found = {kind: [os.path.basename(p) for p, _ in entries] for kind, entries in report["problems"].items()}
    assert found == {"unreadable image": ["0001.jpg"], "unreadable label": ["0003.png"], "size mismatch": ["0005.png"],
                     "unknown label ids": ["0007.png"], "no annotated pixel": ["0009.png"], "no label file": []}
    assert "ids [9] are neither a class of the dataset (0..3) nor the ignore label 255" in out
    assert "5 problems" in out and (tmp_path / "report" / "class_pixels.png").stat().st_size > 1000
    # pixels of every label read (0003's is not; 0009's is all ignore; 0007's id-9 block is not a class)
    counted = [i for i in range(12) if i not in (3, 9)]
    assert report["class_pixels"]["cow"] == sum(48 * 8 for i in counted if i % 2) - 4 * 4
    assert report["class_pixels"]["grass"] == 24 * 40 * len(counted)
    assert report["unseen_classes"] == ["cow"]
    # the train variant: the unseen class is held out (ignored), not an unknown id
    train = check_dataset(f"{name}_train")
    assert "cow" not in train.class_names and train.held_out_pixels == report["class_pixels"]["cow"]
    assert [os.path.basename(p) for p, _ in train.problems["unknown label ids"]] == ["0007.png"]


def test_bad_arguments_and_a_clean_toy_world(check_main, capsys):
    from zsmask.data.toy_world import SMOKE_TOY_WORLD, generate_toy_world

    assert check_main(["--dataset", "no_such_dataset"]) == 2
    assert "is not registered" in capsys.readouterr().err
    assert check_main(["--dataset", "toy_world_smoke_test", "--workers", "0"]) == 2
    generate_toy_world(SMOKE_TOY_WORLD, print_fn=lambda *_: None)
    assert check_main(["--dataset", "toy_world_smoke_test"]) == 0
    out = capsys.readouterr().out
    assert "toy_world_smoke_test: " in out and "unseen classes: 6," in out and out.rstrip().splitlines()[-2] == "  OK"
    assert check_main(["--dataset", "toy_world_smoke_train", "--workers", "2"]) == 0
    assert "held-out unseen classes" in capsys.readouterr().out
