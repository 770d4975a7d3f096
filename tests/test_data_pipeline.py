"""Dataset mapper and image / label reading on real files."""
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from zsmask.config import add_zsmask_config
from zsmask.data import (
    DatasetNotFoundError,
    ImageReadError,
    LabelFileError,
    SemSegFolder,
    ZeroShotSemSegDatasetMapper,
    read_image,
    read_sem_seg,
    register_open_vocabulary_set,
    register_zero_shot_split,
)
from zsmask.data.augmentations import PhotometricDistortion, build_sem_seg_augmentations

from conftest import write_sem_seg_folder

CLASSES = ["a", "b", "c", "d"]  # unseen: b, d


def _label():
    lab = np.zeros((8, 10), np.uint8)
    lab[:, 2:4] = 1
    lab[:, 4:6] = 2
    lab[:, 6:8] = 3
    lab[:, 9] = 255
    return lab


@pytest.fixture
def split(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [_label(), _label()])
    folder = SemSegFolder(img, gt)
    return register_zero_shot_split(unique_name, CLASSES, ["b", "d"], train=folder, test=folder)


def _plain_mapper(is_train, size_divisibility=-1):
    return ZeroShotSemSegDatasetMapper(is_train=is_train, augmentations=[], size_divisibility=size_divisibility)


def test_unseen_pixels_become_ignore_only_in_train(split):
    mapper = _plain_mapper(True)
    rec = DatasetCatalog.get(split.train)[0]
    out = mapper(rec)
    sem = out["sem_seg"].numpy()
    # train vocabulary ["a", "c"]: a -> 0, c -> 1, unseen b and d -> 255
    assert MetadataCatalog.get(split.train).stuff_classes == ["a", "c"]
    assert (sem[:, :2] == 0).all() and (sem[:, 4:6] == 1).all()
    assert (sem[:, 2:4] == 255).all() and (sem[:, 6:8] == 255).all() and (sem[:, 9] == 255).all()
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert out["instances"].gt_masks.shape == (2, 8, 10)
    assert torch.equal(out["instances"].gt_masks[1], torch.as_tensor(sem == 1))
    # the file itself is untouched
    raw = np.asarray(Image.open(rec["sem_seg_file_name"]))
    assert (raw == _label()).all()

    test_out = mapper(DatasetCatalog.get(split.test)[0])
    assert np.array_equal(test_out["sem_seg"].numpy(), _label().astype(np.int64))

    zs3 = mapper(DatasetCatalog.get(split.zs3)[0])["sem_seg"].numpy()
    assert MetadataCatalog.get(split.zs3).stuff_classes == ["b", "d"]
    assert (zs3[:, 2:4] == 0).all() and (zs3[:, 6:8] == 1).all()
    assert (zs3[:, :2] == 255).all() and (zs3[:, 4:6] == 255).all()


def test_padding_uses_ignore_for_labels(split):
    out = _plain_mapper(True, size_divisibility=16)(DatasetCatalog.get(split.test)[0])
    assert out["image"].shape == (3, 16, 16) and out["sem_seg"].shape == (16, 16)
    assert (out["sem_seg"][8:, :] == 255).all() and (out["image"][:, 8:, :] == 0).all()
    assert out["height"] == 8 and out["width"] == 10


def test_test_mapper_keeps_original_size_info(split):
    cfg = add_zsmask_config(get_cfg())
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 16, 100
    cfg.DATASETS.TEST = (split.test,)
    out = ZeroShotSemSegDatasetMapper(cfg, is_train=False)(DatasetCatalog.get(split.test)[0])
    assert out["image"].shape == (3, 16, 20) and (out["height"], out["width"]) == (8, 10)
    assert "sem_seg" not in out


def test_train_augmentations_from_config(split):
    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "voc", "Base-VOC.yaml"))
    cfg.INPUT.CROP.SIZE = (6, 6)
    cfg.INPUT.MIN_SIZE_TRAIN = (8,)
    cfg.INPUT.SIZE_DIVISIBILITY = 8
    cfg.DATASETS.TRAIN = (split.train,)
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    out = mapper(DatasetCatalog.get(split.train)[0])
    assert out["image"].shape == (3, 8, 8)
    assert set(torch.unique(out["sem_seg"]).tolist()) <= {0, 1, 255}
    assert (out["sem_seg"][6:, :] == 255).all()  # crop 6x6 padded to 8x8 with ignore
    names = [type(a).__name__ for a in build_sem_seg_augmentations(cfg, True)]
    assert names == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "PhotometricDistortion", "RandomFlip"]


def test_photometric_distortion_changes_image_not_shape():
    np.random.seed(3)
    img = np.random.randint(0, 255, (12, 12, 3), dtype=np.uint8)
    outs = [PhotometricDistortion("RGB").get_transform(img).apply_image(img) for _ in range(8)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, img) for o in outs)


def test_size_mismatch_reported_with_paths(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [_label()], image_sizes={0: (9, 10)})
    out = register_zero_shot_split(unique_name, CLASSES, ["b"], train=SemSegFolder(img, gt), test=SemSegFolder(img, gt))
    for variant, is_train in ((out.train, True), (out.test, False)):
        rec = DatasetCatalog.get(variant)[0]
        with pytest.raises(LabelFileError) as e:
            _plain_mapper(is_train)(rec)
        assert rec["sem_seg_file_name"] in str(e.value) and rec["file_name"] in str(e.value)
        assert "8x10" in str(e.value) and "9x10" in str(e.value)


