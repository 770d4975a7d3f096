"""TorchScript export of the inference path for a fixed vocabulary, text embeddings baked in.

:class:`FixedVocabularySegmenter` runs the model's own inference code (backbone, pixel
decoder with multi-scale deformable attention, transformer decoder, classifier, Predictive Bias
Correction, pixel score head: whatever the config selects) for one vocabulary. Its text
classifier is computed before tracing, so the trace holds the class embeddings as a constant
and the exported file has no text encoder and needs no tokenizer. ``torch.jit.freeze`` then
inlines the weights and drops everything the traced path does not use.

The deformable attention traces as plain aten ops (``embedding_bag``: see
:mod:`zsmask.modeling.pixel_decoder.ops.deformable_attention`), never as the CUDA kernel, so
the file loads with ``torch.jit.load`` alone, without zsmask, on CPU or GPU.

A trace is specialised to the image size (H, W) it is made for: the exported module takes a
``(3, h, w)`` RGB image on the 0-255 scale of any size, resizes it to (H, W) inside and returns
``(K, h, w)`` scores; its metadata (``zsmask.json`` in the file) records (H, W), the class
names and which of them are unseen. Inference post-processors (SAZS's eigensegment fusion runs scipy) cannot
be traced and are refused.
"""
import json
import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..modeling.clip import check_class_names

__all__ = ["EXPORT_METADATA_FILE", "ExportCheck", "ExportError", "FixedVocabularySegmenter", "check_exported",
           "export_torchscript", "load_exported"]

EXPORT_METADATA_FILE = "zsmask.json"


class ExportError(RuntimeError):
    """The model cannot be exported as configured, or the export disagrees with the model."""


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


@dataclass
class ExportCheck:
    """Exported vs eager outputs on one image: largest absolute score difference and the
    fraction of pixels whose label (argmax) agrees."""

    max_abs_diff: float
    label_agreement: float


def _example_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A seeded (3, H, W) image of smooth colour fields on the 0-255 scale (not constant, so the
    trace sees a realistic input)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=generator) * 255
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]


def export_torchscript(model: nn.Module, class_names: Sequence[str], path: str, image_size: Tuple[int, int],
                       unseen: Optional[Sequence[bool]] = None, extra_metadata: Optional[Dict] = None
                       ) -> torch.jit.ScriptModule:
    """Trace, freeze and save ``model`` for ``class_names`` at ``image_size`` (H, W) to ``path``.

    The model is traced on its own device (export on the device you deploy on). Returns the
    saved module. Metadata: class names, ``unseen`` flags, input size and format, versions.
    """
    segmenter = FixedVocabularySegmenter(model, class_names, image_size).eval()
    height, width = segmenter.image_size
    device = next(model.parameters()).device
    example = _example_image(height, width).to(device)
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: the trace is specialised to this image size (shape checks become constants).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(segmenter, (example,), check_trace=False)
        frozen = torch.jit.freeze(traced)
    metadata = {
        "format": "torchscript",
        "class_names": list(segmenter.class_names),
        "unseen": [bool(u) for u in (unseen if unseen is not None else [False] * len(segmenter.class_names))],
        "image_size": [height, width],
        "input": {"shape": [3, "h", "w"], "dtype": "float32 or uint8", "channels": "RGB", "range": [0, 255],
                  "note": f"resized to {height}x{width} inside; any h, w (other aspect ratios are stretched)"},
        "output": {"shape": [len(segmenter.class_names), "h", "w"],
                   "meaning": "per-class scores; their argmax over dim 0 is the label map"},
        "exported_on": device.type,
        "zsmask_version": __version__,
        "torch_version": torch.__version__,
    }
    metadata.update(extra_metadata or {})
    torch.jit.save(frozen, path, _extra_files={EXPORT_METADATA_FILE: json.dumps(metadata)})
    return frozen


def load_exported(path: str, device: Optional[str] = None) -> Tuple[torch.jit.ScriptModule, Dict]:
    """``(module, metadata)`` of a file written by :func:`export_torchscript`. This is only
    ``torch.jit.load`` plus the metadata; deployments can do the same without zsmask."""
    files = {EXPORT_METADATA_FILE: ""}
    module = torch.jit.load(path, map_location=device, _extra_files=files)
    if not files[EXPORT_METADATA_FILE]:
        raise ExportError(f"{path} is a TorchScript file without zsmask metadata ({EXPORT_METADATA_FILE}); "
                          "was it written by tools/export_model.py?")
    return module, json.loads(files[EXPORT_METADATA_FILE])


def check_exported(exported: torch.jit.ScriptModule, model: nn.Module, class_names: Sequence[str],
                   image_size: Tuple[int, int], images: Sequence[torch.Tensor]) -> List[ExportCheck]:
    """Run the exported module and the eager :class:`FixedVocabularySegmenter` on each
    ``(3, h, w)`` image (any size); one :class:`ExportCheck` per image."""
    segmenter = FixedVocabularySegmenter(model, class_names, image_size).eval()
    checks = []
    with torch.no_grad():
        for image in images:
            eager = segmenter(image).float()
            traced = exported(image).float()
            if traced.shape != eager.shape:
                raise ExportError(f"exported output {tuple(traced.shape)} differs in shape from eager "
                                  f"{tuple(eager.shape)}")
            diff = float((traced - eager).abs().max()) if eager.numel() else 0.0
            agreement = float((traced.argmax(0) == eager.argmax(0)).float().mean())
            checks.append(ExportCheck(diff if math.isfinite(diff) else float("inf"), agreement))
    return checks
