"""Sliding-window inference: a trained model run on overlapping windows of each test image.

The test image (after the test-time resize of ``INPUT.MIN_SIZE_TEST``, aspect ratio kept) is
covered by ``SIZE x SIZE`` windows ``STRIDE`` pixels apart, the last window of a row or column
aligned with the image's edge; each window is classified on its own, the per-class scores of
overlapping windows are averaged and resized to the output size.
``TEST.SLIDING_WINDOW.{ENABLED, SIZE, STRIDE}``.

This is the generic scheme, not CAT-Seg's protocol, which resizes every image to 640 x 640
(aspect ratio not kept), adds one 384 x 384 view of the whole image averaged 1:1 with the
windows, and averages sigmoid scores; numbers evaluated here with sliding windows are not
comparable with CAT-Seg's as they stand. Proposal outputs (``TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS``)
are per window and are not stitched, so the two options are refused together at config build.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SlidingWindowInference", "window_starts", "maybe_sliding_window", "check_window"]


def check_window(size: int, stride: int) -> None:
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(f"sliding window: need SIZE >= 1 and 1 <= STRIDE <= SIZE, got SIZE {size}, STRIDE {stride} "
                         "(TEST.SLIDING_WINDOW)")


def window_starts(length: int, size: int, stride: int) -> List[int]:
    """Start offsets of windows of ``size`` along an axis of ``length`` (one window when it fits)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


class SlidingWindowInference(nn.Module):
    """Wraps a model whose inference returns ``[{"sem_seg": (C, height, width)}]`` per input.

    Args:
        model: the model (eval mode); inputs are detectron2 dicts with ``image`` (3, H, W).
        size: window side in pixels of the (test-time resized) image.
        stride: step between windows; ``stride < size`` overlaps them.
    """

    def __init__(self, model: nn.Module, size: int, stride: int):
        super().__init__()
        check_window(size, stride)
        self.model, self.size, self.stride = model, size, stride

    def windows(self, height: int, width: int) -> List[Tuple[int, int, int, int]]:
        """``(y0, x0, y1, x1)`` of every window of an image of ``height x width``."""
        return [(y, x, min(y + self.size, height), min(x + self.size, width))
                for y in window_starts(height, self.size, self.stride)
                for x in window_starts(width, self.size, self.stride)]

    @torch.no_grad()
    def forward(self, batched_inputs: Sequence[Dict]) -> List[Dict[str, torch.Tensor]]:
        results = []
        for record in batched_inputs:
            image = record["image"]
            height, width = image.shape[-2:]
            total = count = None
            for y0, x0, y1, x1 in self.windows(height, width):
                window = {k: v for k, v in record.items() if k not in ("image", "height", "width")}
                window.update(image=image[:, y0:y1, x0:x1], height=y1 - y0, width=x1 - x0)
                scores = self.model([window])[0]["sem_seg"]  # (C, y1 - y0, x1 - x0)
                if total is None:
                    total = scores.new_zeros((scores.shape[0], height, width))
                    count = scores.new_zeros((1, height, width))
                total[:, y0:y1, x0:x1] += scores
                count[:, y0:y1, x0:x1] += 1
            scores = total / count
            out_size = (int(record.get("height", height)), int(record.get("width", width)))
            if out_size != (height, width):
                scores = F.interpolate(scores[None], size=out_size, mode="bilinear", align_corners=False)[0]
            results.append({"sem_seg": scores})
        return results


def maybe_sliding_window(cfg, model: nn.Module) -> nn.Module:
    """``model`` wrapped in :class:`SlidingWindowInference` when ``TEST.SLIDING_WINDOW.ENABLED``."""
    sw = cfg.TEST.SLIDING_WINDOW
    return SlidingWindowInference(model, sw.SIZE, sw.STRIDE) if sw.ENABLED else model
