"""zsmask: zero-shot semantic segmentation by query-based mask classification."""
__version__ = "0.1.0"
