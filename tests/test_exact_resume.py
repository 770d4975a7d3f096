"""A run killed with SIGKILL (twice, at random iterations) and resumed with --resume logs the same
losses, iteration by iteration, and ends with the same weights as the run that was never stopped."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from zsmask.data import SemSegFolder, register_zero_shot_split
from zsmask.data.resumable_loader import PositionStream, ResumableTrainLoader

from conftest import tiny_model_cfg, write_sem_seg_folder
from test_engine import RUNNER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, UNSEEN = ["sky", "grass", "road", "cow"], ["cow"]


def _labels(n=12):
    """Landscape and portrait labels (both aspect-ratio buckets are used)."""
    out = []
    for i in range(n):
        h, w = (40, 56) if i % 3 else (56, 40)
        lab = np.zeros((h, w), np.uint8)
        lab[h // 2:] = 1
        lab[:, : w // 4] = 2
        if i % 2 == 0:
            lab[4:14, 10 + i: 20 + i] = 3
        out.append(lab)
    return out


def _mapper(record):
    """A mapper with randomness of its own, as augmentations have."""
    return {"file_name": record["file_name"], "width": record["width"], "height": record["height"],
            "noise": float(np.random.rand()) + random.random() + float(torch.rand(()))}


def _records(n=7):
    return [{"file_name": f"{i}.jpg", "width": 64 if i % 2 else 32, "height": 48} for i in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_continues_from_its_state_exactly(workers):
    """Batches from a loaded state equal the uninterrupted stream's; the process's generators are untouched."""
    def loader():
        return ResumableTrainLoader(PositionStream(_records(), _mapper, seed=5), batch_size=3, num_workers=workers)

    full = loader()
    batches = []
    torch.manual_seed(1)
    before = torch.get_rng_state()
    for batch in full:
        batches.append([(d["file_name"], d["noise"]) for d in batch])
        if len(batches) == 9:
            break
    assert torch.equal(torch.get_rng_state(), before)  # mapping did not draw from this process's generator
    assert len({b[0] for batch in batches for b in batch}) == 7  # every record, epochs reshuffled
    first = loader()
    iterator = iter(first)
    for cut in range(1, 9):  # the first cut with samples waiting in a bucket
        next(iterator)
        state = first.state_dict()
        if any(state["pending"]):
            break
    assert any(state["pending"]) and cut < 9
    resumed = loader()
    resumed.load_state_dict(state)
    rest = []
    for batch in resumed:
        rest.append([(d["file_name"], d["noise"]) for d in batch])
        if len(rest) == 9 - cut:
            break
    assert rest == batches[cut:]


def _dies_on_record_5(record):
    if record["file_name"] == "5.jpg":
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    return _mapper(record)


def test_a_worker_that_dies_is_reported_with_the_sample_it_was_on():
    from zsmask.data.resumable_loader import DataLoaderWorkerDied

    loader = ResumableTrainLoader(PositionStream(_records(), _dies_on_record_5, seed=5), batch_size=2, num_workers=2)
    with pytest.raises(DataLoaderWorkerDied) as caught:
        for _ in loader:
            pass
    message = str(caught.value)
    assert "a data-loader worker died" in message and ", 5.jpg" in message and "--resume" in message
    assert message.count("worker pid") == 1  # only the dead one


def test_only_torchs_messages_about_a_dead_worker_count_as_a_death():
    from zsmask.data.resumable_loader import dead_worker_pids

    assert dead_worker_pids("DataLoader worker (pid(s) 123, 456) exited unexpectedly") == [123, 456]
    assert dead_worker_pids("DataLoader worker (pid 77) is killed by signal: Killed. ") == [77]
    # an exception raised inside a worker is re-raised by torch with this text: not a death
    assert dead_worker_pids("Caught BadSampleLimitError in DataLoader worker process 1.\nOriginal Traceback") is None


def _metrics(path):
    """The last logged row per iteration of a metrics.json (a resumed run appends)."""
    rows = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "total_loss" in row:
                rows[row["iteration"]] = row
    return rows


@pytest.mark.slow
def test_sigkill_twice_then_resume_gives_the_losses_of_the_run_never_stopped(tmp_path, unique_name):
    img_dir, lab_dir = os.path.join(tmp_path, "data", "images"), os.path.join(tmp_path, "data", "labels")
    labels = _labels()
    write_sem_seg_folder(str(tmp_path / "data"), labels, image_sizes={i: lab.shape for i, lab in enumerate(labels)})
    register_zero_shot_split(unique_name, CLASSES, UNSEEN, train=SemSegFolder(img_dir, lab_dir),
                             test=SemSegFolder(img_dir, lab_dir))
    cfg = tiny_model_cfg(tmp_path, train_dataset=f"{unique_name}_train")
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (40, 48, 56), 64  # a random size per sample
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = "absolute", (32, 32)
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS = 2, 60, 0
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD, cfg.SEED = 10, 0, 7
    config = tmp_path / "resume.yaml"
    config.write_text(cfg.dump())
    runner = tmp_path / "run_train_net.py"
    runner.write_text(RUNNER.format(root=ROOT, split=unique_name, classes=CLASSES, unseen=UNSEEN, img=img_dir,
                                    lab=lab_dir))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def command(out, *extra):
        return [sys.executable, str(runner), "--config-file", str(config), *extra, "OUTPUT_DIR", str(out),
                "DATASETS.TEST", "()"]

    never_stopped = tmp_path / "never_stopped"
    proc = subprocess.run(command(never_stopped), capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    interrupted = tmp_path / "interrupted"
    kills = []
    for attempt, after_checkpoint in enumerate(sorted(rng.sample([9, 19, 29, 39], 2))):
        extra = ["--resume"] if attempt else []
        log = open(tmp_path / f"part{attempt}.log", "w")
        process = subprocess.Popen(command(interrupted, *extra), stdout=log, stderr=subprocess.STDOUT, env=env)
        marker = interrupted / f"model_{after_checkpoint:07d}.pth"
        deadline = time.monotonic() + 600
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, open(tmp_path / f"part{attempt}.log").read()[-3000:]
        time.sleep(rng.uniform(0.0, 1.5))  # into the next few iterations
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
        kills.append(after_checkpoint)
    proc = subprocess.run(command(interrupted, "--resume"), capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Loading from" in proc.stdout + proc.stderr

    reference, resumed = _metrics(never_stopped / "metrics.json"), _metrics(interrupted / "metrics.json")
    assert sorted(reference) == sorted(resumed) == [19, 39, 59], kills
    for iteration, row in reference.items():
        losses = {k: v for k, v in row.items() if k.startswith("loss") or k == "total_loss"}
        assert losses == {k: resumed[iteration][k] for k in losses}, (iteration, kills)
    final = [torch.load(p / "model_final.pth", map_location="cpu")["model"] for p in (never_stopped, interrupted)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0]), kills
