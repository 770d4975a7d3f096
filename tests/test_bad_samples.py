"""Training skips samples that cannot be read (logged, listed, capped); evaluation does not."""
import os
import subprocess
import sys

import numpy as np
import pytest

from zsmask.data import SemSegFolder, ZeroShotSemSegDatasetMapper, register_zero_shot_split
from zsmask.data.bad_samples import BadSampleLimitError, BadSampleLog, SkipBadSamples
from zsmask.data.image_io import ImageReadError

from conftest import tiny_model_cfg, write_sem_seg_folder
from test_engine import RUNNER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, UNSEEN = ["sky", "grass", "road", "cow"], ["cow"]


def _labels(n, size=32):
    out = []
    for i in range(n):
        lab = np.zeros((size, size), np.uint8)
        lab[size // 2:] = 1
        lab[:, : size // 4] = 2
        if i % 2 == 0:
            lab[4:12, 12:20] = 3
        out.append(lab)
    return out


def _corrupt(path):
    with open(path, "rb") as f:
        head = f.read(300)
    with open(path, "wb") as f:  # a truncated JPEG, as a failed copy leaves it
        f.write(head)


@pytest.fixture
def split(tmp_path, unique_name):
    """A 40-image split on disk with images 4 and 17 truncated to 300 bytes."""
    img, lab = write_sem_seg_folder(str(tmp_path / "data"), _labels(40))
    bad = [os.path.join(img, f"{i:04d}.jpg") for i in (4, 17)]
    for path in bad:
        _corrupt(path)
    register_zero_shot_split(unique_name, CLASSES, UNSEEN, train=SemSegFolder(img, lab), test=SemSegFolder(img, lab))
    return {"name": unique_name, "img": img, "lab": lab, "bad": bad, "root": tmp_path}


def test_the_mapper_skips_each_bad_file_once_and_stops_above_the_limit(split, tmp_path):
    from detectron2.data import DatasetCatalog

    cfg = tiny_model_cfg(tmp_path, train_dataset=f"{split['name']}_train")
    records = DatasetCatalog.get(f"{split['name']}_train")
    log = BadSampleLog(str(tmp_path / "out" / "bad_samples.txt"), max_bad=2)
    mapper = SkipBadSamples(ZeroShotSemSegDatasetMapper(cfg, True), log, records)
    mapped = [mapper(r) for r in records + records[:5]]  # image 4 is drawn twice
    names = [m["file_name"] for m in mapped]
    assert all(m["image"].shape[0] == 3 for m in mapped) and not set(names) & set(split["bad"])
    assert names[4] == mapper(records[4])["file_name"] == names[-1]  # the same replacement each time
    assert list(log.entries()) == split["bad"]  # each once, in the order drawn
    assert all("cannot read image" in why for why in log.entries().values())
    with pytest.raises(BadSampleLimitError, match=r"3 training samples could not be read, more than "
                                                  r"DATALOADER.MAX_BAD_SAMPLES 2") as caught:
        mapper({**records[0], "file_name": str(tmp_path / "missing.jpg")})
    assert all(path in str(caught.value) for path in split["bad"])
    # evaluation's mapper has no such wrapper: the bad file stops it, with its path
    with pytest.raises(ImageReadError, match="0004.jpg"):
        ZeroShotSemSegDatasetMapper(cfg, False)(records[4])
    with pytest.raises(ValueError, match="MAX_BAD_SAMPLES must be >= 0"):
        BadSampleLog(str(tmp_path / "x.txt"), -1)


def _train(split, out_name, *opts, expect_ok=True):
    cfg = tiny_model_cfg(split["root"], train_dataset=f"{split['name']}_train")
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (32,), 32
    cfg.INPUT.CROP.ENABLED = False
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS = 4, 20, 0  # 2 epochs of 40
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD = 1000, 0
    config = split["root"] / "bad.yaml"
    config.write_text(cfg.dump())
    runner = split["root"] / "run_train_net.py"
    runner.write_text(RUNNER.format(root=ROOT, split=split["name"], classes=CLASSES, unseen=UNSEEN,
                                    img=split["img"], lab=split["lab"]))
    out = split["root"] / out_name
    proc = subprocess.run([sys.executable, str(runner), "--config-file", str(config), "OUTPUT_DIR", str(out),
                           "DATASETS.TEST", "()", *opts], capture_output=True, text=True, timeout=600,
                          cwd=str(split["root"]))
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == expect_ok, output[-4000:]
    return output, out


@pytest.mark.slow
def test_train_net_trains_past_two_corrupt_files_and_stops_when_the_limit_is_one(split):
    output, out = _train(split, "run_all")
    assert os.path.isfile(out / "model_final.pth")  # trained to the end
    for path in split["bad"]:
        assert output.count(f"skipping a training sample that cannot be read: {path}") == 1  # logged once
    assert "2 training sample(s) could not be read and were skipped" in output
    assert sorted(BadSampleLog(str(out / "bad_samples.txt"), 10).entries()) == sorted(split["bad"])

    output, out = _train(split, "run_limit_1", "DATALOADER.MAX_BAD_SAMPLES", "1", expect_ok=False)
    assert "BadSampleLimitError" in output and "more than DATALOADER.MAX_BAD_SAMPLES 1" in output
    assert all(path in output for path in split["bad"])
    assert not os.path.isfile(out / "model_final.pth")
