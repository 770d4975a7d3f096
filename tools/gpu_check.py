#!/usr/bin/env python
"""GPU self-check: does zsmask work, and how fast, on this CUDA machine? One table, exit 1 on a failure.

    python tools/gpu_check.py [--quick] [--device cuda:0] [--json gpu_check.json]

Checks, in order (each one's failure is a row, the others still run):

(a) **MSDeformAttn kernel**: builds (or loads) zsmask's CUDA kernel and compares it with the
    PyTorch path at Mask2Former's encoder shapes (3 levels at strides 8/16/32 of a 512² and a
    1024² image, 8 heads x 32 channels, 4 points, batch 2, Lq = S): fp32 forward and backward
    (max |diff| of the output <= 1e-4, of each gradient <= 1e-4 x max(1, max |grad|)), then the
    full ``MSDeformAttn`` module under fp16 autocast (<= 1e-2 relative); median times of both.
(b) **toy training with AMP**: ``configs/toy/hungarian.yaml`` for 100 iterations on CUDA with
    ``SOLVER.AMP.ENABLED True``, on a small toy world (512 scenes) and a briefly pretrained toy
    CLIP, both cached: the loss must be finite and the mean of the last 10 iterations below 0.9 x
    the first 10.
(c) **real-size training steps**: one optimiser step (after a warm-up) of
    ``configs/coco/split_matching.yaml`` and of ``configs/coco/alignzeg.yaml`` with random CLIP
    weights (``MODEL.CLIP.PRETRAINED ""``, ``MODEL.WEIGHTS ""``) on synthetic images at each
    config's crop size (512², 640²), batch 2: s/iter and ``torch.cuda.max_memory_allocated``.
(d) **inference throughput**: ``configs/voc/hungarian.yaml`` at 512², batch 1, images/s
    (``tools/benchmark.py``'s measurement).

``--quick`` keeps every check but makes it smaller (512² only, 40 toy iterations, fewer timing
repeats). Without a CUDA device the tool says it needs one and exits 0 having run nothing;
``--allow-cpu`` runs the same code on the CPU (slow; it checks the tool, not a GPU).
"""
import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import List

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in (ROOT, os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "tools")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from bench_split_matching import _median_seconds  # noqa: E402  (warm-up, then the median of synchronised runs)

MIB = 1024.0 ** 2
GPU_NEEDED = "tools/gpu_check.py needs a CUDA GPU"


@dataclass
class Row:
    """One line of the table: what was checked, what was measured, the pass rule, the verdict."""

    check: str
    measured: str
    criterion: str
    status: str  # "ok" or "FAIL"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / MIB:.0f} MiB" if device.type == "cuda" else "- (CPU)"


def _verdict(passed: bool) -> str:
    return "ok" if passed else "FAIL"


# ---- (a) MSDeformAttn kernel vs PyTorch path ------------------------------------------------------
def check_ms_deform_attn(device: torch.device, quick: bool) -> List[Row]:
    from bench_ms_deform_attn import compare, make_inputs

    from zsmask.modeling.pixel_decoder.ops import IMPL_CUDA, cuda_kernel_status, ms_deform_attn, \
        ms_deform_attn_pytorch

    start = time.monotonic()
    status = cuda_kernel_status()
    rows = [Row("(a) kernel build", f"{time.monotonic() - start:.0f} s: {status.reason}", "builds and loads",
                _verdict(status.available))]
    if not status.available:
        return rows

    def kernel(value, shapes, starts, locations, weights):
        return ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_CUDA)

    def pytorch(value, shapes, starts, locations, weights):
        return ms_deform_attn_pytorch(value, shapes, locations, weights)

    repeats = 3 if quick else 10
    for size in (512,) if quick else (512, 1024):
        inputs = make_inputs(size, 2, device)
        t_kernel, t_torch, diff, _ = compare(kernel, pytorch, inputs, False, repeats)
        rows.append(Row(f"(a) fp32 forward {size}² b2", f"max |diff| {diff:.1e}; kernel {1000 * t_kernel:.2f} ms, "
                        f"PyTorch {1000 * t_torch:.2f} ms ({t_torch / t_kernel:.1f}x)", "|diff| <= 1e-4",
                        _verdict(diff <= 1e-4)))
        t_kernel, t_torch, _, grad_diff = compare(kernel, pytorch, inputs, True, repeats)
        rows.append(Row(f"(a) fp32 fwd+bwd {size}² b2", f"max grad diff {grad_diff:.1e} of max |grad|; kernel "
                        f"{1000 * t_kernel:.2f} ms, PyTorch {1000 * t_torch:.2f} ms ({t_torch / t_kernel:.1f}x)",
                        "<= 1e-4 x max(1, |grad|)", _verdict(grad_diff <= 1e-4)))
        rows.append(autocast_module_row(size, device, repeats))
    return rows


