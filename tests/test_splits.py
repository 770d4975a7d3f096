"""Split definitions, built-in benchmark splits and registration of train / test / ZS3 variants."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsmask.data import (
    BUILTIN_SPLITS,
    SemSegFolder,
    SplitDefinitionError,
    ZeroShotSplit,
    register_zero_shot_split,
    vocabulary_label_map,
)
from zsmask.data.splits import UNMAPPED

from conftest import write_sem_seg_folder

# (name, #classes, #seen, unseen ids) as in DESIGN.md "Standard zero-shot splits"
EXPECTED = {
    "voc_zs": (20, 15, [15, 16, 17, 18, 19]),
    "coco_stuff_zs": (171, 156, [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]),
    "pcontext_zs": (59, 49, [0, 6, 7, 14, 19, 24, 31, 33, 48, 54]),
}
UNSEEN_NAMES = {
    "voc_zs": ["pottedplant", "sheep", "sofa", "train", "tvmonitor"],
    "coco_stuff_zs": ["cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
                      "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete"],
    "pcontext_zs": ["aeroplane", "bird", "boat", "cat", "cow", "fence", "keyboard", "motorbike", "sofa", "tvmonitor"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_split_counts_and_names(name):
    num, num_seen, unseen_ids = EXPECTED[name]
    classes, unseen, _, _, _ = BUILTIN_SPLITS[name]
    split = ZeroShotSplit(classes, unseen)
    assert split.num_classes == num
    assert len(split.seen_ids) == num_seen and len(split.unseen_ids) == num - num_seen
    assert list(split.unseen_ids) == unseen_ids
    assert list(split.unseen_names) == UNSEEN_NAMES[name]
    assert set(split.seen_ids) | set(split.unseen_ids) == set(range(num))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_variants_metadata(name):
    num, num_seen, unseen_ids = EXPECTED[name]
    classes = BUILTIN_SPLITS[name][0]
    train = MetadataCatalog.get(f"{name}_train")
    test = MetadataCatalog.get(f"{name}_test")
    zs3 = MetadataCatalog.get(f"{name}_test_zs3")
    assert len(train.stuff_classes) == num_seen and train.unseen_classes == []
    assert test.stuff_classes == list(classes)
    assert test.unseen_classes == unseen_ids
    assert test.seen_classes == [i for i in range(num) if i not in unseen_ids]
    assert zs3.stuff_classes == UNSEEN_NAMES[name] and zs3.seen_classes == []
    assert zs3.unseen_classes == list(range(len(unseen_ids)))
    for meta in (train, test, zs3):
        assert meta.ignore_label == 255 and meta.evaluator_type == "zero_shot_sem_seg"
    # Inductive setting: no unseen class name anywhere in the train variant's metadata.
    listed = {x for v in train.as_dict().values() if isinstance(v, (list, tuple)) for x in v if isinstance(x, str)}
    assert listed == set(train.stuff_classes)
    assert not listed & set(UNSEEN_NAMES[name])


def test_unknown_names_rejected_listing_valid_names():
    with pytest.raises(SplitDefinitionError) as e:
        ZeroShotSplit(["cat", "dog", "sheep"], ["shep"])
    msg = str(e.value)
    assert "'shep'" in msg and "valid names are: 'cat', 'dog', 'sheep'" in msg


def test_overlap_rejected():
    with pytest.raises(SplitDefinitionError, match=r"'dog'.*both seen and unseen"):
        ZeroShotSplit(["cat", "dog", "sheep"], ["dog", "sheep"], seen_names=["cat", "dog"])


@pytest.mark.parametrize(
    "classes, unseen, seen, pattern",
    [
        ([], ["x"], None, "at least one class"),
        (["cat", "dog"], [], None, "unseen set is empty.*'cat', 'dog'"),
        (["cat", "dog"], ["cat", "dog"], None, "seen set is empty.*'cat', 'dog'"),
        (["cat", "cat", "dog"], ["dog"], None, "duplicate class names.*'cat'"),
        (["cat", "dog", "cow"], ["cow"], ["cat"], "'dog'.*neither seen nor unseen"),
        (["cat", "dog"], "dog", None, "sequences of names"),
    ],
)
def test_invalid_split_definitions(classes, unseen, seen, pattern):
    with pytest.raises(SplitDefinitionError, match=pattern):
        ZeroShotSplit(classes, unseen, seen)


def test_split_orders_by_dataset_id():
    s = ZeroShotSplit(["a", "b", "c", "d"], ["d", "b"])
    assert s.unseen_names == ("b", "d") and s.unseen_ids == (1, 3) and s.seen_ids == (0, 2)


def test_register_rejects_bad_calls(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [np.zeros((4, 4), np.uint8)])
    folder = SemSegFolder(img, gt)
    with pytest.raises(ValueError, match="train and/or test"):
        register_zero_shot_split(unique_name, ["a", "b"], ["b"])
    with pytest.raises(ValueError, match="ignore_label=1 is also a class id"):
        register_zero_shot_split(unique_name, ["a", "b"], ["b"], test=folder, ignore_label=1)
    with pytest.raises(SplitDefinitionError, match="valid names are: 'a', 'b'"):
        register_zero_shot_split(unique_name, ["a", "b"], ["c"], test=folder)
    assert f"{unique_name}_test" not in DatasetCatalog.list()  # nothing half-registered
    register_zero_shot_split(unique_name, ["a", "b"], ["b"], test=folder)
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        register_zero_shot_split(unique_name, ["a", "b"], ["b"], test=folder)
    out = register_zero_shot_split(unique_name, ["a", "b"], ["a"], test=folder, overwrite=True)
    assert out.train is None and MetadataCatalog.get(out.test).unseen_classes == [0]


def test_register_from_existing_dataset(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [np.full((4, 4), 2, np.uint8)] * 2)
    base = register_zero_shot_split(unique_name + "_base", ["a", "b", "c"], ["c"], test=SemSegFolder(img, gt))
    out = register_zero_shot_split(unique_name, ["a", "b", "c"], ["b"], train=base.test, test=base.test)
    dicts = DatasetCatalog.get(out.train)
    assert len(dicts) == 2 and all(d["dataset_name"] == out.train for d in dicts)
    assert MetadataCatalog.get(out.train).stuff_classes == ["a", "c"]


def test_vocabulary_label_map():
    lut = vocabulary_label_map(5, [1, 3], ignore_label=255)
    assert lut.shape == (256,)
    assert lut[[0, 1, 2, 3, 4, 255]].tolist() == [255, 0, 255, 1, 255, 255]
    assert lut[5] == UNMAPPED and lut[254] == UNMAPPED
    big = vocabulary_label_map(300, range(300), ignore_label=65535)
    assert big.shape == (65536,) and big[299] == 299 and big[65535] == 65535 and big[300] == UNMAPPED
    assert np.issubdtype(lut.dtype, np.integer)


def test_register_from_a_data_function_called_on_first_load(tmp_path, unique_name):
    img, gt = write_sem_seg_folder(tmp_path, [np.full((4, 4), 1, np.uint8)] * 3)
    calls = []

    def records():
        calls.append(1)
        return [{"file_name": f"{img}/{i:04d}.jpg", "sem_seg_file_name": f"{gt}/{i:04d}.png"} for i in range(3)]

    out = register_zero_shot_split(unique_name, ["a", "b"], ["b"], train=records, test=records)
    assert calls == []  # nothing is generated or listed at registration
    dicts = DatasetCatalog.get(out.zs3)
    assert len(calls) == 1 and [d["dataset_name"] for d in dicts] == [out.zs3] * 3
    assert "dataset_name" not in records()[0]  # the function's records are not modified
    register_zero_shot_split(unique_name + "_bad", ["a", "b"], ["b"], test=lambda: {"not": "a list"})
    with pytest.raises(TypeError, match="must return a list of dicts"):
        DatasetCatalog.get(unique_name + "_bad_test")
