"""GZS3 / ZS3 evaluator: hand-computed values, parity with detectron2's SemSegEvaluator,
exclusion of absent classes, and gathering across processes."""
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.data import DatasetCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm

from zsmask.data import SemSegFolder, register_zero_shot_split
from zsmask.evaluation import GeneralizedZeroShotSemSegEvaluator, harmonic_mean, zero_shot_metrics

from conftest import write_sem_seg_folder


def _onehot(pred: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(pred, dtype=torch.int64), num_classes).permute(2, 0, 1).float()


def _run(evaluator, dataset, preds):
    evaluator.reset()
    for rec, pred in zip(dataset, preds):
        evaluator.process([rec], [{"sem_seg": _onehot(pred, evaluator.num_classes)}])
    return evaluator.evaluate()["sem_seg"]


def test_hand_computed_confusion_matrix(tmp_path, unique_name):
    # classes: a (seen), b (seen), c (unseen); one 2x4 image
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 2]])
    img, lab = write_sem_seg_folder(tmp_path, [gt])
    split = register_zero_shot_split(unique_name, ["a", "b", "c"], ["c"], test=SemSegFolder(img, lab))
    ev = GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False)
    res = _run(ev, DatasetCatalog.get(split.test), [pred])
    # a: tp 1, gt 2, pred 2 -> IoU 1/3 ; b: tp 2, gt 2, pred 3 -> 2/3 ; c: tp 2, gt 3, pred 2 -> 2/3
    assert res["IoU-a"] == pytest.approx(100 / 3)
    assert res["IoU-b"] == pytest.approx(200 / 3)
    assert res["IoU-c"] == pytest.approx(200 / 3)
    assert res["ACC-a"] == pytest.approx(50.0) and res["ACC-c"] == pytest.approx(200 / 3)
    assert res["mIoU_seen"] == pytest.approx(50.0)
    assert res["mIoU_unseen"] == pytest.approx(200 / 3)
    s, u = 50.0, 200 / 3
    assert res["hIoU"] == pytest.approx(2 * s * u / (s + u))
    assert res["mIoU"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert res["pAcc"] == pytest.approx(100 * 5 / 7)  # the ignored pixel is not counted
    assert res["fwIoU"] == pytest.approx(100 * (2 / 7 * 1 / 3 + 2 / 7 * 2 / 3 + 3 / 7 * 2 / 3))


def test_matches_detectron2_semseg_evaluator(tmp_path, unique_name):
    rng = np.random.RandomState(7)
    num = 6
    labels = [rng.randint(0, num, size=(17, 23)).astype(np.uint8) for _ in range(5)]
    for lab in labels:
        lab[rng.rand(*lab.shape) < 0.1] = 255
    labels[0][labels[0] == 4] = 255  # class 4 absent from all but a few images
    img, gt = write_sem_seg_folder(tmp_path, labels)
    names = [f"class{i}" for i in range(num)]
    split = register_zero_shot_split(unique_name, names, ["class1", "class4"], test=SemSegFolder(img, gt))
    dataset = DatasetCatalog.get(split.test)
    preds = [rng.randint(0, num, size=lab.shape) for lab in labels]

    ours = _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False), dataset, preds)
    d2 = SemSegEvaluator(split.test, distributed=False)
    d2.reset()
    for rec, pred in zip(dataset, preds):
        d2.process([rec], [{"sem_seg": _onehot(pred, num)}])
    ref = d2.evaluate()["sem_seg"]
    for name in names:
        assert ours[f"IoU-{name}"] == ref[f"IoU-{name}"]  # identical, not approximately
        assert ours[f"ACC-{name}"] == pytest.approx(ref[f"ACC-{name}"], abs=1e-9)
    for key_ours, key_ref in (("mIoU", "mIoU"), ("pAcc", "pACC"), ("mAcc", "mACC"), ("fwIoU", "fwIoU")):
        assert ours[key_ours] == pytest.approx(ref[key_ref], abs=1e-9)
    seen = np.mean([ref[f"IoU-class{i}"] for i in (0, 2, 3, 5)])
    unseen = np.mean([ref[f"IoU-class{i}"] for i in (1, 4)])
    assert ours["mIoU_seen"] == pytest.approx(seen) and ours["mIoU_unseen"] == pytest.approx(unseen)
    assert ours["hIoU"] == pytest.approx(2 * seen * unseen / (seen + unseen))