def autocast_module_row(size: int, device: torch.device, repeats: int, impls=None) -> Row:
    """The full MSDeformAttn module (encoder self-attention, Lq = S, batch 2) under fp16
    autocast, ``impls[0]`` (default: the kernel) vs ``impls[1]`` (default: the PyTorch path) with
    the same weights: output and gradient agreement, forward + backward times."""
    from bench_ms_deform_attn import CHANNELS, HEADS, POINTS, STRIDES, encoder_levels

    from zsmask.modeling.pixel_decoder.ops import IMPL_CUDA, IMPL_PYTORCH, MSDeformAttn

    impls = impls or (IMPL_CUDA, IMPL_PYTORCH)
    levels = len(STRIDES)
    d_model = HEADS * CHANNELS
    torch.manual_seed(0)
    modules = [MSDeformAttn(d_model, levels, HEADS, POINTS, impl=impl).to(device) for impl in impls]
    modules[1].load_state_dict(modules[0].state_dict())
    shapes, starts, centres = (t.to(device) for t in encoder_levels(size))
    total = centres.shape[0]
    reference = centres[None, :, None, :].expand(2, total, levels, 2).contiguous()
    flatten = torch.randn(2, total, d_model, device=device, generator=torch.Generator(device).manual_seed(0))

    def step(module):
        module.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = module(flatten, reference, flatten, shapes, starts)
        out.float().square().mean().backward()
        return out.detach().float()

    outs = [step(m) for m in modules]
    scale = max(1.0, outs[1].abs().max().item())
    diff = (outs[0] - outs[1]).abs().max().item() / scale
    grads = [torch.cat([p.grad.flatten().float() for p in m.parameters()]) for m in modules]
    grad_diff = ((grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp_min(1e-12)).item()
    times = [_median_seconds(lambda m=m: step(m), repeats, device) for m in modules]
    return Row(f"(a) fp16 autocast module {size}² b2",
               f"rel diff out {diff:.1e}, grads {grad_diff:.1e}; fwd+bwd kernel {1000 * times[0]:.2f} ms, "
               f"PyTorch {1000 * times[1]:.2f} ms ({times[1] / times[0]:.1f}x)", "both <= 1e-2",
               _verdict(diff <= 1e-2 and grad_diff <= 1e-2))


# ---- (b) toy training on CUDA with AMP ----------------------------------------------------------
TOY_CONFIG = os.path.join(ROOT, "configs", "toy", "hungarian.yaml")


def toy_training_losses(device: torch.device, iterations: int, output_dir: str, world=None, clip_recipe=None):
    """Train ``configs/toy/hungarian.yaml`` with AMP for ``iterations`` on a small toy world
    (default: 512 scenes, a toy CLIP pretrained for 60 steps; both cached); returns (total losses
    per iteration, seconds per iteration, AMP in use, peak memory)."""
    from detectron2.utils.env import seed_all_rng

    from zsmask.data.toy_world import ToyWorldParams, register_toy_world
    from zsmask.engine import Trainer, build_config
    from zsmask.modeling.clip.toy_clip import ToyClipRecipe
    from zsmask.toy import prepare_toy_world

    world = world or ToyWorldParams(num_train=512, num_val=16)
    clip_recipe = clip_recipe or ToyClipRecipe(steps=60, pool_size=1920, eval_crops_per_class=4,
                                                 scene_pool=128, eval_scenes=10)
    register_toy_world("toy_world_gpu_check", world)
    prepared = prepare_toy_world(world, clip_recipe, print_fn=lambda text: None)
    cfg = build_config(TOY_CONFIG, [
        "MODEL.DEVICE", str(device), "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", str(iterations),
        "MODEL.CLIP.PRETRAINED", prepared["clip_weights"], "DATASETS.TRAIN", "('toy_world_gpu_check_train',)",
        "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", output_dir])
    cfg.freeze()
    seed_all_rng(cfg.SEED)
    _reset_peak(device)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.monotonic()
    trainer.train()
    seconds = (time.monotonic() - start) / iterations
    amp = type(trainer._trainer).__name__ == "AMPTrainer"
    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    return losses, seconds, amp, _peak_mib(device)


def check_toy_training(device: torch.device, quick: bool, output_dir: str) -> List[Row]:
    iterations = 40 if quick else 100
    losses, seconds, amp, peak = toy_training_losses(device, iterations, output_dir)
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    finite = all(math.isfinite(v) for v in losses)
    passed = finite and len(losses) == iterations and last < 0.9 * first and (amp or device.type != "cuda")
    return [Row(f"(b) toy hungarian, AMP, {iterations} it", f"loss {first:.2f} -> {last:.2f} (first / last 10), "
                f"AMP {'on' if amp else 'off'}, {seconds:.3f} s/iter, peak {peak}",
                "finite, last < 0.9 x first, AMP on", _verdict(passed))]


# ---- (c) one real-size training step of the COCO configs ------------------------------------------
def coco_step(config: str, device: torch.device, repeats: int):
    """Median seconds of one optimiser step (forward, backward, AdamW) and the peak memory of the
    ``configs/coco/<config>.yaml`` model with random CLIP weights on synthetic images at the
    config's crop size, batch 2."""
    from bench_split_matching import synthetic_inputs
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    from zsmask.engine import build_config
    from zsmask.solver import build_optimizer

    cfg = build_config(os.path.join(ROOT, "configs", "coco", f"{config}.yaml"),
                       ["MODEL.DEVICE", str(device), "MODEL.WEIGHTS", "", "MODEL.CLIP.PRETRAINED", ""])
    size = int(cfg.INPUT.CROP.SIZE[0])
    train_set = cfg.DATASETS.TRAIN[0]
    inputs = synthetic_inputs(2, len(MetadataCatalog.get(train_set).stuff_classes), size, train_set)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    amp = bool(cfg.SOLVER.AMP.ENABLED) and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    losses = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            losses.update(model(inputs))
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()

    _reset_peak(device)
    seconds = _median_seconds(step, repeats, device)
    finite = all(math.isfinite(float(v.detach())) for v in losses.values())
    del model, optimizer
    return seconds, _peak_mib(device), finite, size, amp


def check_coco_steps(device: torch.device, quick: bool) -> List[Row]:
    rows = []
    for config in ("split_matching", "alignzeg"):
        seconds, peak, finite, size, amp = coco_step(config, device, 2 if quick else 5)
        rows.append(Row(f"(c) coco/{config} step {size}² b2", f"{seconds:.3f} s/iter, peak {peak}, "
                        f"AMP {'on' if amp else 'off'} (config)", "finite losses", _verdict(finite)))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---- (d) inference throughput --------------------------------------------------------------------
def check_inference(device: torch.device, quick: bool) -> List[Row]:
    from benchmark import benchmark_one

    args = argparse.Namespace(weights="", vocabulary=None, batch_size=1, image_size=[512, 512],
                              warmup=2 if quick else 5, iterations=5 if quick else 20,
                              opts=["MODEL.CLIP.PRETRAINED", ""])
    row = benchmark_one(os.path.join(ROOT, "configs", "voc", "hungarian.yaml"), str(device), args)
    return [Row("(d) voc/hungarian inference 512² b1", f"{row['images_per_s']:.1f} images/s "
                f"({row['median_ms']:.1f} ms median), peak {row['peak_mib']:.0f} MiB", "runs",
                _verdict(math.isfinite(row["images_per_s"])))]


# ---- the run ------------------------------------------------------------------------------------
def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what = (f"{props.name} ({props.total_memory / 1024 ** 3:.0f} GiB, sm_{props.major}{props.minor}), "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        what = f"CPU ({torch.get_num_threads()} threads; --allow-cpu: checks the tool, not a GPU)"
    return f"{what}; torch {torch.__version__}; Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}"


def table(rows: List[Row]) -> str:
    from tabulate import tabulate

    return tabulate([[r.check, r.measured, r.criterion, r.status] for r in rows],
                    headers=["check", "measured", "pass if", "status"], tablefmt="github")


def run_checks(device: torch.device, quick: bool, output_dir: str, only=None) -> List[Row]:
    checks = {
        "kernel": lambda: check_ms_deform_attn(device, quick),
        "toy": lambda: check_toy_training(device, quick, output_dir),
        "coco": lambda: check_coco_steps(device, quick),
        "inference": lambda: check_inference(device, quick),
    }
    rows = []
    for name, check in checks.items():
        if only and name not in only:
            continue
        start = time.monotonic()
        try:
            found = check()
        except Exception as exc:  # noqa: BLE001 - a failing check is a row; the others still run
            traceback.print_exc()
            found = [Row(f"{name} check", f"{type(exc).__name__}: {exc}", "runs", "FAIL")]
        print(f"[gpu_check] {name}: {time.monotonic() - start:.0f} s", flush=True)
        rows += found
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller versions of every check")
    parser.add_argument("--device", default="cuda", help="the CUDA device to check (default: cuda)")
    parser.add_argument("--only", nargs="+", choices=["kernel", "toy", "coco", "inference"], default=None,
                        help="run only these checks")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the checks on the CPU when there is no GPU (slow; tests the tool itself)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows to this JSON file")
    parser.add_argument("--output-dir", default=None, help="scratch folder for the toy run (default: a temporary one)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available() and not args.allow_cpu:
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        print(f"{GPU_NEEDED}: this torch ({torch.__version__}, {build}) sees no CUDA device, so nothing was run. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")
        return 0
    device = torch.device(args.device if torch.cuda.is_available() else "cpu")
    from detectron2.utils.logger import setup_logger

    setup_logger(name="zsmask")
    setup_logger(name="detectron2", abbrev_name="d2")
    logging.getLogger().setLevel(logging.WARNING)
    start = time.monotonic()
    header = machine_line(device)
    print(f"[gpu_check] {header}", flush=True)
    with tempfile.TemporaryDirectory(prefix="zsmask-gpu-check-") as scratch:
        rows = run_checks(device, args.quick, args.output_dir or scratch, args.only)
    total = time.monotonic() - start
    print(f"\nzsmask GPU self-check{' (--quick)' if args.quick else ''}: {header}; {total / 60:.1f} min")
    print(table(rows))
    failed = [r for r in rows if r.status == "FAIL"]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} failed")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": header, "quick": args.quick, "seconds": total,
                       "rows": [asdict(r) for r in rows]}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
