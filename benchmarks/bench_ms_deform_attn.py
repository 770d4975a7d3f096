"""Benchmark the MSDeformAttn core: zsmask's PyTorch path vs Mask2Former's
``ms_deform_attn_core_pytorch`` (and, on CUDA, zsmask's own kernel vs its PyTorch path).

Shapes are Mask2Former's pixel-decoder encoder self-attention (Lq = S): 3 levels at strides
8/16/32 of a 512x512 or 1024x1024 input, 8 heads x 32 channels, 4 points, batch 1 and 2.
Sampling locations are the encoder's: each query's reference point (its pixel centre, mapped to
every level) plus offsets of a few pixels. Runs are interleaved (ours, peer, ours, ...) after a
warm-up so that background load hits both alike; the table shows medians.

    .venv/bin/python benchmarks/bench_ms_deform_attn.py [--device cpu] [--repeats 5]
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import load_peer_module  # noqa: E402

from zsmask.modeling.pixel_decoder.ops import (  # noqa: E402
    IMPL_CUDA,
    cuda_kernel_status,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)

HEADS, CHANNELS, POINTS = 8, 32, 4
STRIDES = (8, 16, 32)


def encoder_levels(image_size, dtype=torch.float32):
    """The pixel decoder's levels for a square ``image_size`` input: spatial shapes ``(L, 2)``,
    level start offsets ``(L,)`` and every position's pixel centre ``(S, 2)``, normalised (x, y),
    which is the encoder's reference point on every level."""
    shapes = torch.tensor([[image_size // s, image_size // s] for s in STRIDES], dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    centres = []
    for height, width in shapes.tolist():
        ys, xs = torch.meshgrid((torch.arange(height, dtype=dtype) + 0.5) / height,
                                (torch.arange(width, dtype=dtype) + 0.5) / width, indexing="ij")
        centres.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return shapes, starts, torch.cat(centres, 0)


def make_inputs(image_size, batch, device, dtype=torch.float32, seed=0):
    """Random value / weights and encoder-style sampling locations for one configuration."""
    gen = torch.Generator().manual_seed(seed)
    shapes, starts, reference = encoder_levels(image_size, dtype)
    levels = len(STRIDES)
    total = reference.shape[0]
    value = torch.randn(batch, total, HEADS, CHANNELS, generator=gen, dtype=dtype)
    offsets_px = torch.randn(batch, total, HEADS, levels, POINTS, 2, generator=gen, dtype=dtype) * 2.0
    locations = reference[None, :, None, None, None, :] + offsets_px / shapes.flip(-1).to(dtype)[None, None, None, :, None, :]
    weights = torch.randn(batch, total, HEADS, levels * POINTS, generator=gen, dtype=dtype).softmax(-1)
    weights = weights.view(batch, total, HEADS, levels, POINTS)
    move = dict(device=device)
    return (value.to(**move), shapes.to(**move), starts.to(**move), locations.to(**move), weights.to(**move))


def run_once(fn, inputs, backward, grad_seed):
    """One timed call; returns (seconds, output, grads or None)."""
    value, shapes, starts, locations, weights = [t.detach().clone() for t in inputs]
    for tensor in (value, locations, weights):
        tensor.requires_grad_(backward)
    synchronize(value.device)
    start = time.perf_counter()
    out = fn(value, shapes, starts, locations, weights)
    if backward:
        out.backward(grad_seed)
    synchronize(value.device)
    elapsed = time.perf_counter() - start
    grads = (value.grad, locations.grad, weights.grad) if backward else None
    return elapsed, out.detach(), grads


def synchronize(device):
    if device.type != "cpu":
        torch.cuda.synchronize(device)


def compare(fn_a, fn_b, inputs, backward, repeats):
    """Interleaved timing of two implementations: (median a, median b, max |diff| of the output,
    max relative diff of the gradients (|diff| / max |grad| per input), or nan without backward)."""
    grad_seed = None
    if backward:
        out_shape = (inputs[0].shape[0], inputs[3].shape[1], HEADS * CHANNELS)
        grad_seed = torch.randn(out_shape, generator=torch.Generator().manual_seed(1),
                                dtype=inputs[0].dtype).to(inputs[0].device)
    _, out_a, grads_a = run_once(fn_a, inputs, backward, grad_seed)  # warm-up (and results)
    _, out_b, grads_b = run_once(fn_b, inputs, backward, grad_seed)
    diff = (out_a - out_b).abs().max().item()
    grad_diff = float("nan")
    if backward:
        grad_diff = max(((ga - gb).abs().max() / gb.abs().max()).item() for ga, gb in zip(grads_a, grads_b))
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(run_once(fn_a, inputs, backward, grad_seed)[0])
        times_b.append(run_once(fn_b, inputs, backward, grad_seed)[0])
    return statistics.median(times_a), statistics.median(times_b), diff, grad_diff


def _fmt(value: float) -> str:
    """Scientific notation, or a dash where a quantity does not apply (no backward pass)."""
    return "-" if math.isnan(value) else f"{value:.2e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_device = IMPL_CUDA if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"cpu or {IMPL_CUDA} (default: {default_device})")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per implementation (after a warm-up)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="input image sizes")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2], help="batch sizes")
    args = parser.parse_args()
    device = torch.device(args.device)

    peer = load_peer_module("modeling/pixel_decoder/ops/functions/ms_deform_attn_func.py", "peer_msda")

    def ours(value, shapes, starts, locations, weights):
        return ms_deform_attn_pytorch(value, shapes, locations, weights)

    def theirs(value, shapes, starts, locations, weights):
        return peer.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    def kernel(value, shapes, starts, locations, weights):
        return ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_CUDA)

    print(f"device: {device}, torch {torch.__version__}, threads: {torch.get_num_threads()}, "
          f"repeats: {args.repeats} (median), heads {HEADS} x channels {CHANNELS}, points {POINTS}, "
          f"levels at strides {STRIDES}\n")
    print("| input | batch | Lq = S | pass | ours PyTorch (s) | peer M2F PyTorch (s) | ours / peer "
          "| max abs diff out | max rel diff grads |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst_ratio = 0.0
    for size in args.sizes:
        for batch in args.batches:
            inputs = make_inputs(size, batch, device)
            for backward in (False, True):
                t_ours, t_peer, diff, grad_diff = compare(ours, theirs, inputs, backward, args.repeats)
                worst_ratio = max(worst_ratio, t_ours / t_peer)
                print(f"| {size}x{size} | {batch} | {inputs[0].shape[1]} | {'fwd+bwd' if backward else 'fwd'} "
                      f"| {t_ours:.4f} | {t_peer:.4f} | {t_ours / t_peer:.2f} | {diff:.2e} | {_fmt(grad_diff)} |", flush=True)
    print(f"\nworst ours/peer time ratio: {worst_ratio:.2f} ({'ok' if worst_ratio <= 1.0 else 'SLOWER than the peer'})")

    if device.type != "cpu":
        status = cuda_kernel_status()
        if not status.available:
            print(f"\nown kernel unavailable: {status.reason}")
            return
        print("\n| input | batch | pass | own kernel (s) | ours PyTorch (s) | speed-up | max abs diff out "
              "| max rel diff grads |")
        print("|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            for batch in args.batches:
                inputs = make_inputs(size, batch, device)
                for backward in (False, True):
                    t_kernel, t_torch, diff, grad_diff = compare(kernel, ours, inputs, backward, args.repeats)
                    print(f"| {size}x{size} | {batch} | {'fwd+bwd' if backward else 'fwd'} | {t_kernel:.5f} "
                          f"| {t_torch:.5f} | {t_torch / t_kernel:.1f}x | {diff:.2e} | {_fmt(grad_diff)} |", flush=True)


if __name__ == "__main__":
    main()
