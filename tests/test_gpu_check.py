"""tools/gpu_check.py: without CUDA it runs nothing and exits 0; its checks' code runs (on the CPU)."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_cuda_it_says_so_runs_nothing_and_exits_0(tmp_path):
    report = tmp_path / "rows.json"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--json", str(report)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(gpu_check.GPU_NEEDED)
    assert "nothing was run" in out.stdout and torch.__version__ in out.stdout
    assert "[gpu_check]" not in out.stdout and not report.exists()  # no check started
    assert os.listdir(tmp_path) == []


def test_autocast_module_row_on_identical_paths_agrees_exactly():
    from zsmask.modeling.pixel_decoder.ops import IMPL_PYTORCH

    row = gpu_check.autocast_module_row(64, torch.device("cpu"), repeats=1, impls=(IMPL_PYTORCH, IMPL_PYTORCH))
    assert row.status == "ok" and row.check == "(a) fp16 autocast module 64² b2"
    assert "rel diff out 0.0e+00, grads 0.0e+00" in row.measured


def test_kernel_check_without_the_kernel_is_one_failed_row():
    rows = gpu_check.check_ms_deform_attn(torch.device("cpu"), quick=True)
    if torch.cuda.is_available():
        pytest.skip("the kernel may be available here")
    assert [(r.check, r.status) for r in rows] == [("(a) kernel build", "FAIL")]
    assert "no CUDA device" in rows[0].measured


def test_failing_check_is_a_row_and_the_exit_status_is_1(tmp_path, monkeypatch, capsys):
    def broken(device, quick):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "check_inference", broken)
    report = tmp_path / "rows.json"
    assert gpu_check.main(["--allow-cpu", "--only", "inference", "--json", str(report)]) == 1
    printed = capsys.readouterr().out
    assert "| inference check | RuntimeError: CUDA error: an illegal memory access was encountered" in printed
    assert "0 ok, 1 failed" in printed
    rows = json.loads(report.read_text())["rows"]
    assert rows == [{"check": "inference check", "measured": "RuntimeError: CUDA error: an illegal memory access "
                     "was encountered", "criterion": "runs", "status": "FAIL"}]


@pytest.mark.slow
def test_toy_training_check_runs_and_its_loss_falls(tmp_path):
    """The AMP training check's own code on the CPU (AMP falls back to fp32 there), on a smaller
    world and CLIP than the check's own."""
    from zsmask.data.toy_world import ToyWorldParams
    from zsmask.modeling.clip.toy_clip import ToyClipRecipe

    losses, seconds, amp, peak = gpu_check.toy_training_losses(
        torch.device("cpu"), 20, str(tmp_path), ToyWorldParams(num_train=64, num_val=4),
        ToyClipRecipe(steps=30, batch_size=64, pool_size=960, eval_crops_per_class=2, scene_pool=64,
                      eval_scenes=4))
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    assert not amp and peak == "- (CPU)" and seconds > 0