def test_unknown_label_ids_and_rgb_labels_rejected(tmp_path, unique_name):
    bad = _label()
    bad[0, 0] = 17
    img, gt = write_sem_seg_folder(tmp_path, [bad])
    out = register_zero_shot_split(unique_name, CLASSES, ["b"], train=SemSegFolder(img, gt), test=SemSegFolder(img, gt))
    rec = DatasetCatalog.get(out.train)[0]
    with pytest.raises(LabelFileError, match=r"ids \[17\].*ignore label 255.*0\.\.3"):
        _plain_mapper(True)(rec)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(LabelFileError, match="mode RGB.*single-channel"):
        read_sem_seg(str(rgb))


def test_read_image_conversions(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    out = read_image(str(tmp_path / "gray.png"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8 and (out[..., 1] == gray).all()

    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(str(tmp_path / "rgba.png"))
    assert out.shape == (5, 6, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()
    assert (read_image(str(tmp_path / "rgba.png"), format="BGR")[..., 2] == 200).all()

    deep = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = read_image(str(tmp_path / "deep.png"))
    assert out.shape == (2, 2, 3) and out[..., 0].tolist() == [[0, 255], [128, 1]]

    pal = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert read_image(str(tmp_path / "pal.png")).tolist() == [[[10, 20, 30], [40, 50, 60]]]


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(str(tmp_path / "nope.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        read_image(str(corrupt))
    good = tmp_path / "trunc.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_image(str(good))


def test_missing_images_for_labels_reported(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [_label(), _label()])
    os.remove(os.path.join(img, "0001.jpg"))
    out = register_zero_shot_split(unique_name, CLASSES, ["b"], test=SemSegFolder(img, gt))
    with pytest.raises(DatasetNotFoundError, match=r"1 of 2 images.*0001\.jpg"):
        DatasetCatalog.get(out.test)


def test_open_vocabulary_set_with_16_bit_labels(tmp_path, unique_name):
    """300 classes, ids above 255 in 16-bit PNGs, 65535 = ignore: both variants hold every
    class, there is no ZS3 variant, and the evaluator reports no split metrics."""
    from zsmask.evaluation import GeneralizedZeroShotSemSegEvaluator

    names = [f"class {i}" for i in range(300)]
    label = np.zeros((6, 8), np.uint16)
    label[:, 2:4], label[:, 4:6], label[:, 6:] = 257, 299, 65535
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(tmp_path / "images" / "0000.jpg")
    Image.fromarray(label).save(tmp_path / "labels" / "0000.png")
    assert Image.open(tmp_path / "labels" / "0000.png").mode.startswith("I")
    folder = SemSegFolder(str(tmp_path / "images"), str(tmp_path / "labels"))
    out = register_open_vocabulary_set(unique_name, names, train=folder, test=folder, ignore_label=65535)
    assert (out.train, out.test) == (f"{unique_name}_train", f"{unique_name}_test")
    assert f"{unique_name}_test_zs3" not in DatasetCatalog.list()
    for dataset in (out.train, out.test):
        meta = MetadataCatalog.get(dataset)
        assert meta.stuff_classes == names and meta.unseen_classes == [] and len(meta.seen_classes) == 300
    sem = _plain_mapper(True)(DatasetCatalog.get(out.train)[0])["sem_seg"].numpy()
    assert (sem[:, :2] == 0).all() and (sem[:, 2:4] == 257).all() and (sem[:, 4:6] == 299).all()
    assert (sem[:, 6:] == 65535).all()

    evaluator = GeneralizedZeroShotSemSegEvaluator(out.test, distributed=False)
    pred = torch.zeros(300, 6, 8)
    pred[0, :, :4] = 1.0  # class 0 everywhere on the left half: 257 is missed
    pred[299, :, 4:] = 1.0
    evaluator.process([DatasetCatalog.get(out.test)[0]], [{"sem_seg": pred}])
    res = evaluator.evaluate()["sem_seg"]
    assert not {"mIoU_seen", "mIoU_unseen", "hIoU"} & set(res)
    assert res["IoU-class 0"] == pytest.approx(50.0) and res["IoU-class 257"] == 0.0
    assert res["IoU-class 299"] == pytest.approx(100.0) and res["mIoU"] == pytest.approx(50.0)
    assert "open vocabulary" in evaluator.format_table(zero_shot_metrics_of(evaluator))

    with pytest.raises(ValueError, match="give train and/or test data"):
        register_open_vocabulary_set(unique_name + "_none", names)
    with pytest.raises(ValueError, match="ignore_label=255 is also a class id"):
        register_open_vocabulary_set(unique_name + "_clash", names, test=folder)
    with pytest.raises(Exception, match="duplicate class names.*'x'"):
        register_open_vocabulary_set(unique_name + "_dup", ["x", "y", "x"], test=folder)


def zero_shot_metrics_of(evaluator):
    from zsmask.evaluation import zero_shot_metrics

    return zero_shot_metrics(evaluator._conf, evaluator.seen_ids, evaluator.unseen_ids)