def test_absent_classes_left_out_and_zs3_mode(tmp_path, unique_name):
    gt = np.array([[0, 0, 2, 2]], np.uint8)  # class 1 ("b", unseen) and 3 ("d", seen) absent
    img, lab = write_sem_seg_folder(tmp_path, [gt])
    split = register_zero_shot_split(unique_name, ["a", "b", "c", "d"], ["b", "c"], test=SemSegFolder(img, lab))
    res = _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False),
               DatasetCatalog.get(split.test), [np.array([[0, 3, 2, 1]])])
    assert np.isnan(res["IoU-b"]) and np.isnan(res["IoU-d"])
    assert res["mIoU_seen"] == pytest.approx(50.0)  # only "a", not "d"
    assert res["mIoU_unseen"] == pytest.approx(50.0)  # only "c", not "b"
    assert res["mIoU"] == pytest.approx(50.0)

    ev = GeneralizedZeroShotSemSegEvaluator(split.zs3, distributed=False)
    assert ev.zs3 and ev.class_names == ["b", "c"]
    # ZS3: seen pixels are ignored; vocabulary indices 0 = b, 1 = c
    res = _run(ev, DatasetCatalog.get(split.zs3), [np.array([[0, 0, 1, 0]])])
    assert "hIoU" not in res and "mIoU_seen" not in res
    assert res["mIoU"] == pytest.approx(50.0) and res["mIoU_unseen"] == pytest.approx(50.0)
    assert res["pAcc"] == pytest.approx(50.0)


def test_absent_but_predicted_class_under_both_conventions(tmp_path, unique_name):
    """A class absent from the ground truth but predicted: "exclude" leaves it out of every
    mean; "count_predicted" counts it with IoU 0, which is detectron2 v0.6's SemSegEvaluator."""
    gt = np.array([[0, 0, 1, 1], [2, 2, 1, 255]], np.uint8)  # "d" (seen) and "e" (unseen) absent
    pred = np.array([[0, 3, 1, 1], [2, 4, 1, 3]])  # ... but "d" and "e" are predicted
    img, lab = write_sem_seg_folder(tmp_path, [gt])
    names = ["a", "b", "c", "d", "e"]
    split = register_zero_shot_split(unique_name, names, ["c", "e"], test=SemSegFolder(img, lab))
    dataset = DatasetCatalog.get(split.test)
    # a: 1/2, b: 3/3, c: 1/2 (present); d, e: predicted, absent
    exclude = _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False), dataset, [pred])
    counted = _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False, absent_classes="count_predicted"),
                   dataset, [pred])
    assert np.isnan(exclude["IoU-d"]) and counted["IoU-d"] == 0.0 and counted["IoU-e"] == 0.0
    assert exclude["mIoU"] == pytest.approx(100 * 2 / 3) and counted["mIoU"] == pytest.approx(40.0)
    assert exclude["mIoU_seen"] == pytest.approx(75.0) and counted["mIoU_seen"] == pytest.approx(50.0)
    assert exclude["mIoU_unseen"] == pytest.approx(50.0) and counted["mIoU_unseen"] == pytest.approx(25.0)
    assert counted["pAcc"] == exclude["pAcc"] and counted["mAcc"] == exclude["mAcc"]  # accuracies: GT classes only

    d2 = SemSegEvaluator(split.test, distributed=False)  # detectron2 as installed here (v0.6)
    d2.reset()
    d2.process([dataset[0]], [{"sem_seg": _onehot(pred, len(names))}])
    assert d2.evaluate()["sem_seg"]["mIoU"] == pytest.approx(counted["mIoU"])

    with pytest.raises(ValueError, match="absent-class convention 'zero'.*exclude.*count_predicted"):
        GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False, absent_classes="zero")


