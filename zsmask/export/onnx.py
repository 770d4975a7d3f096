"""ONNX export (opset 17) with dynamic image height and width, checked with ONNX Runtime.

The graph comes from torch's TorchScript-based ONNX exporter. CLIP's fused attention
(``_native_multi_head_attention``) has no ONNX form, so PyTorch's multi-head-attention fast
path is switched off while exporting (the same maths, unfused). The deformable attention
exports as Gather, Mul and ReduceSum instead of ``embedding_bag``, for which ONNX has no
operator. The metadata is in the model's ``metadata_props`` under ``zsmask.json``. Needs the
``onnx`` package to write and ``onnxruntime`` to run (both in requirements.txt).
"""
import json
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .segmenter import ExportError, FixedVocabularySegmenter, example_image, export_metadata
from .torchscript import EXPORT_METADATA_FILE

__all__ = ["OnnxSegmenter", "export_onnx", "load_onnx"]

OPSET = 17


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ExportError(f"ONNX export and checking need the '{module}' package: pip install onnx onnxruntime "
                          "(or use --format torchscript)") from e


def export_onnx(model: nn.Module, class_names: Sequence[str], path: str, image_size: Tuple[int, int],
                unseen: Optional[Sequence[bool]] = None, extra_metadata: Optional[Dict] = None) -> None:
    """Export ``model`` for ``class_names`` at ``image_size`` (H, W) to the ONNX file ``path``:
    input ``image`` (3, height, width) float32, output ``scores`` (K, height, width)."""
    onnx = _require("onnx")
    segmenter = FixedVocabularySegmenter(model, class_names, image_size).eval()
    device = next(model.parameters()).device
    example = example_image(*segmenter.image_size).to(device)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings (shape-specialised checks) and exporter notices
            torch.onnx.export(segmenter, (example,), path, dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=["scores"],
                              dynamic_axes={"image": {1: "height", 2: "width"}, "scores": {1: "height", 2: "width"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = EXPORT_METADATA_FILE, json.dumps(
        export_metadata(segmenter, "onnx", device, unseen, extra_metadata))
    onnx.save(proto, path)


class OnnxSegmenter:
    """An ONNX Runtime session called like the TorchScript module: ``(3, h, w)`` tensor in,
    ``(K, h, w)`` tensor out (on the input's device)."""

    def __init__(self, session):
        self.session = session

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        scores = self.session.run(["scores"], {"image": image.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(scores)).to(image.device)


def load_onnx(path: str, device: Optional[str] = None) -> Tuple[OnnxSegmenter, Dict]:
    """``(callable, metadata)`` of an ONNX file written by :func:`export_onnx`, run by ONNX
    Runtime on the CPU, or with its CUDA provider when ``device`` is a GPU and it has one."""
    ort = _require("onnxruntime")
    providers = ["CPUExecutionProvider"]
    if device and torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(path, providers=providers)
    metadata = session.get_modelmeta().custom_metadata_map.get(EXPORT_METADATA_FILE)
    if not metadata:
        raise ExportError(f"{path} is an ONNX file without zsmask metadata ({EXPORT_METADATA_FILE}); "
                          "was it written by tools/export_model.py?")
    return OnnxSegmenter(session), json.loads(metadata)
