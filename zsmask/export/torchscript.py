"""TorchScript export: trace, freeze, save with the metadata inside the file.

``torch.jit.freeze`` inlines the weights and drops everything the traced path does not use (the
CLIP text tower, for one). The deformable attention traces as ``embedding_bag`` (see
:mod:`zsmask.modeling.pixel_decoder.ops.deformable_attention`), so the file loads with
``torch.jit.load`` alone, without zsmask, on CPU or GPU.
"""
import json
import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .segmenter import ExportError, FixedVocabularySegmenter, example_image, export_metadata

__all__ = ["EXPORT_METADATA_FILE", "export_torchscript", "load_torchscript"]

EXPORT_METADATA_FILE = "zsmask.json"


def export_torchscript(model: nn.Module, class_names: Sequence[str], path: str, image_size: Tuple[int, int],
                       unseen: Optional[Sequence[bool]] = None, extra_metadata: Optional[Dict] = None
                       ) -> torch.jit.ScriptModule:
    """Trace, freeze and save ``model`` for ``class_names`` at ``image_size`` (H, W) to ``path``,
    on the model's device (export on the device you deploy on). Returns the saved module."""
    segmenter = FixedVocabularySegmenter(model, class_names, image_size).eval()
    device = next(model.parameters()).device
    example = example_image(*segmenter.image_size).to(device)
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: the trace is specialised to this image size (shape checks become constants).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        frozen = torch.jit.freeze(torch.jit.trace(segmenter, (example,), check_trace=False))
    metadata = export_metadata(segmenter, "torchscript", device, unseen, extra_metadata)
    torch.jit.save(frozen, path, _extra_files={EXPORT_METADATA_FILE: json.dumps(metadata)})
    return frozen


def load_torchscript(path: str, device: Optional[str] = None) -> Tuple[torch.jit.ScriptModule, Dict]:
    """``(module, metadata)``: ``torch.jit.load`` plus the metadata, as a deployment can do it
    without zsmask."""
    files = {EXPORT_METADATA_FILE: ""}
    module = torch.jit.load(path, map_location=device, _extra_files=files)
    if not files[EXPORT_METADATA_FILE]:
        raise ExportError(f"{path} is a TorchScript file without zsmask metadata ({EXPORT_METADATA_FILE}); "
                          "was it written by tools/export_model.py?")
    return module, json.loads(files[EXPORT_METADATA_FILE])
