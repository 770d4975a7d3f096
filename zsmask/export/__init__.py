"""Exporting a trained model's inference path for one fixed vocabulary (TorchScript)."""
from .torchscript import (
    EXPORT_METADATA_FILE,
    ExportCheck,
    ExportError,
    FixedVocabularySegmenter,
    check_exported,
    export_torchscript,
    load_exported,
)

__all__ = [
    "EXPORT_METADATA_FILE",
    "ExportCheck",
    "ExportError",
    "FixedVocabularySegmenter",
    "check_exported",
    "export_torchscript",
    "load_exported",
]
