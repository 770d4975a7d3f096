"""Benchmark zsmask's HungarianMatcher against Mask2Former's (the ``maskformer2`` peer).

Both matchers get identical inputs in one process: predicted mask logits at the prediction
resolution and boolean target masks at the input resolution (Mask2Former point-samples both
with the same normalised coordinates, converting the targets to the predictions' dtype).
``torch.manual_seed`` is reset before every call, so both draw the same random points and
must return identical assignments. Prints a markdown table.

    .venv/bin/python benchmarks/bench_matcher.py [--device DEVICE] [--runs 7]

``--device`` takes any torch device name (default ``cpu``; a GPU's name where one exists).
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch
from torch.nn import functional as F

# Deprecation notices (torch.jit.script, torch.cuda.amp.autocast) from detectron2 and the peer.
warnings.filterwarnings("ignore", category=FutureWarning)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from peers import load_peer_module  # noqa: E402

from zsmask.modeling.matcher import HungarianMatcher  # noqa: E402

COST_CLASS, COST_MASK, COST_DICE, NUM_POINTS = 2.0, 5.0, 5.0, 112 * 112

# (batch, queries, targets per image, classes, prediction side, target side)
CASES = [
    (8, 100, 20, 171, 128, 512),
    (2, 100, 5, 171, 128, 512),
]


def make_inputs(batch, queries, num_targets, num_classes, pred_side, target_side, device):
    """Random predictions and semantic-segmentation-like targets (a partition into regions)."""
    generator = torch.Generator().manual_seed(1234)
    pred_logits = torch.randn(batch, queries, num_classes + 1, generator=generator)
    pred_masks = 4.0 * torch.randn(batch, queries, pred_side, pred_side, generator=generator)
    pred_masks = F.avg_pool2d(pred_masks, 5, stride=1, padding=2)  # spatially smooth logits
    targets = []
    for _ in range(batch):
        coarse = torch.randint(num_targets, (1, 1, 16, 16), generator=generator).float()
        region = F.interpolate(coarse, size=(target_side, target_side), mode="nearest")[0, 0].long()
        masks = region[None] == torch.arange(num_targets)[:, None, None]
        labels = torch.randperm(num_classes, generator=generator)[:num_targets]
        targets.append({"labels": labels.to(device), "masks": masks.to(device)})
    outputs = {"pred_logits": pred_logits.to(device), "pred_masks": pred_masks.to(device)}
    return outputs, targets


def synchronize(device):
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def time_matchers(matchers, outputs, targets, runs, device):
    """Median wall time (ms) of ``runs`` seeded calls of each matcher after one warm-up each.

    Runs alternate between the matchers so that load from other processes affects both alike.
    Returns ``(times_ms, indices)``, one entry per matcher; indices are those of the last run.
    """
    for matcher in matchers:  # warm-up: TorchScript compilation, allocator, caches
        torch.manual_seed(0)
        matcher(outputs, targets)
    times = [[] for _ in matchers]
    indices = [None for _ in matchers]
    for _ in range(runs):
        for i, matcher in enumerate(matchers):
            torch.manual_seed(0)
            synchronize(device)
            start = time.perf_counter()
            indices[i] = matcher(outputs, targets)
            synchronize(device)
            times[i].append((time.perf_counter() - start) * 1000.0)
    return [statistics.median(t) for t in times], indices


def same_assignments(ours, peer):
    return len(ours) == len(peer) and all(
        torch.equal(qa.cpu(), qb.cpu()) and torch.equal(ta.cpu(), tb.cpu())
        for (qa, ta), (qb, tb) in zip(ours, peer)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device name (default: cpu)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per matcher (default: 7)")
    args = parser.parse_args()
    device = torch.device(args.device)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        sys.exit(f"--device {args.device} is not usable here: {error}")

    peer_cls = load_peer_module("modeling/matcher.py", "peer_matcher").HungarianMatcher
    peer = peer_cls(cost_class=COST_CLASS, cost_mask=COST_MASK, cost_dice=COST_DICE, num_points=NUM_POINTS)
    ours = HungarianMatcher(
        cost_class=COST_CLASS, cost_mask=COST_MASK, cost_dice=COST_DICE, num_points=NUM_POINTS
    )

    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"points {NUM_POINTS}, runs {args.runs} (median)\n")
    print(
        "| batch | queries | targets/img | K | pred | target | identical assignments "
        "| ours (ms) | Mask2Former (ms) | ours / peer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    all_ok = True
    for batch, queries, num_targets, num_classes, pred_side, target_side in CASES:
        outputs, targets = make_inputs(batch, queries, num_targets, num_classes, pred_side, target_side, device)
        (ours_ms, peer_ms), (our_indices, peer_indices) = time_matchers(
            [ours, peer], outputs, targets, args.runs, device
        )
        identical = same_assignments(our_indices, peer_indices)
        ratio = ours_ms / peer_ms
        all_ok &= identical and ratio <= 1.0
        print(f"| {batch} | {queries} | {num_targets} | {num_classes} | {pred_side}x{pred_side} | "
              f"{target_side}x{target_side} | {'yes' if identical else 'NO'} | {ours_ms:.1f} | "
              f"{peer_ms:.1f} | {ratio:.2f} |")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
