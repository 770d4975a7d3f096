"""The dataset preparation scripts on small raw inputs fabricated in the official formats,
and the built-in datasets loading their output (or explaining what is missing)."""
import importlib.util
import os
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
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


def _read_png(path):
    with Image.open(path) as img:
        return img.mode, np.asarray(img).astype(np.int64)


def test_prepare_pascal_context_459_writes_16_bit_ids_above_255(tmp_path, restore_builtin, capsys):
    from zsmask.data.builtin_meta import PCONTEXT459_CLASSES

    root = str(tmp_path)
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    os.makedirs(os.path.join(voc, "trainval"))
    with open(os.path.join(voc, "labels.txt"), "w") as f:
        f.write("\n".join(f"{i + 1}: {n}" for i, n in enumerate(PCONTEXT459_CLASSES)) + "\n")
    label_map = np.array([[0, 1, 256], [300, 459, 459]], np.uint16)
    for i in ("2008_000001", "2008_000002"):
        savemat(os.path.join(voc, "trainval", f"{i}.mat"), {"LabelMap": label_map})
        _jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), 2, 3)
    _write_list(os.path.join(voc, "ImageSets", "Main", "val.txt"), ["2008_000001", "2008_000002"])
    script = _load_script("prepare_pascal_context_459")
    assert script.main(["--root", root, "--workers", "1"]) == 0
    mode, out = _read_png(os.path.join(voc, "annotations_ctx459", "val", "2008_000001.png"))
    assert mode.startswith("I") and out.tolist() == [[65535, 0, 255], [299, 458, 458]]
    register_all_builtin(root, overwrite=True)
    test = DatasetCatalog.get("pcontext_459_test")
    assert len(test) == 2 and len(MetadataCatalog.get("pcontext_459_test").stuff_classes) == 459
    sem = ZeroShotSemSegDatasetMapper(is_train=True, augmentations=[])(test[0])["sem_seg"]
    assert sem.tolist() == [[65535, 0, 255], [299, 458, 458]]

    # a name spelt otherwise is reported, the ids still convert
    spelt = ["air conditioner" if n == "airconditioner" else n for n in PCONTEXT459_CLASSES]
    assert spelt != list(PCONTEXT459_CLASSES)
    with open(os.path.join(voc, "labels.txt"), "w") as f:
        f.write("\n".join(f"{i + 1}: {n}" for i, n in enumerate(spelt)) + "\n")
    capsys.readouterr()
    assert script.main(["--root", root, "--workers", "1"]) == 0
    assert "note: 1 names of labels.txt are spelt otherwise" in capsys.readouterr().out
    # a labels.txt of another list (here the 59 classes) and an id above 459 are refused with the reason
    with open(os.path.join(voc, "labels.txt"), "w") as f:
        f.write("\n".join(f"{i + 1}: {n}" for i, n in enumerate(PCONTEXT459_CLASSES[:59])) + "\n")
    assert script.main(["--root", root, "--workers", "1"]) == 1
    assert "holds 59 ids" in capsys.readouterr().err
    with open(os.path.join(voc, "labels.txt"), "w") as f:
        f.write("\n".join(f"{i + 1}: {n}" for i, n in enumerate(PCONTEXT459_CLASSES)) + "\n")
    savemat(os.path.join(voc, "trainval", "2008_000003.mat"), {"LabelMap": np.array([[1, 460]], np.uint16)})
    _jpg(os.path.join(voc, "JPEGImages", "2008_000003.jpg"), 1, 2)
    _write_list(os.path.join(voc, "ImageSets", "Main", "val.txt"), ["2008_000001", "2008_000002", "2008_000003"])
    assert script.main(["--root", root, "--workers", "1"]) == 1
    assert "label id 460 is outside the expected range 0..459" in capsys.readouterr().err


