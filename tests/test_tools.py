"""tools/benchmark.py and tools/analyze_model.py on a tiny model bundle on disk (config yaml +
checkpoint): table rows and their values, memory probes, FLOP handles, bad input."""
import json
import math
import os
import re
import runpy
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis
from torch import nn

import zsmask.modeling  # noqa: F401  (registers the meta-architecture and its parts)
from zsmask.engine import build_config, load_inference_model
from zsmask.modeling.pixel_decoder.ops.deformable_attention import MSDeformAttn

from conftest import write_tiny_model_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["cat", "dog", "grass", "sheep"]
# An unavailable device on every machine: no CUDA at all, or an index past the last GPU.
MISSING_DEVICE = "cuda:99" if torch.cuda.is_available() else "cuda"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A dumped config yaml of the tiny model (trained on a registered 4-class split, tested on
    all 4 classes) and its seeded random weights saved by detectron2's checkpointer."""
    return write_tiny_model_files(tmp_path_factory.mktemp("tools"), f"tools{os.getpid()}", CLASSES)


@pytest.fixture(scope="module")
def benchmark():
    return runpy.run_path(os.path.join(ROOT, "tools", "benchmark.py"))


@pytest.fixture(scope="module")
def analyze():
    return runpy.run_path(os.path.join(ROOT, "tools", "analyze_model.py"))


def test_the_dumped_config_loads_with_the_saved_weights(bundle):
    config, weights = bundle
    cfg = build_config(config)
    assert cfg.MODEL.META_ARCHITECTURE == "ZeroShotMaskFormer" and cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM == 32
    model, frozen = load_inference_model(config, weights, "cpu")
    assert frozen.MODEL.WEIGHTS == weights and not model.training
    torch.manual_seed(0)
    reference = build_model(cfg)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(p, q), name


