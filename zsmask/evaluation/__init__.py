"""Evaluation: the generalized zero-shot semantic-segmentation evaluator (GZS3 / ZS3)."""
from .zero_shot_evaluator import GeneralizedZeroShotSemSegEvaluator, harmonic_mean, zero_shot_metrics

__all__ = ["GeneralizedZeroShotSemSegEvaluator", "harmonic_mean", "zero_shot_metrics"]