def test_prediction_shape_errors(tmp_path, unique_name):
    img, lab = write_sem_seg_folder(tmp_path, [np.zeros((4, 4), np.uint8)])
    split = register_zero_shot_split(unique_name, ["a", "b"], ["b"], test=SemSegFolder(img, lab))
    ev = GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False)
    rec = DatasetCatalog.get(split.test)[0]
    with pytest.raises(ValueError, match="scores 3 classes.*has 2"):
        ev.process([rec], [{"sem_seg": torch.zeros(3, 4, 4)}])
    with pytest.raises(ValueError, match="is 4x5 but its ground truth .* is 4x4"):
        ev.process([rec], [{"sem_seg": torch.zeros(2, 4, 5)}])


def test_harmonic_mean():
    assert harmonic_mean(80.0, 20.0) == pytest.approx(32.0)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert np.isnan(harmonic_mean(float("nan"), 3.0))
    conf = np.zeros((3, 3), np.int64)
    conf[0, 0], conf[1, 1] = 3, 1
    m = zero_shot_metrics(conf, [0], [1])
    assert m["hIoU"] == pytest.approx(100.0)


def _worker(rank, world, port, img, lab, preds, out_path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        split = register_zero_shot_split("dist", ["a", "b", "c"], ["c"], test=SemSegFolder(img, lab))
        ev = GeneralizedZeroShotSemSegEvaluator(split.test, distributed=True)
        records = DatasetCatalog.get(split.test)
        for i in range(rank, len(records), world):  # each rank sees a different subset
            ev.process([records[i]], [{"sem_seg": _onehot(preds[i], 3)}])
        res = ev.evaluate()
        if comm.is_main_process():
            torch.save(dict(res["sem_seg"]), out_path)
        else:
            assert res is None
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_confusion_matrices_gathered_across_processes(tmp_path, unique_name):
    rng = np.random.RandomState(1)
    labels = [rng.randint(0, 3, size=(6, 7)).astype(np.uint8) for _ in range(5)]
    preds = [rng.randint(0, 3, size=(6, 7)) for _ in labels]
    img, lab = write_sem_seg_folder(tmp_path, labels)
    split = register_zero_shot_split(unique_name, ["a", "b", "c"], ["c"], test=SemSegFolder(img, lab))
    single = _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False), DatasetCatalog.get(split.test), preds)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_path = str(tmp_path / "res.pt")
    mp.spawn(_worker, args=(2, port, img, lab, preds, out_path), nprocs=2, join=True)
    gathered = torch.load(out_path, weights_only=False)
    assert set(gathered) == set(single)
    for k, v in single.items():
        assert gathered[k] == pytest.approx(v, nan_ok=True)


def test_per_image_confusion_matrices_are_saved_with_bootstrap(tmp_path, unique_name):
    gts = [np.array([[0, 0], [1, 1]], np.uint8), np.array([[2, 2], [255, 1]], np.uint8)]
    preds = [np.array([[0, 1], [1, 1]]), np.array([[2, 0], [2, 1]])]
    img, lab = write_sem_seg_folder(tmp_path, gts)
    split = register_zero_shot_split(unique_name, ["a", "b", "c"], ["c"], test=SemSegFolder(img, lab))
    out = tmp_path / "eval"
    ev = GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False, output_dir=str(out), bootstrap=20)
    dataset = DatasetCatalog.get(split.test)
    res = _run(ev, dataset, preds)
    saved = np.load(ev.per_image_path())
    assert list(saved["file_names"]) == [rec["file_name"] for rec in dataset]
    first = np.zeros((4, 4), np.int32)  # [pred, gt]; index 3 is the ignore column
    first[0, 0], first[1, 0], first[1, 1] = 1, 1, 2
    second = np.zeros((4, 4), np.int32)
    second[2, 2], second[0, 2], second[2, 3], second[1, 1] = 1, 1, 1, 1
    assert np.array_equal(saved["confusion"], np.stack([first, second]))
    assert res["hIoU_bootstrap_se"] >= 0
    _run(GeneralizedZeroShotSemSegEvaluator(split.test, distributed=False, output_dir=str(tmp_path / "plain")),
         dataset, preds)
    assert not (tmp_path / "plain" / f"per_image_confusion_{split.test}.npz").exists()  # only with bootstrap
