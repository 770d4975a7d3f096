"""zsmask: zero-shot semantic segmentation by query-based mask classification.

``from zsmask import Predictor`` gives the Python API for trained models (see
:mod:`zsmask.predictor`); it is imported on first use, so ``import zsmask`` stays light.
"""
__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor"]


def __getattr__(name):
    if name in ("Prediction", "Predictor"):
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'zsmask' has no attribute {name!r}")
