"""zsmask.engine and train_net.py on CPU with the real ZeroShotMaskFormer at toy size on a tiny
zero-shot split: training, atomic checkpoints, --eval-only, --resume, 2-process gloo
training/evaluation, AMP fallback, full-model clipping."""
import json
import logging
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import AMPTrainer, SimpleTrainer

from zsmask.config import add_zsmask_config
from zsmask.data import SemSegFolder, register_zero_shot_split
from zsmask.engine import SlimCheckpointer, Trainer, launch
from zsmask.solver import build_optimizer

from conftest import tiny_model_cfg, write_sem_seg_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["sky", "grass", "road", "cow"]
UNSEEN = ["cow"]
SPLIT = "engine_tiny"



def _write_config(root) -> str:
    """The real ZeroShotMaskFormer at toy size (tests/conftest.py) on the tiny split, as a yaml file."""
    cfg = tiny_model_cfg(root, train_dataset=f"{SPLIT}_train", test_dataset=f"{SPLIT}_test")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 64
    cfg.INPUT.CROP.ENABLED = False
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER = 2, 1e-3, 2
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.CHECKPOINT_PERIOD = 0, 1000
    cfg.SOLVER.AMP.ENABLED = False
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 3
    path = os.path.join(str(root), "tiny.yaml")
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path


# Registers the split in the launching process and, being the spawned processes' main module,
# in every CPU worker too; then runs train_net's command line.
RUNNER = """\
import sys
sys.path.insert(0, {root!r})
from zsmask.data import SemSegFolder, register_zero_shot_split
register_zero_shot_split({split!r}, {classes!r}, {unseen!r}, train=SemSegFolder({img!r}, {lab!r}),
                         test=SemSegFolder({img!r}, {lab!r}))
import train_net

if __name__ == "__main__":
    train_net.cli()
"""