# ------------------------------------------------------------------ benchmark
def test_benchmark_one_row_per_config_and_device_with_consistent_numbers(bundle, benchmark, tmp_path, capsys):
    config, weights = bundle
    second = str(tmp_path / "second.yaml")
    shutil.copy(config, second)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = tmp_path / "bench.json"
    code = benchmark["main"](["--config-file", config, second, "--device", *devices, "--weights", weights,
                              "--image-size", "64", "64", "--batch-size", "2", "--warmup", "1", "--iterations", "2",
                              "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out.read_text())
    rows = summary["rows"]
    assert [(r["config"], r["device"]) for r in rows] == [(c, d) for c in (config, second) for d in devices]
    assert summary["errors"] == [] and summary["image_size"] == [64, 64] and summary["iterations"] == 2
    for r in rows:
        assert r["batch"] == 2 and r["classes"] == len(CLASSES) and r["weights"] == weights
        assert len(r["latency_ms"]) == 2 and all(t > 0 and math.isfinite(t) for t in r["latency_ms"])
        assert min(r["latency_ms"]) <= r["median_ms"] <= r["p90_ms"] <= max(r["latency_ms"])
        assert r["mean_ms"] == pytest.approx(np.mean(r["latency_ms"]))
        assert r["images_per_s"] == pytest.approx(2 * 1000.0 / r["mean_ms"])
        assert r["peak_mib"] > 0 and 0 <= r["increase_mib"] <= r["peak_mib"]
    # the printed header and table: one line per row
    assert f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads" in printed
    header = next(line for line in printed.splitlines() if line.startswith("config"))
    for column in ("device", "batch", "classes", "mean ms", "median ms", "p90 ms", "images/s", "peak MiB",
                   "+MiB in loop", "memory note"):
        assert column in header
    table_rows = [line for line in printed.splitlines() if line.startswith((config, second))]
    assert len(table_rows) == len(rows)
    assert f"{rows[0]['images_per_s']:.2f}" in table_rows[0]


def test_benchmark_vocabulary_and_overrides(bundle, benchmark, tmp_path):
    config, weights = bundle
    out = tmp_path / "bench.json"
    code = benchmark["main"](["--config-file", config, "--device", "cpu", "--weights", weights, "--image-size", "64",
                              "48", "--warmup", "0", "--iterations", "1", "--vocabulary", "cat, dog", "--json",
                              str(out), "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", "False"])
    assert code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["classes"] == 2 and len(row["latency_ms"]) == 1


def test_benchmark_unavailable_device_is_reported_and_skipped(bundle, benchmark, tmp_path, capsys):
    config, weights = bundle
    out = tmp_path / "bench.json"
    code = benchmark["main"](["--config-file", config, "--device", MISSING_DEVICE, "cpu", "--weights", weights,
                              "--image-size", "64", "64", "--warmup", "0", "--iterations", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code != 0
    assert f"error: {config} on {MISSING_DEVICE}: device {MISSING_DEVICE!r} is not available" in printed
    summary = json.loads(out.read_text())
    assert [r["device"] for r in summary["rows"]] == ["cpu"]  # the other rows still run
    assert [e["device"] for e in summary["errors"]] == [MISSING_DEVICE]
    assert "not a device name" in benchmark["device_error"]("banana")
    assert "not supported" in benchmark["device_error"]("meta")
    assert benchmark["device_error"]("cpu") is None


def test_benchmark_bad_config_and_weights_are_reported(bundle, benchmark, tmp_path, capsys):
    config, _ = bundle
    missing = str(tmp_path / "nope.yaml")
    assert benchmark["main"](["--config-file", missing, "--device", "cpu", "--iterations", "1"]) == 1
    assert benchmark["main"](["--config-file", config, "--device", "cpu", "--iterations", "1",
                              "--weights", str(tmp_path / "nope.pth")]) == 1
    printed = capsys.readouterr().out
    assert f"config file not found: {missing}" in printed
    assert "model weights not found" in printed and "nope.pth" in printed


def test_measure_times_every_iteration_after_warmup(benchmark):
    calls = []

    def model(inputs):
        calls.append(len(inputs))
        time.sleep(0.02)

    inputs = benchmark["random_inputs"](3, 8, 8, ["a", "b"])
    assert inputs[0]["image"].shape == (3, 8, 8) and inputs[0]["vocabulary"] == ["a", "b"]
    assert float(inputs[0]["image"].min()) >= 0 and float(inputs[0]["image"].max()) <= 255
    assert torch.equal(inputs[0]["image"], inputs[0]["image"].round())
    assert torch.equal(benchmark["random_inputs"](3, 8, 8)[2]["image"], inputs[2]["image"])  # seeded
    result = benchmark["measure"](model, inputs, 2, 3, "cpu")
    assert calls == [3] * 5
    assert len(result["latency_ms"]) == 3 and all(t >= 20 for t in result["latency_ms"])
    assert result["images_per_s"] == pytest.approx(3 * 1000.0 / result["mean_ms"])
    with pytest.raises(ValueError, match="iterations"):
        benchmark["measure"](model, inputs, 0, 0, "cpu")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_cpu_memory_probe_sees_an_allocation_in_the_span(benchmark):
    probe = benchmark["CpuMemoryProbe"]()
    probe.start()
    block = torch.ones(32 * 1024 * 1024 // 4)  # 32 MiB, written
    result = probe.stop()
    del block
    assert probe.use_proc and "VmHWM" in result["memory_note"]
    assert result["increase_mib"] >= 30 and result["peak_mib"] >= result["increase_mib"]


def test_cpu_memory_probe_falls_back_to_ru_maxrss_without_proc(benchmark, tmp_path):
    probe = benchmark["CpuMemoryProbe"](proc_dir=str(tmp_path / "no_proc"))
    probe.start()
    result = probe.stop()
    assert not probe.use_proc and "ru_maxrss" in result["memory_note"] and result["peak_mib"] > 0


# ------------------------------------------------------------------ analyze_model
def _table_rows(printed: str, header: str):
    """``{first cell: other cells}`` of the plain table whose header line starts with ``header``."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith(("total", "uncounted")):
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def test_analyze_parameters_match_the_model(bundle, analyze, capsys):
    config, weights = bundle
    assert analyze["main"](["--config-file", config, "--weights", weights, "--tasks", "parameter", "--depth", "1"]) == 0
    printed = capsys.readouterr().out
    rows = {name: [int(c.replace(",", "")) for c in cells]
            for name, cells in _table_rows(printed, "module").items()}
    model, _ = load_inference_model(config, weights, "cpu")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < total  # CLIP is frozen, the rest trains
    assert rows["model"] == [total, trainable, total - trainable]
    children = {name for name, m in model.named_children() if sum(p.numel() for p in m.parameters())}
    assert set(rows) == {"model"} | children  # depth 1: the model and its top-level parts
    assert sum(rows[c][0] for c in children) == total
    assert rows["clip"][1] == 0 and rows["pixel_decoder"][2] == 0
    assert f"total {total:,}" in printed and f"trainable {trainable:,}" in printed


def test_analyze_flops_count_the_deformable_attention(bundle, analyze, capsys):
    config, weights = bundle
    code = analyze["main"](["--config-file", config, "--weights", weights, "--tasks", "flop", "--image-size", "64",
                            "64", "--vocabulary", "cat,dog,grass"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "one fused multiply-add = one flop" in printed
    assert re.search(r"\| module\s+\| #parameters\s+\| #flops", printed)
    decoder = re.search(r"^\| pixel_decoder\s+\|[^|]+\|\s*([\d.]+)([KMG]?)\s*\|", printed, re.M)
    assert decoder and float(decoder[1]) > 0
    total = float(re.search(r"^total ([\d.]+) GFLOPs", printed, re.M)[1])
    assert total > 0
    operators = _table_rows(printed, "operator")
    for op in ("embedding_bag", "scaled_dot_product_attention", "_native_multi_head_attention", "conv", "linear"):
        assert op in operators
    uncounted = re.search(r"^uncounted ops.*$", printed, re.M)[0]
    for op in ("embedding_bag", "_WeightedRowSum", "scaled_dot_product_attention", "_native_multi_head_attention",
               "linalg_vector_norm", "upsample"):
        assert op not in uncounted


def _count(analyze, module, *inputs, grad=False):
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle(**analyze["EXTRA_HANDLES"])
    analysis.unsupported_ops_warnings(False)
    with torch.set_grad_enabled(grad):
        return analysis.by_operator()


def test_flop_handles_follow_their_formulas(analyze):
    torch.manual_seed(0)
    # MSDeformAttn core: bags (N * Lq * M) x per bag (L * P * 4 corners) x D channels
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3, impl="pytorch").eval()
    shapes = torch.tensor([[4, 4], [2, 2]])
    starts = torch.tensor([0, 16])
    value = torch.randn(1, 20, 16)
    query = torch.randn(1, 5, 16)
    reference = torch.rand(1, 5, 2, 2)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q, r, v):
            return self.attn(q, r, v, shapes, starts)

    expected = (1 * 5 * 2) * (2 * 3 * 4) * 8
    assert _count(analyze, Wrapper(), query, reference, value)["embedding_bag"] == expected
    # with gradients the CPU path is the autograd Function _WeightedRowSum around the same sum
    assert _count(analyze, Wrapper(), query, reference, value, grad=True)["embedding_bag"] == expected

    class Sdpa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 6)
    assert _count(analyze, Sdpa(), q, k, v)["scaled_dot_product_attention"] == 2 * 3 * 7 * 5 * (4 + 6)

    class FastMha(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    counts = _count(analyze, FastMha().eval(), torch.randn(3, 5, 8))
    assert counts["_native_multi_head_attention"] == 3 * (4 * 5 * 8 * 8 + 2 * 5 * 5 * 8)


def test_analyze_reports_the_part_whose_trace_fails(bundle, analyze, capsys):
    config, weights = bundle
    code = analyze["main"](["--config-file", config, "--weights", weights, "--tasks", "flop", "--image-size", "64",
                            "64", "MODEL.ZSMASK.POST_PROCESSORS", "['EigensegmentFusion']"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "error: FLOP counting of" in printed and "post-processor EigensegmentFusion (zsmask/" in printed
    assert "MODEL.ZSMASK.POST_PROCESSORS '[]'" in printed
    # the failed trace leaves no hook on the frozen CLIP that every later model of the process shares
    from zsmask.modeling.clip.shared import live_frozen_clips

    assert live_frozen_clips() and not any(m._forward_hooks or m._forward_pre_hooks
                                           for clip in live_frozen_clips() for m in clip.modules())
    assert analyze["main"](["--config-file", str(config) + ".missing"]) == 1
    assert "error: cannot build the model" in capsys.readouterr().out
