"""Evaluation: the generalized zero-shot semantic-segmentation evaluator (GZS3 / ZS3) and paired
comparisons of configs over seeds."""
from .paired import PairedDifference, paired_difference, seeds_for_half_width
from .zero_shot_evaluator import GeneralizedZeroShotSemSegEvaluator, harmonic_mean, zero_shot_metrics

__all__ = ["GeneralizedZeroShotSemSegEvaluator", "PairedDifference", "harmonic_mean", "paired_difference",
           "seeds_for_half_width", "zero_shot_metrics"]
