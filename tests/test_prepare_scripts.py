"""The dataset preparation scripts on small raw inputs fabricated in the official formats,
and the built-in datasets loading their output (or explaining what is missing)."""
import importlib.util
import os
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image
from scipy.io import savemat

from zsmask.data import DatasetNotFoundError, ZeroShotSemSegDatasetMapper, register_all_builtin

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", "datasets", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # as a normal import would, so worker processes can unpickle its functions
    spec.loader.exec_module(mod)
    return mod


def _jpg(path, h=6, w=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _write_list(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(ids) + "\n")


@pytest.fixture
def restore_builtin():
    yield
    register_all_builtin(overwrite=True)


def test_prepare_voc(tmp_path, restore_builtin):
    root = str(tmp_path)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
    voc_train, voc_val, sbd_train, sbd_val = ["v1", "v2"], ["v3", "s3"], ["s1", "v1"], ["s2", "s3"]
    palette = [0, 0, 0, 128, 0, 0] + [7] * (256 * 3 - 6)
    raw = np.array([[0, 1, 15, 20], [255, 16, 2, 0], [19, 19, 5, 255]], np.uint8)  # 3x4
    for i in voc_train + voc_val:
        p = Image.fromarray(raw, mode="P")
        p.putpalette(palette)
        os.makedirs(os.path.join(voc, "SegmentationClass"), exist_ok=True)
        p.save(os.path.join(voc, "SegmentationClass", f"{i}.png"))
    sbd_raw = np.array([[3, 3, 0, 0], [17, 17, 0, 0], [0, 0, 0, 1]], np.uint8)
    for i in sbd_train + sbd_val:
        os.makedirs(os.path.join(sbd, "cls"), exist_ok=True)
        savemat(os.path.join(sbd, "cls", f"{i}.mat"), {"GTcls": {"Segmentation": sbd_raw, "Boundaries": np.zeros(1)}})
    for i in set(voc_train + voc_val + sbd_train + sbd_val):
        _jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), 3, 4)
    _write_list(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), voc_train)
    _write_list(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), voc_val)
    _write_list(os.path.join(sbd, "train.txt"), sbd_train)
    _write_list(os.path.join(sbd, "val.txt"), sbd_val)

    assert _load_script("prepare_voc_sem_seg").main(["--root", root, "--workers", "1"]) == 0
    out = os.path.join(voc, "annotations_detectron2")
    # train_aug = (VOC train + SBD train + SBD val) - VOC val
    assert sorted(os.listdir(os.path.join(out, "train_aug"))) == ["s1.png", "s2.png", "v1.png", "v2.png"]
    assert sorted(os.listdir(os.path.join(out, "val"))) == ["s3.png", "v3.png"]
    v1 = np.asarray(Image.open(os.path.join(out, "train_aug", "v1.png")))
    assert v1.tolist() == [[255, 0, 14, 19], [255, 15, 1, 255], [18, 18, 4, 255]]
    s1 = np.asarray(Image.open(os.path.join(out, "train_aug", "s1.png")))
    assert s1.tolist() == [[2, 2, 255, 255], [16, 16, 255, 255], [255, 255, 255, 0]]
    assert Image.open(os.path.join(out, "val", "s3.png")).mode == "L"

    register_all_builtin(root, overwrite=True)
    train = DatasetCatalog.get("voc_zs_train")
    assert [os.path.basename(d["file_name"]) for d in train] == ["s1.jpg", "s2.jpg", "v1.jpg", "v2.jpg"]
    sem = ZeroShotSemSegDatasetMapper(is_train=True, augmentations=[])(train[2])["sem_seg"]
    # VOC train vocabulary: 15 seen classes; unseen pottedplant(15) .. tvmonitor(19) -> ignore
    assert sem.tolist() == [[255, 0, 14, 255], [255, 255, 1, 255], [255, 255, 4, 255]]
    assert len(DatasetCatalog.get("voc_zs_test")) == 2


