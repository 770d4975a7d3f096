"""What every export format shares: the module that is exported, its metadata, and the check
of an exported model against the eager one.

:class:`FixedVocabularySegmenter` runs the model's own inference code (backbone, pixel
decoder with multi-scale deformable attention, transformer decoder, classifier, Predictive Bias
Correction, pixel score head: whatever the config selects) for one vocabulary. Its text
classifier is computed before tracing, so a trace holds the class embeddings as a constant and
an exported file has no text encoder and needs no tokenizer.

A trace is specialised to the image size (H, W) it is made for: the exported model takes a
``(3, h, w)`` RGB image on the 0-255 scale of any size, resizes it to (H, W) inside and returns
``(K, h, w)`` scores. Inference post-processors (SAZS's eigensegment fusion runs scipy) cannot
be traced and are refused. While tracing, the deformable attention never takes the CUDA
kernel and OTSeg / ZegOT's Sinkhorn runs its full ``MAX_ITER`` (a trace cannot stop early).
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..modeling.clip import check_class_names

__all__ = ["ExportCheck", "ExportError", "FixedVocabularySegmenter", "check_exported", "example_image",
           "export_metadata"]


class ExportError(RuntimeError):
    """The model cannot be exported as configured, or an exported file is not zsmask's."""


class FixedVocabularySegmenter(nn.Module):
    """``image (3, h, w) RGB 0-255 -> scores (K, h, w)`` for the fixed ``class_names`` through
    ``model``'s own inference path (a ZeroShotMaskFormer, put in eval mode) at ``image_size``
    (H, W): the image is resized to (H, W) (bilinear), segmented, and the scores are resized
    back to (h, w). Images of another aspect ratio than H:W are stretched; resize them (as the
    model's test-time ``INPUT.MIN_SIZE_TEST`` does) and export at the size you will use."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], image_size: Tuple[int, int]):
        super().__init__()
        if getattr(model, "post_processors", None):
            names = ", ".join(type(p).__name__ for p in model.post_processors)
            raise ExportError(f"inference post-processors ({names}) run outside torch and cannot be exported; "
                              "export with MODEL.ZSMASK.POST_PROCESSORS [] and apply them after the exported model")
        self.model = model.eval()
        self.class_names = check_class_names([str(n).strip() for n in class_names])
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise ExportError(f"image size must be (H, W) of at least 32x32, got {image_size}")
        with torch.no_grad():
            # Computed (and cached by the CLIP module) now: tracing then records a constant.
            self.model.text_embeddings(self.class_names)
            if getattr(model, "pixel_score_head", None) is not None:
                self.model.clip.encode_vocabulary(self.class_names, per_template=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(image.float()[None], size=self.image_size, mode="bilinear", align_corners=False)[0]
        scores = self.model([{"image": resized, "vocabulary": list(self.class_names)}])[0]["sem_seg"]
        return F.interpolate(scores[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]


def example_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A seeded (3, H, W) image of smooth colour fields on the 0-255 scale (not constant, so a
    trace sees a realistic input)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=generator) * 255
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]


def export_metadata(segmenter: FixedVocabularySegmenter, format: str, device: torch.device,
                    unseen: Optional[Sequence[bool]] = None, extra: Optional[Dict] = None) -> Dict:
    """What a deployment needs to know besides the graph: class names, unseen flags, sizes."""
    height, width = segmenter.image_size
    names = list(segmenter.class_names)
    metadata = {
        "format": format,
        "class_names": names,
        "unseen": [bool(u) for u in (unseen if unseen is not None else [False] * len(names))],
        "image_size": [height, width],
        "input": {"shape": [3, "h", "w"], "dtype": "float32", "channels": "RGB", "range": [0, 255],
                  "note": f"resized to {height}x{width} inside; any h, w (other aspect ratios are stretched)"},
        "output": {"shape": [len(names), "h", "w"],
                   "meaning": "per-class scores; their argmax over dim 0 is the label map"},
        "exported_on": device.type,
        "zsmask_version": __version__,
        "torch_version": torch.__version__,
    }
    metadata.update(extra or {})
    return metadata


@dataclass
class ExportCheck:
    """Exported vs eager outputs on one image: largest absolute score difference and the
    fraction of pixels whose label (argmax) agrees."""

    max_abs_diff: float
    label_agreement: float


def check_exported(exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, class_names: Sequence[str],
                   image_size: Tuple[int, int], images: Sequence[torch.Tensor]) -> List[ExportCheck]:
    """Run an exported model (any callable ``(3, h, w) tensor -> (K, h, w) tensor``, as
    :func:`zsmask.export.load_exported` returns) and the eager :class:`FixedVocabularySegmenter`
    on each ``(3, h, w)`` image (any size); one :class:`ExportCheck` per image."""
    segmenter = FixedVocabularySegmenter(model, class_names, image_size).eval()
    checks = []
    with torch.no_grad():
        for image in images:
            eager = segmenter(image).float()
            exported_scores = exported(image).float().to(eager.device)
            if exported_scores.shape != eager.shape:
                raise ExportError(f"exported output {tuple(exported_scores.shape)} differs in shape from eager "
                                  f"{tuple(eager.shape)}")
            diff = float((exported_scores - eager).abs().max()) if eager.numel() else 0.0
            agreement = float((exported_scores.argmax(0) == eager.argmax(0)).float().mean())
            checks.append(ExportCheck(diff if math.isfinite(diff) else float("inf"), agreement))
    return checks