def test_prepare_ade20k_150(tmp_path, restore_builtin):
    root = str(tmp_path)
    ade = os.path.join(root, "ADEChallengeData2016")
    raw = np.array([[0, 1, 150], [2, 149, 0]], np.uint8)
    for split, names in (("training", ["ADE_train_00000001"]), ("validation", ["ADE_val_00000001", "ADE_val_00000002"])):
        for n in names:
            os.makedirs(os.path.join(ade, "annotations", split), exist_ok=True)
            Image.fromarray(raw, mode="L").save(os.path.join(ade, "annotations", split, n + ".png"))
            _jpg(os.path.join(ade, "images", split, n + ".jpg"), 2, 3)
    assert _load_script("prepare_ade20k_150").main(["--root", root, "--workers", "1"]) == 0
    mode, out = _read_png(os.path.join(ade, "annotations_detectron2", "validation", "ADE_val_00000002.png"))
    assert mode == "L" and out.tolist() == [[255, 0, 149], [1, 148, 255]]
    register_all_builtin(root, overwrite=True)
    assert len(DatasetCatalog.get("ade20k_150_test")) == 2
    assert len(MetadataCatalog.get("ade20k_150_test").stuff_classes) == 150


def _ade_seg_png(path, object_ids):
    """An ADE20K full-release *_seg.png: class = R / 10 * 256 + G."""
    ids = np.asarray(object_ids, np.int64)
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[..., 0] = (ids // 256) * 10 + 3  # R / 10 floors away the 3
    rgb[..., 1] = ids % 256
    rgb[..., 2] = 7  # instance
    Image.fromarray(rgb, mode="RGB").save(path)


def test_prepare_ade20k_847_decodes_ids_resizes_and_writes_16_bit(tmp_path, restore_builtin):
    from zsmask.data.builtin_meta import ADE20K_847_CLASSES, ADE20K_847_FULL_IDS

    root = str(tmp_path)
    scene = os.path.join(root, "ADE20K_2021_17_01", "images", "ADE", "validation", "cultural", "abbey")
    os.makedirs(scene)
    last, first = ADE20K_847_FULL_IDS[846], ADE20K_847_FULL_IDS[0]
    other = next(i for i in range(1, 4000) if i not in set(ADE20K_847_FULL_IDS))
    small = np.array([[0, first, last], [other, last, first]])
    _ade_seg_png(os.path.join(scene, "ADE_val_00000001_seg.png"), small)
    _jpg(os.path.join(scene, "ADE_val_00000001.jpg"), 2, 3)
    big = np.full((600, 1030), last)  # shorter side 600 > 512: resized to 512 x 879
    big[:, :515] = first
    _ade_seg_png(os.path.join(scene, "ADE_val_00000002_seg.png"), big)
    _jpg(os.path.join(scene, "ADE_val_00000002.jpg"), 600, 1030)
    _jpg(os.path.join(scene, "ADE_val_00000003.jpg"), 2, 3)  # no *_seg.png: not an annotated image
    for stem, (h, w) in (("ADE_val_00000004", (700, 520)), ("ADE_val_00000005", (512, 800))):
        _ade_seg_png(os.path.join(scene, stem + "_seg.png"), np.full((h, w), first))  # portrait; short side 512
        _jpg(os.path.join(scene, stem + ".jpg"), h, w)
    script = _load_script("prepare_ade20k_847")
    assert script.main(["--root", root, "--workers", "1"]) == 0
    out = os.path.join(root, "ADE20K_2021_17_01", "annotations_detectron2", "validation")
    mode, lab = _read_png(os.path.join(out, "ADE_val_00000001.png"))
    assert mode.startswith("I") and lab.tolist() == [[65535, 0, 846], [65535, 846, 0]]
    _, lab = _read_png(os.path.join(out, "ADE_val_00000002.png"))
    images = os.path.join(root, "ADE20K_2021_17_01", "images_detectron2", "validation")
    sizes = {}
    for name in sorted(os.listdir(images)):
        with Image.open(os.path.join(images, name)) as img:
            sizes[name[:-4]] = img.size
    assert sizes == {"ADE_val_00000001": (3, 2), "ADE_val_00000002": (879, 512), "ADE_val_00000004": (512, 689),
                     "ADE_val_00000005": (800, 512)}  # (width, height); the short side 512 is kept as it is
    assert lab.shape == (512, 879) and (lab[:, :430] == 0).all() and (lab[:, 450:] == 846).all()  # 515 / 1030 * 879
    assert _read_png(os.path.join(out, "ADE_val_00000004.png"))[1].shape == (689, 512)

    # resumable: a label lost (its image kept) and a killed run's leftover are redone / removed
    os.remove(os.path.join(out, "ADE_val_00000001.png"))
    with open(os.path.join(out, "ADE_val_00000001.png.tmp-999"), "wb") as f:
        f.write(b"half a png")
    assert script.main(["--root", root, "--workers", "1"]) == 0
    assert sorted(os.listdir(out)) == [s + ".png" for s in sorted(sizes)]
    assert _read_png(os.path.join(out, "ADE_val_00000001.png"))[1].tolist() == [[65535, 0, 846], [65535, 846, 0]]
    register_all_builtin(root, overwrite=True)
    test = DatasetCatalog.get("ade20k_847_test")
    assert len(test) == 4 and MetadataCatalog.get("ade20k_847_test").stuff_classes == list(ADE20K_847_CLASSES)


def test_prepare_voc_writes_the_background_variant_for_voc_21(tmp_path, restore_builtin):
    root = str(tmp_path)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    raw = np.array([[0, 1, 20], [255, 16, 0]], np.uint8)
    os.makedirs(os.path.join(voc, "SegmentationClass"))
    for i in ("a", "b"):
        Image.fromarray(raw, mode="L").save(os.path.join(voc, "SegmentationClass", f"{i}.png"))
        _jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), 2, 3)
    _write_list(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), ["a"])
    _write_list(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), ["b"])
    assert _load_script("prepare_voc_sem_seg").main(["--root", root, "--workers", "1", "--without-sbd"]) == 0
    _, bg = _read_png(os.path.join(voc, "annotations_voc21", "val", "b.png"))
    _, plain = _read_png(os.path.join(voc, "annotations_detectron2", "val", "b.png"))
    assert bg.tolist() == [[0, 1, 20], [255, 16, 0]] and plain.tolist() == [[255, 0, 19], [255, 15, 255]]
    register_all_builtin(root, overwrite=True)
    assert MetadataCatalog.get("voc_21_test").stuff_classes[0] == "background"
    for name, size in (("voc_21_test", 21), ("voc_20_test", 20)):
        assert len(MetadataCatalog.get(name).stuff_classes) == size and len(DatasetCatalog.get(name)) == 1
        assert MetadataCatalog.get(name).unseen_classes == []


