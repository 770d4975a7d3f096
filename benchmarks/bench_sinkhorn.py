"""Benchmark zsmask's Multi-Prompt Sinkhorn with early stopping against a fixed 100-iteration
log-domain loop (OTSeg Algorithm 1 run to t_max, as the authors' code does when it does not
converge) on the same inputs, in one process.

Inputs are MPS problems of OTSeg's sizes: per image and class, the cosine scores (M pixels x N
prompts) of structured pixel embeddings (a few regions, each near one class) against N prompt
embeddings per class. Both runs go through :func:`multi_prompt_sinkhorn`; the early-stopping one
uses ``tol`` (row-marginal L1 error, the columns being exact), the reference ``tol=None`` with
``max_iter=100``. Prints a markdown table: iterations used, forward and forward+backward times,
the speed-up (reference time / early-stopping time) and the largest difference of the refined
score maps S* (Eq. 9, what the model uses) between the two.

    .venv/bin/python benchmarks/bench_sinkhorn.py [--device DEVICE] [--runs 5] [--tol 1e-6]
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", category=FutureWarning)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsmask.modeling.optimal_transport import multi_prompt_sinkhorn  # noqa: E402

# (name, batch, classes K, pixel grid side, prompts N, epsilon)
CASES = [
    ("toy (16 x 24 cls, 16^2 px, N=4)", 16, 24, 16, 4, 0.05),
    ("VOC (2 x 20 cls, 32^2 px, N=6)", 2, 20, 32, 6, 0.05),
    ("COCO-Stuff (2 x 171 cls, 32^2 px, N=8)", 2, 171, 32, 8, 0.05),
    ("COCO-Stuff, eps 0.02", 2, 171, 32, 8, 0.02),
]
FIXED_ITERATIONS = 100


def make_scores(batch, classes, side, prompts, device, dim=512):
    """(B, K, M, N) cosine scores of region-structured pixels against per-class prompts."""
    generator = torch.Generator().manual_seed(0)
    class_centres = F.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    text = F.normalize(class_centres[:, None] + 0.5 * torch.randn(classes, prompts, dim, generator=generator)
                       / dim ** 0.5, dim=-1)
    coarse = torch.randint(classes, (batch, 1, 4, 4), generator=generator).float()
    regions = F.interpolate(coarse, size=(side, side), mode="nearest").long().flatten(1)  # (B, M)
    pixels = F.normalize(class_centres[regions] + torch.randn(batch, side * side, dim, generator=generator)
                         / dim ** 0.5, dim=-1)
    return torch.einsum("bmd,knd->bkmn", pixels, text).to(device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(True)

    rows = []
    for name, batch, classes, side, prompts, epsilon in CASES:
        scores = make_scores(batch, classes, side, prompts, device)
        early = multi_prompt_sinkhorn(scores, epsilon, FIXED_ITERATIONS, args.tol)
        fixed = multi_prompt_sinkhorn(scores, epsilon, FIXED_ITERATIONS, None)
        per_prompt_diff = (early.refined - fixed.refined).abs().max().item()
        map_diff = (early.refined.sum(-1) - fixed.refined.sum(-1)).abs().max().item()

        def forward(tol):
            return lambda: multi_prompt_sinkhorn(scores, epsilon, FIXED_ITERATIONS, tol)

        def forward_backward(tol):
            def run():
                leaf = scores.detach().requires_grad_()
                multi_prompt_sinkhorn(leaf, epsilon, FIXED_ITERATIONS, tol).refined.sum().backward()
            return run

        t_early, t_fixed = timed(forward(args.tol), device, args.runs), timed(forward(None), device, args.runs)
        tb_early = timed(forward_backward(args.tol), device, args.runs)
        tb_fixed = timed(forward_backward(None), device, args.runs)
        rows.append((name, epsilon, early.iterations, t_early * 1e3, t_fixed * 1e3, t_fixed / t_early,
                     tb_early * 1e3, tb_fixed * 1e3, tb_fixed / tb_early, per_prompt_diff, map_diff))

    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, tol {args.tol:g}, median of {args.runs}")
    print()
    print("| case | eps | iters (early) | fwd early ms | fwd 100-iter ms | speed-up | fwd+bwd early ms "
          "| fwd+bwd 100-iter ms | speed-up | max abs diff M N T*.S | max abs diff S* |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {:g} | {} | {:.1f} | {:.1f} | {:.2f}x | {:.1f} | {:.1f} | {:.2f}x | {:.1e} | {:.1e} |".format(*row))
    worst = max(row[-1] for row in rows)
    print()
    print(f"largest difference of the refined maps S*: {worst:.1e} ({'within' if worst <= 1e-4 else 'ABOVE'} 1e-4)")


if __name__ == "__main__":
    main()