def _labels(n=8, size=64):
    rng = np.random.RandomState(0)
    out = []
    for i in range(n):
        lab = np.zeros((size, size), np.uint8)
        lab[size // 2:] = 1
        lab[:, : size // 4] = 2
        if i % 2 == 0:  # the unseen class in every other image
            y, x = rng.randint(0, size // 2, size=2)
            lab[y: y + size // 3, x: x + size // 3] = 3
        lab[:2] = 255
        out.append(lab)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny split on disk, the config file, a runner script, and one 2-iteration training."""
    root = tmp_path_factory.mktemp("engine")
    img, lab = write_sem_seg_folder(str(root / "data"), _labels())
    register_zero_shot_split(SPLIT, CLASSES, UNSEEN, train=SemSegFolder(img, lab), test=SemSegFolder(img, lab),
                             overwrite=True)
    config = _write_config(root)
    runner = root / "run_train_net.py"
    runner.write_text(RUNNER.format(root=ROOT, split=SPLIT, classes=CLASSES, unseen=UNSEEN, img=img, lab=lab))
    world = {"root": root, "config": config, "runner": str(runner), "trained": str(root / "trained")}
    _train_net(world, "OUTPUT_DIR", world["trained"])
    return world


def _train_net(world, *argv):
    """Run train_net.py (through the runner) with ``argv`` (flags, then config opts) in a
    subprocess; return its output."""
    cmd = [sys.executable, world["runner"], "--config-file", world["config"], "--dist-url", "auto", *argv]
    proc = subprocess.run(cmd, cwd=str(world["root"]), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _results(output_dir):
    """The evaluator's results file, without its convention entry (checked: the default)."""
    with open(os.path.join(output_dir, "inference", f"zero_shot_sem_seg_{SPLIT}_test.json")) as f:
        results = json.load(f)
    assert results.pop("absent_classes") == "exclude"
    return results


def _in_process_cfg(world, *opts):
    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(world["config"])
    cfg.merge_from_list(list(opts))
    return cfg


def _leftover_temp_files(folder):
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_train_writes_atomic_checkpoint_and_eval_only_prints_gzs3(world):
    out = world["trained"]
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_final.pth"
    assert _leftover_temp_files(out) == []
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 1
    assert ckpt["trainer"]["_trainer"]["optimizer"]["state"]  # AdamW moments, restored by --resume
    assert ckpt["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 2

    eval_dir = str(world["root"] / "eval_1proc")
    log = _train_net(world, "--eval-only", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                     "OUTPUT_DIR", eval_dir)
    assert "GZS3 (full vocabulary)" in log and "hIoU" in log and "mIoU" in log
    res = _results(eval_dir)
    assert set(res) >= {"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "pAcc"}
    assert 0.0 <= res["pAcc"] <= 100.0


def test_resume_continues_from_last_iteration(world):
    out = str(world["root"] / "resumed")
    shutil.copytree(world["trained"], out)  # the other tests keep the 2-iteration run
    log = _train_net(world, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "4")
    assert "Starting training from iteration 2" in log
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 3
    assert _leftover_temp_files(out) == []


@pytest.mark.slow
def test_two_cpu_processes_train_and_evaluate_like_one(world):
    out = str(world["root"] / "ddp")
    log = _train_net(world, "--num-gpus", "2", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", out)
    assert "World size: 2" in log and "broadcast_buffers" not in log  # no deprecated DDP argument
    weights = os.path.join(out, "model_final.pth")
    assert torch.load(weights, map_location="cpu", weights_only=False)["iteration"] == 1

    eval_dir = str(world["root"] / "ddp_eval")
    _train_net(world, "--num-gpus", "2", "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", eval_dir)
    two = _results(eval_dir)

    cfg = _in_process_cfg(world, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(world["root"] / "in_process_eval"))
    model = Trainer.build_model(cfg)
    SlimCheckpointer(model).load(weights)
    one = Trainer.test(cfg, model)["sem_seg"]
    assert set(one) == set(two)
    for key, value in one.items():  # the JSON file stores NaN (class absent) as null
        assert (two[key] is None) if math.isnan(value) else two[key] == pytest.approx(value), key


def _spawned_children(parent_pid: int):
    """pids of the training processes torch spawned under ``parent_pid``, oldest (rank 0) first."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == parent_pid and b"spawn_main" in cmdline:
            children.append(int(name))
    return sorted(children)


@pytest.mark.slow
def test_a_training_process_that_dies_ends_the_run_with_a_message(world, tmp_path):
    import signal
    import time

    out = tmp_path / "ddp_killed"
    cmd = [sys.executable, world["runner"], "--config-file", world["config"], "--dist-url", "auto", "--num-gpus", "2",
           "--dist-timeout", "1", "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "100000", "OUTPUT_DIR", str(out)]
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(world["root"]), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "Starting training from iteration 0" not in log_path.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)
    children = _spawned_children(proc.pid)
    assert len(children) == 2, children
    os.kill(children[1], signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait(timeout=120)  # well within the timeout: the parent notices at once
    output = log_path.read_text()
    assert proc.returncode != 0
    assert "training process 1 of 2 on this machine was killed by signal SIGKILL" in output, output[-3000:]
    assert "continue with --resume" in output and time.monotonic() - killed_at < 60
    assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                   for pid in children)  # no training process left behind


def test_amp_on_cpu_trains_fp32_with_warning(world, tmp_path, caplog):
    cfg = _in_process_cfg(world, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path),
                          "DATASETS.TEST", "()")
    with caplog.at_level(logging.WARNING, logger="zsmask.engine.trainer"):
        trainer = Trainer(cfg)
    assert "not on a GPU" in caplog.text and "fp32" in caplog.text
    assert type(trainer._trainer) is SimpleTrainer and not isinstance(trainer._trainer, AMPTrainer)
    trainer.train()
    assert math.isfinite(trainer.storage.history("total_loss").latest())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_launch_on_cpu():
    assert launch(lambda x: 2 * x, 1, args=(21,), device="cpu") == 42  # one process: direct call
    with pytest.raises(ValueError, match="multi-machine"):
        launch(print, 2, num_machines=2, dist_url="auto", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_gpu_device_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="run with MODEL.DEVICE cpu"):
        launch(print, 1, device=get_cfg().MODEL.DEVICE)  # detectron2's default device


def test_atomic_checkpointer_keeps_previous_checkpoint_when_save_fails(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = SlimCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_final")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(Exception):
        ckpt.save("model_final", unpicklable=lambda: None)  # fails inside torch.save
    with pytest.raises(Exception):
        ckpt.save("model_0000009", unpicklable=lambda: None)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert open(tmp_path / "last_checkpoint").read() == "model_final.pth"
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu")["model"]
    for key, value in before.items():
        assert torch.equal(saved[key], value)
    ckpt.save("model_0000009")
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    assert _leftover_temp_files(tmp_path) == []


def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_says_where_and_how_much_is_free(tmp_path,
                                                                                               monkeypatch):
    import errno

    import zsmask.engine.checkpoint as checkpoint_module
    from zsmask.engine import CheckpointWriteError

    model = torch.nn.Linear(3, 2)
    ckpt = SlimCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # half the file written, then ENOSPC, as a full disk does
        f.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(CheckpointWriteError) as caught:
        ckpt.save("model_0000019")
    message = str(caught.value)
    assert "No space left on device" in message and str(tmp_path) in message and "GiB free there" in message
    assert "last_checkpoint still names model_0000009.pth, which is intact" in message and "--resume" in message
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]  # no partial file left
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    fresh = torch.nn.Linear(3, 2)
    SlimCheckpointer(fresh, save_dir=str(tmp_path)).resume_or_load("", resume=True)  # the last good one loads
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_checkpoints_of_an_older_layout_load_through_the_checkpointer(tmp_path):
    """detectron2 drops shape-mismatched entries before load_state_dict's hooks run: the
    one-vector "no object" embedding of older checkpoints must be converted before that."""
    from zsmask.modeling.heads import VocabularyClassifier

    model = torch.nn.Sequential()
    model.add_module("classifier", VocabularyClassifier(8, 10.0, 100.0, 0.0, "softmax", 1))
    old = {"classifier.logit_scale": torch.tensor(2.0), "classifier.void_embedding": torch.arange(8.0)}
    torch.save({"model": old}, tmp_path / "old.pth")
    result = SlimCheckpointer(model).load(str(tmp_path / "old.pth"))
    assert torch.equal(model.classifier.void_embedding, torch.arange(8.0)[None])
    assert float(model.classifier.logit_scale) == 2.0
    assert not result.get("incompatible_keys", None) or not result["incompatible_keys"].incorrect_shapes


class _TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(2, 2, bias=False)
        self.b = torch.nn.Linear(2, 2, bias=False)


def _step_with_grads(clip_type, clip_value=1.0):
    cfg = add_zsmask_config(get_cfg())
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = "SGD", 1.0, 0.0
    cfg.SOLVER.WEIGHT_DECAY = cfg.SOLVER.WEIGHT_DECAY_NORM = cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.update(ENABLED=True, CLIP_TYPE=clip_type, CLIP_VALUE=clip_value, NORM_TYPE=2.0)
    model = _TwoLayers()
    opt = build_optimizer(cfg, model)
    model.a.weight.grad = torch.full((2, 2), 1.5)  # norm 3
    model.b.weight.grad = torch.full((2, 2), 2.0)  # norm 4 -> global norm 5
    start = [p.detach().clone() for p in (model.a.weight, model.b.weight)]
    opt.step()
    return [s - p.detach() for s, p in zip(start, (model.a.weight, model.b.weight))]  # = clipped grads


def test_full_model_gradient_clipping_clips_global_norm():
    da, db = _step_with_grads("full_model")
    assert torch.linalg.vector_norm(torch.cat([da.flatten(), db.flatten()])).item() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(da, torch.full((2, 2), 1.5 / 5), rtol=1e-4)  # direction kept: scaled by 1/5
    assert torch.allclose(db, torch.full((2, 2), 2.0 / 5), rtol=1e-4)

    da, db = _step_with_grads("norm")  # detectron2's per-parameter clipping still works
    assert torch.linalg.vector_norm(da).item() == pytest.approx(1.0, rel=1e-4)
    assert torch.linalg.vector_norm(db).item() == pytest.approx(1.0, rel=1e-4)

    with pytest.raises(ValueError, match="CLIP_VALUE must be > 0"):
        _step_with_grads("full_model", clip_value=0.0)


def test_non_finite_values_stop_training_with_a_clear_error(world, tmp_path):
    cfg = _in_process_cfg(world, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path), "DATASETS.TEST", "()")
    trainer = Trainer(cfg)
    with torch.no_grad():  # diverged predictions: the matcher stops first, naming the outputs
        trainer.model.classifier.void_embedding.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite matching cost.*pred_logits or pred_masks"):
        trainer.train()

    trainer = Trainer(cfg)
    with torch.no_grad():  # finite predictions, non-finite loss weight: detectron2 names the losses
        trainer.model.criterion.weight_dict["loss_dice"] = float("inf")
    with pytest.raises(FloatingPointError, match=r"(?s)infinite or NaN.*loss_dice"):
        trainer.train()
