"""Exporting a trained model's inference path for one fixed vocabulary: TorchScript or ONNX.

Both formats take a ``(3, h, w)`` RGB image on the 0-255 scale and return ``(K, h, w)`` scores,
with the vocabulary's text embeddings baked in; see :mod:`.segmenter` for what is traced.
"""
import zipfile
from typing import Callable, Dict, Optional, Tuple

import torch

from .onnx import OnnxSegmenter, export_onnx, load_onnx
from .segmenter import ExportCheck, ExportError, FixedVocabularySegmenter, check_exported, example_image
from .torchscript import EXPORT_METADATA_FILE, export_torchscript, load_torchscript

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METADATA_FILE",
    "ExportCheck",
    "ExportError",
    "FixedVocabularySegmenter",
    "OnnxSegmenter",
    "check_exported",
    "example_image",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "load_exported",
    "load_onnx",
    "load_torchscript",
]

EXPORT_FORMATS = {"torchscript": export_torchscript, "onnx": export_onnx}


def export_model(format: str, *args, **kwargs) -> None:
    """``export_torchscript`` or ``export_onnx`` by name (same arguments)."""
    if format not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {sorted(EXPORT_FORMATS)}")
    EXPORT_FORMATS[format](*args, **kwargs)


def load_exported(path: str, device: Optional[str] = None) -> Tuple[Callable[[torch.Tensor], torch.Tensor], Dict]:
    """``(model, metadata)`` of an exported file of either format (TorchScript files are zip
    archives); ``model(image (3, h, w)) -> scores (K, h, w)``."""
    if zipfile.is_zipfile(path):
        return load_torchscript(path, device)
    return load_onnx(path, device)