def test_prepare_coco_stuff(tmp_path, restore_builtin):
    root = str(tmp_path)
    coco = os.path.join(root, "coco")
    raw = np.array([[0, 11, 91, 181], [255, 20, 24, 26]], np.uint8)  # person, unused 12, banner, wood
    for split, ids in (("train2017", ["000000000001", "000000000002"]), ("val2017", ["000000000003"])):
        for i in ids:
            os.makedirs(os.path.join(coco, "stuffthingmaps_trainval2017", split), exist_ok=True)
            Image.fromarray(raw, mode="L").save(os.path.join(coco, "stuffthingmaps_trainval2017", split, f"{i}.png"))
            _jpg(os.path.join(coco, split, f"{i}.jpg"), 2, 4)
    assert _load_script("prepare_coco_stuff_164k_sem_seg").main(["--root", root, "--workers", "2"]) == 0
    out = np.asarray(Image.open(os.path.join(coco, "stuffthingmaps_detectron2", "train2017", "000000000001.png")))
    # raw = COCO id - 1: 0 person->0, 11 (id 12, unused)->255, 91 (banner 92)->80, 181 (wood 182)->170,
    # 20 (cow 21)->19, 24 (giraffe 25)->23, 26 (backpack 27)->24
    assert out.tolist() == [[0, 255, 80, 170], [255, 19, 23, 24]]
    register_all_builtin(root, overwrite=True)
    assert len(DatasetCatalog.get("coco_stuff_zs_train")) == 2 and len(DatasetCatalog.get("coco_stuff_zs_test")) == 1


def test_prepare_pascal_context(tmp_path, restore_builtin, capsys):
    root = str(tmp_path)
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    from zsmask.data.builtin_meta import PCONTEXT59_CLASSES

    # a 459-style labels.txt: 59 classes interleaved with others, ids not in 59-class order
    names = []
    for c in PCONTEXT59_CLASSES:
        names += [f"other_{c}", c]
    os.makedirs(voc, exist_ok=True)
    with open(os.path.join(voc, "labels.txt"), "w") as f:
        f.write("\n".join(f"{i + 1}: {n}" for i, n in enumerate(names)) + "\n")
    aeroplane, wood, other = names.index("aeroplane") + 1, names.index("wood") + 1, names.index("other_cat") + 1
    label_map = np.array([[0, aeroplane, wood], [other, wood, aeroplane]], np.uint16)
    os.makedirs(os.path.join(voc, "trainval"))
    for i in ("2008_000001", "2008_000002", "2008_000003"):
        savemat(os.path.join(voc, "trainval", f"{i}.mat"), {"LabelMap": label_map})
        _jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), 2, 3)
    _write_list(os.path.join(voc, "ImageSets", "Main", "train.txt"), ["2008_000001", "2008_000002", "2008_000009"])
    _write_list(os.path.join(voc, "ImageSets", "Main", "val.txt"), ["2008_000003"])
    assert _load_script("prepare_pascal_context_59").main(["--root", root, "--workers", "1"]) == 0
    assert "1 ids without .mat skipped" in capsys.readouterr().out
    out = np.asarray(Image.open(os.path.join(voc, "annotations_ctx59", "train", "2008_000001.png")))
    assert out.tolist() == [[255, 0, 58], [255, 58, 0]]
    register_all_builtin(root, overwrite=True)
    assert len(DatasetCatalog.get("pcontext_zs_train")) == 2 and len(DatasetCatalog.get("pcontext_zs_test_zs3")) == 1


@pytest.mark.parametrize(
    "script, needle",
    [
        ("prepare_voc_sem_seg", "VOCtrainval_11-May-2012.tar"),
        ("prepare_coco_stuff_164k_sem_seg", "stuffthingmaps_trainval2017.zip"),
        ("prepare_pascal_context_59", "trainval.tar.gz"),
    ],
)
def test_prepare_scripts_explain_missing_raw_data(tmp_path, capsys, script, needle):
    assert _load_script(script).main(["--root", str(tmp_path), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and needle in err and str(tmp_path) in err


def test_prepare_voc_reports_missing_sbd(tmp_path, capsys):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True)
    _write_list(str(voc / "ImageSets" / "Segmentation" / "train.txt"), ["a"])
    _write_list(str(voc / "ImageSets" / "Segmentation" / "val.txt"), ["b"])
    assert _load_script("prepare_voc_sem_seg").main(["--root", str(tmp_path)]) == 1
    assert "--without-sbd" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, layout, script",
    [
        ("voc_zs_train", "annotations_detectron2/train_aug", "prepare_voc_sem_seg.py"),
        ("coco_stuff_zs_test", "stuffthingmaps_detectron2/val2017", "prepare_coco_stuff_164k_sem_seg.py"),
        ("pcontext_zs_test_zs3", "annotations_ctx59/val", "prepare_pascal_context_59.py"),
    ],
)
def test_missing_builtin_dataset_explains_layout(tmp_path, restore_builtin, monkeypatch, name, layout, script):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all_builtin(overwrite=True)
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert str(tmp_path) in msg and "$DETECTRON2_DATASETS" in msg and layout in msg and script in msg