def test_open_vocabulary_sets_are_registered_with_their_vocabularies():
    from zsmask.data.builtin_meta import PCONTEXT59_CLASSES

    sizes = {"ade20k_150_test": 150, "ade20k_847_test": 847, "pcontext_459_test": 459, "pcontext_59_test": 59,
             "voc_20_test": 20, "voc_21_test": 21, "coco_stuff_171_train": 171, "coco_stuff_171_test": 171}
    for name, size in sizes.items():
        meta = MetadataCatalog.get(name)
        assert len(meta.stuff_classes) == size == len(set(meta.stuff_classes)), name
        assert meta.unseen_classes == [] and meta.seen_classes == list(range(size)), name
        assert meta.ignore_label == (65535 if size in (459, 847) else 255), name
    assert "pcontext_59_test_zs3" not in DatasetCatalog.list()
    assert set(PCONTEXT59_CLASSES) <= set(MetadataCatalog.get("pcontext_459_test").stuff_classes)


@pytest.mark.parametrize(
    "script, needle",
    [
        ("prepare_voc_sem_seg", "VOCtrainval_11-May-2012.tar"),
        ("prepare_coco_stuff_164k_sem_seg", "stuffthingmaps_trainval2017.zip"),
        ("prepare_pascal_context_59", "trainval.tar.gz"),
        ("prepare_pascal_context_459", "trainval.tar.gz"),
        ("prepare_ade20k_150", "ADEChallengeData2016.zip"),
        ("prepare_ade20k_847", "ADE20K_2021_17_01.zip"),
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
        ("ade20k_847_test", "annotations_detectron2/validation", "prepare_ade20k_847.py"),
        ("pcontext_459_test", "annotations_ctx459/val", "prepare_pascal_context_459.py"),
        ("voc_21_test", "annotations_voc21/val", "prepare_voc_sem_seg.py"),
    ],
)
def test_missing_builtin_dataset_explains_layout(tmp_path, restore_builtin, monkeypatch, name, layout, script):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all_builtin(overwrite=True)
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert str(tmp_path) in msg and "$DETECTRON2_DATASETS" in msg and layout in msg and script in msg
